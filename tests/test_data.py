"""gzone.data: MNIST-1D, .npz archives, tfds (mocked), normalisation, subsets, errors."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from gzone import data

# Real data lives beside the repository (<repo>/../shared/data) when this machine has it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def mnist1d():
    """MNIST-1D loaded once, with the global RNG states before and after the load."""
    np.random.seed(1234)
    random.seed(1234)
    np_before, py_before = np.random.get_state(), random.getstate()
    ds = data.load(data.MNIST1D)
    np_after, py_after = np.random.get_state(), random.getstate()
    restored = all(np.array_equal(a, b) for a, b in zip(np_before, np_after)) and py_before == py_after
    return ds, restored


def _write_npz(path, *, n_train=50, n_test=20, shape=(6, 5, 3), seed=0):
    """uint8 NHWC images whose channels have clearly different means and spreads."""
    rng = np.random.default_rng(seed)
    lo = np.array([0, 60, 200][: shape[-1]])
    hi = np.array([255, 120, 230][: shape[-1]])

    def images(n):
        return rng.integers(lo, hi, size=(n, *shape)).astype(np.uint8)

    arrays = {
        "x_train": images(n_train),
        "y_train": rng.integers(0, 7, n_train).astype(np.uint8),
        "x_test": images(n_test),
        "y_test": rng.integers(0, 7, n_test).astype(np.uint8),
    }
    arrays["y_train"][0] = 6  # so that num_classes = 7 for sure
    np.savez_compressed(path, **arrays)
    return arrays


# --------------------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_types_and_normalisation(mnist1d):
    ds, _ = mnist1d
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.input_shape == (40,) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_test.dtype == np.int32
    assert set(np.unique(ds.y_train)) == set(range(10)) and set(np.unique(ds.y_test)) <= set(range(10))
    # One channel for 1-D inputs: the training set is standardised as a whole.
    assert abs(ds.x_train.mean(dtype=np.float64)) < 1e-5
    assert abs(ds.x_train.std(dtype=np.float64) - 1.0) < 1e-5
    assert len(ds.mean) == 1 and len(ds.std) == 1
    # The test split uses the training statistics, so it is only roughly standardised.
    assert abs(ds.x_test.mean(dtype=np.float64)) < 0.1
    assert abs(ds.x_test.std(dtype=np.float64) - 1.0) < 0.1
    summary = ds.describe()
    assert summary["n_train"] == 4000 and summary["n_test"] == 1000 and summary["input_shape"] == [40]


def test_mnist1d_restores_the_global_rng(mnist1d):
    _, restored = mnist1d
    assert restored, "mnist1d generation must leave numpy's and random's global state as it found them"


def test_mnist1d_is_generated_once_then_read_from_the_cache_folder(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    data._load_mnist1d.cache_clear()
    try:
        np.random.seed(1234)
        random.seed(1234)
        before = np.random.get_state(), random.getstate()
        generated = data._load_mnist1d()
        after = np.random.get_state(), random.getstate()
        assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0])) and before[1] == after[1]
        (path,) = tmp_path.glob("mnist1d-*.npz")
        assert not list(tmp_path.glob("*.tmp*")), "the temporary file is renamed, not left"

        def fail(args):
            raise AssertionError("generated again although the cache holds it")

        monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
        data._load_mnist1d.cache_clear()
        cached = data._load_mnist1d()
        assert len(cached) == 4
        for a, b in zip(generated, cached):
            assert a.dtype == b.dtype and np.array_equal(a, b) and not b.flags.writeable
        # A damaged file is generated again (and replaced).
        path.write_bytes(b"not an archive")
        calls = []  # from here the generator is a stand-in returning the same arrays (2 s a call saved)
        raw = {"x": generated[0], "y": generated[1], "x_test": generated[2], "y_test": generated[3]}
        monkeypatch.setattr(mnist1d.data, "make_dataset", lambda args: calls.append(1) or raw)
        data._load_mnist1d.cache_clear()
        again = data._load_mnist1d()
        assert calls == [1] and all(np.array_equal(a, b) for a, b in zip(generated, again))
        assert all(np.array_equal(a, b) for a, b in zip(generated, data._read_cached(str(path))))
        for unset in (True, False):  # without GZONE_CACHE_DIR (or with it empty) nothing is written
            monkeypatch.setenv("HOME", str(tmp_path / "home"))
            monkeypatch.delenv(data.CACHE_ENV) if unset else monkeypatch.setenv(data.CACHE_ENV, "")
            data._load_mnist1d.cache_clear()
            calls.clear()
            data._load_mnist1d()
            assert calls == [1] and data.cache_dir() is None and not (tmp_path / "home").exists()
    finally:
        data._load_mnist1d.cache_clear()  # later tests load through their own cache folder again


# --------------------------------------------------------------------------- .npz archives


def test_npz_per_channel_normalisation_matches_numpy(tmp_path):
    raw = _write_npz(tmp_path / "toy.npz")
    ds = data.load("toy", data_dir=str(tmp_path))
    x = raw["x_train"].astype(np.float64)
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    np.testing.assert_allclose(ds.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(ds.std, std, rtol=1e-12)
    assert len(set(np.round(mean))) == 3  # the channels really differ, so per-channel matters
    np.testing.assert_allclose(ds.x_train, (x - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_test, (raw["x_test"] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-5)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train, raw["y_train"])
    assert ds.input_shape == (6, 5, 3) and ds.num_classes == 7
    assert ds.source == str(tmp_path / "toy.npz")


def test_unit_range_scaling_maps_pixels_to_minus_one_one(tmp_path):
    """scaling=unit_range is (x / 255 - 0.5) / 0.5 per channel: 0 -> -1 and 255 -> 1 exactly, whatever
    the training statistics; the default (standardise) is untouched by its presence."""
    raw = _write_npz(tmp_path / "toy.npz")
    raw["x_train"][0, 0, 0] = (0, 255, 128)
    raw["x_test"][0, 0, 0] = (255, 0, 1)
    np.savez(tmp_path / "toy.npz", **raw)
    ds = data.load("toy", data_dir=str(tmp_path), scaling="unit_range")
    assert ds.x_train[0, 0, 0, :2].tolist() == [-1.0, 1.0]
    assert ds.x_test[0, 0, 0, :2].tolist() == [1.0, -1.0]
    for got, pixels in ((ds.x_train, raw["x_train"]), (ds.x_test, raw["x_test"])):
        np.testing.assert_allclose(got, (pixels / 255.0 - 0.5) / 0.5, rtol=0, atol=2e-7)
        assert got.dtype == np.float32 and got.min() >= -1 and got.max() <= 1
    assert ds.mean == ds.std == (127.5, 127.5, 127.5) and ds.scaling == "unit_range"
    assert ds.describe()["scaling"] == "unit_range"
    default = data.load("toy", data_dir=str(tmp_path))
    assert default.scaling == "standardise" and default.x_train.min() < -1  # standardised, not [-1, 1]
    x = raw["x_train"].astype(np.float64)
    np.testing.assert_allclose(default.mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)


def test_unit_range_scaling_needs_uint8_pixels(mnist1d):
    with pytest.raises(data.DataError, match="scaling=unit_range needs uint8"):
        data.load(data.MNIST1D, scaling="unit_range")
    with pytest.raises(data.DataError, match="scaling='minmax' unknown"):
        data.load(data.MNIST1D, scaling="minmax")


def test_npz_of_vectors_has_one_channel(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (30, 8)).astype(np.uint8)
    np.savez(
        tmp_path / "vec.npz",
        x_train=x_train,
        y_train=np.arange(30) % 3,
        x_test=x_train[:5],
        y_test=np.arange(5) % 3,
    )
    ds = data.load("vec", data_dir=str(tmp_path))
    x = x_train.astype(np.float64)
    np.testing.assert_allclose(ds.mean, [x.mean()], rtol=1e-12)
    np.testing.assert_allclose(ds.x_train, (x - x.mean()) / x.std(), rtol=1e-5, atol=1e-5)


def test_subsets_are_deterministic_and_share_the_full_normalisation(tmp_path):
    _write_npz(tmp_path / "toy.npz", n_train=60, n_test=30)
    full = data.load("toy", data_dir=str(tmp_path))
    a = data.load("toy", data_dir=str(tmp_path), n_train=20, n_test=10, subset_seed=3)
    b = data.load("toy", data_dir=str(tmp_path), n_train=20, n_test=10, subset_seed=3)
    c = data.load("toy", data_dir=str(tmp_path), n_train=20, n_test=10, subset_seed=4)
    assert a.x_train.shape == (20, 6, 5, 3) and a.x_test.shape == (10, 6, 5, 3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    # A subset is rows of the full (normalised) split, in their original order.
    flat_full = full.x_train.reshape(60, -1)
    index = [int(np.flatnonzero((flat_full == row).all(axis=1))[0]) for row in a.x_train.reshape(20, -1)]
    assert index == sorted(index) and len(set(index)) == 20
    np.testing.assert_array_equal(a.y_train, full.y_train[index])
    assert a.mean == full.mean and a.std == full.std


def test_test_subset_does_not_depend_on_n_train(tmp_path):
    _write_npz(tmp_path / "toy.npz", n_train=60, n_test=30)
    a = data.load("toy", data_dir=str(tmp_path), n_test=10)
    b = data.load("toy", data_dir=str(tmp_path), n_train=20, n_test=10)
    np.testing.assert_array_equal(a.x_test, b.x_test)


@pytest.mark.parametrize("n_train", [0, 61])
def test_subset_size_out_of_range_is_a_data_error(tmp_path, n_train):
    _write_npz(tmp_path / "toy.npz", n_train=60)
    with pytest.raises(data.DataError, match="n_train"):
        data.load("toy", data_dir=str(tmp_path), n_train=n_train)


def test_save_npz_round_trip_and_range_check(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (10, 4, 4, 1))
    path = str(tmp_path / "sub" / "mine.npz")
    data.save_npz(path, x_train=x, y_train=np.arange(10) % 2, x_test=x[:3], y_test=np.arange(3) % 2)
    assert os.listdir(tmp_path / "sub") == ["mine.npz"]  # no temp file left
    with np.load(path) as archive:
        assert all(archive[k].dtype == np.uint8 for k in archive.files)
        np.testing.assert_array_equal(archive["x_train"], x)
    with pytest.raises(ValueError, match="x_train"):
        data.save_npz(path, x_train=x + 1000, y_train=np.zeros(10), x_test=x, y_test=np.zeros(10))


def test_broken_archives_are_data_errors(tmp_path):
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 3), np.uint8))
    with pytest.raises(data.DataError, match="missing arrays"):
        data.load("partial", data_dir=str(tmp_path))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(data.DataError, match="junk.npz"):
        data.load("junk", data_dir=str(tmp_path))


def _damaged(tmp_path, name, how):
    """A valid archive `name`.npz, then damaged: truncated to half, or one byte of x_train's data flipped."""
    path = tmp_path / f"{name}.npz"
    _write_npz(path)
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # inside the first member's compressed data, past its local header: its CRC-32 no longer matches
        raw[200] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_archive_is_one_data_error_naming_the_file(tmp_path, how):
    path = _damaged(tmp_path, "broken", how)
    with pytest.raises(data.DataError) as err:
        data.load("broken", data_dir=str(tmp_path))
    message = str(err.value)
    assert str(path) in message and "truncated or corrupt" in message and "\n" not in message


