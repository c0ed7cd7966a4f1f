"""Datasets as in-memory arrays.

Sources, tried in this order for a dataset name:

1. ``mnist1d``: MNIST-1D generated locally by the ``mnist1d`` package (``make_dataset``; never
   its download path; kept in `cache_dir()` for later processes if one is set). The embedded
   default: no file, no network.
   4000 train / 1000 test examples, 40 features, 10 classes.
2. ``<data_dir>/<name>.npz`` holding uint8 arrays ``x_train``, ``y_train``, ``x_test``,
   ``y_test`` (images NHWC), e.g. written by ``python -m experiments.prepare_data``.
3. tensorflow-datasets: ``tfds.data_source(name, data_dir=tfds_dir, download=False)``, which
   reads a dataset already prepared in array_record format without tensorflow.

Inputs come back float32, by default (``scaling="standardise"``) normalised by the training set's
per-channel mean and std (computed on the full training split, before any subset is taken, so
subsets share one normalisation); ``scaling="unit_range"`` maps pixel values 0..255 to [-1, 1]
instead, (x / 255 - 0.5) / 0.5 per channel (torchvision's ``ToTensor`` then ``Normalize(0.5, 0.5)``;
uint8 sources only). Labels come back int32.

Everything is checked at load, each problem one `DataError` naming the file and the fix: an archive
that cannot be read (truncated, corrupt); labels that are not 1-D integers; labels outside
[0, C) or classes missing from the training split (C = max label + 1, unless ``num_classes`` is
given); non-finite inputs; splits whose inputs differ in shape or whose inputs and labels differ in
length.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import zipfile
import zlib

import numpy as np

MNIST1D = "mnist1d"
SCALINGS = ("standardise", "unit_range")


class DataError(ValueError):
    """A dataset could not be found or read; the message says where we looked."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset in memory.

    Attributes:
      name: dataset name.
      x_train: [N, *input_shape] float32 normalised inputs.
      y_train: [N] int32 labels in [0, num_classes).
      x_test: [M, *input_shape] float32, normalised with the training statistics.
      y_test: [M] int32.
      num_classes: number of classes C.
      input_shape: shape of one example, e.g. (40,) or (28, 28, 1).
      source: where the arrays came from (for the records).
      mean, std: the per-channel statistics used for normalisation (127.5, 127.5 for ``unit_range``).
      scaling: how inputs were normalised (`SCALINGS`).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scaling: str = "standardise"

    def describe(self) -> dict:
        """A JSON-able summary for config.json."""
        return {
            "name": self.name,
            "source": self.source,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "scaling": self.scaling,
        }


def load(
    name: str,
    *,
    data_dir: str | None = None,
    tfds_data_dir: str | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    subset_seed: int = 0,
    num_classes: int | None = None,
    scaling: str = "standardise",
) -> Dataset:
    """Loads a dataset by name into memory.

    Args:
      name: ``mnist1d``, or a name found as ``<data_dir>/<name>.npz``, or a tfds name.
      data_dir: folder of ``<name>.npz`` archives (optional).
      tfds_data_dir: tfds data folder holding prepared array_record files (optional; tfds's
        default folder when None).
      n_train, n_test: optional sizes of deterministic random subsets (same seed, same subset).
      subset_seed: seed of the subset permutation.
      num_classes: C when known (labels must then lie in [0, C), and a class may be absent from the
        training split); None: C = max label + 1 and every class must appear in the training split.

    Returns:
      A `Dataset`.

    Raises:
      DataError: no source has the dataset (the message names each place tried and how to get
        the data), or the arrays fail a check at load (module docstring).
    """
    raw, source = _load_raw(name, data_dir=data_dir, tfds_data_dir=tfds_data_dir)
    x_train, y_train, x_test, y_test = raw
    num_classes = _check_raw(name, source, x_train, y_train, x_test, y_test, num_classes)
    mean, std = _scaling_stats(name, source, x_train, x_test, scaling)
    # Separate streams: the test subset must not depend on whether n_train is given.
    rng_train, rng_test = np.random.default_rng(subset_seed), np.random.default_rng([subset_seed, 1])
    x_train, y_train = _subset(x_train, y_train, n_train, rng_train, "n_train")
    x_test, y_test = _subset(x_test, y_test, n_test, rng_test, "n_test")
    return Dataset(
        name=name,
        x_train=_normalise(x_train, mean, std),
        y_train=y_train.astype(np.int32),
        x_test=_normalise(x_test, mean, std),
        y_test=y_test.astype(np.int32),
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in x_train.shape[1:]),
        source=source,
        mean=tuple(float(m) for m in np.atleast_1d(mean)),
        std=tuple(float(s) for s in np.atleast_1d(std)),
        scaling=scaling,
    )


def save_npz(path: str, *, x_train, y_train, x_test, y_test) -> None:
    """Writes the archive format of source 2 (uint8 arrays), atomically."""
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype != np.uint8:
            if value.min() < 0 or value.max() > 255:
                raise ValueError(f"{key} does not fit uint8")
        arrays[key] = value.astype(np.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- sources


def _load_raw(name, *, data_dir, tfds_data_dir):
    tried = []
    if name == MNIST1D:
        return _load_mnist1d(), "mnist1d.make_dataset (generated)"
    if data_dir is not None:
        path = os.path.join(data_dir, f"{name}.npz")
        if os.path.isfile(path):
            return _load_npz(path), path
        if not os.path.isdir(data_dir):
            tried.append(f"data folder {data_dir!r} does not exist")
        else:
            tried.append(f"no file {path!r}")
    try:
        return load_tfds_arrays(name, tfds_data_dir), f"tfds:{name}"
    except Exception as err:  # tfds raises many kinds; we report them all the same way.
        first_line = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
        tried.append(f"tensorflow-datasets data_source({name!r}) failed: {first_line[:200]}")
    raise DataError(
        f"dataset {name!r} not found: " + "; ".join(t.rstrip(".") for t in tried) + ". Get it with "
        f"`python -m experiments.prepare_data --dataset={name} --out_dir=DIR` on a machine with "
        "internet (pip install 'gzone[prepare]'), or copy a <name>.npz with uint8 x_train, "
        "y_train, x_test, y_test into a folder and pass it as --data_dir; 'mnist1d' needs no data."
    )


CACHE_ENV = "GZONE_CACHE_DIR"  # a folder to keep generated data in; unset or "": nothing is kept


def cache_dir() -> str | None:
    """gzone's cache folder, $GZONE_CACHE_DIR; None when it is unset or empty (nothing written)."""
    return os.environ.get(CACHE_ENV) or None


@functools.lru_cache(maxsize=1)
def _load_mnist1d():
    """MNIST-1D from the package's generator; restores the global RNG state it seeds.

    The arguments are fixed, so it is the same every time: generated (about 2 s) and, when
    `cache_dir()` names a folder, kept there as ``mnist1d-<hash of version and arguments>.npz``
    (written atomically; a file that cannot be read is generated again) for later processes; once
    per process in memory, returned read-only (`load` derives new arrays from it).
    """
    import hashlib
    import importlib.metadata

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    key = repr((importlib.metadata.version("mnist1d"), sorted(vars(args).items())))
    folder = cache_dir()
    path = folder and os.path.join(folder, f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")
    arrays = _read_cached(path) if path else None
    if arrays is None:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            raw = make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        arrays = (
            np.array(raw["x"], np.float32),
            np.array(raw["y"]),
            np.array(raw["x_test"], np.float32),
            np.array(raw["y_test"]),
        )
        if path:
            _write_cached(path, arrays)
    for a in arrays:
        a.setflags(write=False)
    return arrays


_CACHED = ("x_train", "y_train", "x_test", "y_test")


def _read_cached(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return tuple(archive[k] for k in _CACHED)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return None  # absent, or damaged: generated again


def _write_cached(path, arrays):
    tmp = f"{path}.tmp{os.getpid()}.npz"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(tmp, **dict(zip(_CACHED, arrays)))
        os.replace(tmp, path)
    except OSError:  # a read-only or full cache folder: the data is still returned, only not kept
        try:
            os.remove(tmp)
        except OSError:
            pass


def _load_npz(path):
    try:
        with (
            open(path, "rb") as fh,
            np.load(fh, allow_pickle=False) as archive,
        ):  # closed even if np.load fails
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise DataError(
                    f"{path}: missing arrays {sorted(missing)}; the archive needs uint8 x_train, y_train, "
                    "x_test, y_test (write it with experiments.prepare_data)"
                )
            return tuple(archive[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(
            f"{path}: cannot be read as an .npz archive ({type(err).__name__}: {reason[:160]}); "
            "it is truncated or corrupt: write it again with experiments.prepare_data or copy it again"
        ) from err


def load_tfds_arrays(name: str, tfds_data_dir: str | None):
    """(x_train, y_train, x_test, y_test) of a tfds dataset prepared in array_record format (no
    tensorflow needed)."""
    import tensorflow_datasets as tfds

    out = []
    for split in ("train", "test"):
        # One split at a time: with split=None tfds returns the splits its metadata lists,
        # which is none at all under `tfds.testing.mock_data`.
        source = tfds.data_source(name, split=split, data_dir=tfds_data_dir, download=False)
        examples = [source[i] for i in range(len(source))]
        out.append(np.stack([np.asarray(e["image"]) for e in examples]))
        out.append(np.asarray([int(e["label"]) for e in examples]))
    return tuple(out)


# --------------------------------------------------------------------------- processing


def _check_raw(name, source, x_train, y_train, x_test, y_test, num_classes=None) -> int:
    """Checks the raw arrays (module docstring); returns the number of classes C."""
    where = f"{name} ({source})"
    fix = "fix the arrays (or pass the number of classes explicitly)"
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{where}: y_{split} must be 1-D integer class labels, got shape {y.shape} of dtype "
                f"{y.dtype}; store the class index of each example"
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{where}: x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]} labels"
            )
        if x.shape[0] == 0:
            raise DataError(f"{where}: the {split} split is empty")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{where}: x_{split} must hold real numbers, got dtype {x.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.all(np.isfinite(x.reshape(x.shape[0], -1)), axis=1)))
            raise DataError(
                f"{where}: x_{split} has non-finite values (NaN or inf) in {bad} examples; clean them"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{where}: train inputs of shape {x_train.shape[1:]} and test inputs of shape "
            f"{x_test.shape[1:]} differ; both splits must hold examples of one shape"
        )
    low = int(min(y_train.min(), y_test.min()))
    high = int(max(y_train.max(), y_test.max()))
    if num_classes is not None:
        if low < 0 or high >= num_classes:
            raise DataError(
                f"{where}: labels must lie in [0, {num_classes}) for {num_classes} classes, got "
                f"[{low}, {high}]; {fix}"
            )
        return int(num_classes)
    if low < 0:
        raise DataError(f"{where}: negative labels (smallest {low}); {fix}")
    present = np.unique(y_train)
    if present.size != high + 1:
        missing = sorted(set(range(high + 1)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{where}: labels run up to {high} but {len(missing)} of the {high + 1} classes are missing "
            f"from the training split ({shown}); {fix}"
        )
    return high + 1


def _scaling_stats(name, source, x_train, x_test, scaling):
    """(mean, std) per channel that `_normalise` divides by, for a scaling in `SCALINGS`."""
    if scaling == "standardise":
        return _channel_stats(x_train)
    if scaling != "unit_range":
        raise DataError(f"scaling={scaling!r} unknown; allowed: {', '.join(SCALINGS)}")
    for split, x in (("train", x_train), ("test", x_test)):
        if x.dtype != np.uint8:
            raise DataError(
                f"scaling=unit_range needs uint8 pixel values 0..255, but {name} ({source}) has x_{split} "
                f"of dtype {x.dtype}; use scaling standardise for this dataset"
            )
    channels = x_train.shape[-1] if x_train.ndim > 2 else 1
    half = np.full(channels, 127.5) if x_train.ndim > 2 else np.float64(127.5)
    return half, half.copy()


def _channel_stats(x):
    """Per-channel mean and std over all but the last axis (a single channel for 1-D inputs)."""
    x = np.asarray(x)
    if x.ndim <= 2:  # [N, F] vectors: one channel.
        return np.float64(x.mean(dtype=np.float64)), np.float64(x.std(dtype=np.float64))
    axes = tuple(range(x.ndim - 1))
    return x.mean(axis=axes, dtype=np.float64), x.std(axis=axes, dtype=np.float64)


def _normalise(x, mean, std):
    std = np.where(np.asarray(std) > 0, std, 1.0)
    mean = np.asarray(mean, np.float32)
    return ((np.asarray(x, np.float32) - mean) / np.asarray(std, np.float32)).astype(np.float32)


def _subset(x, y, n, rng, what):
    if n is None:
        return x, y
    if n <= 0 or n > x.shape[0]:
        raise DataError(f"{what}={n} must be in [1, {x.shape[0]}]")
    index = np.sort(rng.permutation(x.shape[0])[:n])
    return x[index], y[index]