BAD_ARRAYS = {
    "two_d_labels": (dict(y_train=lambda a: np.stack([a, a], axis=1)), "1-D integer class labels"),
    "float_labels": (dict(y_train=lambda a: a.astype(np.float32) + 0.5), "1-D integer class labels"),
    "huge_label": (
        dict(y_train=lambda a: np.where(np.arange(a.size) == 0, 10**6, a)),
        "missing from the training split",
    ),
    "negative_label": (dict(y_test=lambda a: a.astype(np.int64) - 1), "negative labels"),
    "nan_inputs": (
        dict(
            x_train=lambda a: np.where(np.arange(a.size).reshape(a.shape) == 7, np.nan, a.astype(np.float32))
        ),
        "non-finite",
    ),
    "shape_mismatch": (dict(x_test=lambda a: a[:, :-1]), "differ"),
    "length_mismatch": (dict(y_train=lambda a: a[:-1]), "labels"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_bad_arrays_are_one_data_error_at_load(tmp_path, case):
    arrays = _write_npz(tmp_path / "ok.npz")
    changes, expected = BAD_ARRAYS[case]
    for key, change in changes.items():
        arrays[key] = change(arrays[key])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(data.DataError, match=expected) as err:
        data.load("bad", data_dir=str(tmp_path))
    assert str(tmp_path / "bad.npz") in str(err.value)


def test_num_classes_given_allows_absent_classes_and_bounds_the_labels(tmp_path):
    arrays = _write_npz(tmp_path / "ok.npz")
    arrays["y_train"] = np.where(arrays["y_train"] == 3, 2, arrays["y_train"])  # class 3 absent from training
    np.savez(tmp_path / "gap.npz", **arrays)
    with pytest.raises(data.DataError, match="missing from the training split"):
        data.load("gap", data_dir=str(tmp_path))
    assert data.load("gap", data_dir=str(tmp_path), num_classes=7).num_classes == 7
    with pytest.raises(data.DataError, match=r"\[0, 5\)"):
        data.load("gap", data_dir=str(tmp_path), num_classes=5)


# --------------------------------------------------------------------------- missing data, tfds


def test_missing_dataset_names_the_dataset_and_the_folder(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.load("no_such_dataset_xyz", data_dir=str(tmp_path))
    message = str(err.value)
    assert "no_such_dataset_xyz" in message and str(tmp_path) in message
    missing = tmp_path / "absent"
    with pytest.raises(data.DataError, match="does not exist") as err:
        data.load("no_such_dataset_xyz", data_dir=str(missing))
    assert str(missing) in str(err.value)


def test_tfds_source_through_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        ds = data.load("mnist", num_classes=10)  # 20 random labels need not cover all 10 classes
    assert ds.source == "tfds:mnist" and ds.num_classes == 10
    assert ds.x_train.shape == (20, 28, 28, 1) and ds.x_test.shape == (20, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.input_shape == (28, 28, 1)
    np.testing.assert_allclose(ds.x_train.mean(), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.x_train.std(), 1.0, atol=1e-4)


# --------------------------------------------------------------------------- real data (optional)


@pytest.mark.skipif(not (SHARED_DATA / "mnist.npz").is_file(), reason=f"no real data in {SHARED_DATA}")
def test_real_mnist_from_the_shared_folder():
    ds = data.load("mnist", data_dir=str(SHARED_DATA))
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.source.endswith("mnist.npz")
    # The well-known MNIST statistics (of x / 255): mean 0.1307, std 0.3081.
    assert abs(ds.mean[0] / 255 - 0.1307) < 1e-3 and abs(ds.std[0] / 255 - 0.3081) < 1e-3
    np.testing.assert_array_equal(np.bincount(ds.y_train)[:3], [5923, 6742, 5958])
    assert abs(ds.x_train.mean(dtype=np.float64)) < 1e-4
    assert abs(ds.x_train.std(dtype=np.float64) - 1.0) < 1e-4


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "cifar10.npz").is_file(), reason=f"no real data in {SHARED_DATA}")
def test_real_cifar10_per_channel_statistics():
    ds = data.load("cifar10", data_dir=str(SHARED_DATA))
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.num_classes == 10
    np.testing.assert_allclose(np.asarray(ds.mean) / 255, [0.49139968, 0.48215841, 0.44653091], atol=1e-7)
    np.testing.assert_allclose(np.asarray(ds.std) / 255, [0.24703223, 0.24348513, 0.26158784], atol=1e-7)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2), dtype=np.float64), 0.0, atol=1e-4)


def test_prepare_data_writes_an_archive_that_loads(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from experiments import prepare_data

    lines = []
    with tfds.testing.mock_data(num_examples=12):
        path = prepare_data.run(
            prepare_data.config_from_argv(["--dataset=mnist", f"--out_dir={tmp_path}"]), log=lines.append
        )
    assert path == str(tmp_path / "mnist.npz") and lines[0].startswith("wrote")
    ds = data.load("mnist", data_dir=str(tmp_path), num_classes=10)
    assert ds.x_train.shape == (12, 28, 28, 1) and ds.source == path
    again = prepare_data.run(
        prepare_data.config_from_argv(["--dataset=mnist", f"--out_dir={tmp_path}"]), log=lines.append
    )
    assert again == path and "exists" in lines[-1]
