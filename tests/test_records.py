"""gzone.records: atomic files, metrics.jsonl repair, completed units, run folders and resume."""

from __future__ import annotations

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from gzone.runs import records

SETTINGS = {"model": "mlp", "widths": (16,), "radii": [0.5, 1.0], "seed": 0}


def _open(path, settings=SETTINGS, **kwargs):
    return records.open_run(
        str(path),
        experiment="toy",
        settings=settings,
        derived={"D": 826, "r_x": 5.9},
        axes={"loss": ["radius", "seed"]},
        flags_text="--model=mlp\n",
        schema_version=2,
        **kwargs,
    )


# --------------------------------------------------------------------------- atomic files


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a.json"
    records.atomic_write_json(str(path), {"x": 1.5, "y": [1, 2]})
    records.atomic_write_bytes(str(tmp_path / "b.bin"), b"\x00\x01")
    records.atomic_save_npz(str(tmp_path / "c.npz"), {"z": np.arange(3)})
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin", "c.npz"]
    assert json.loads(path.read_text()) == {"x": 1.5, "y": [1, 2]}
    np.testing.assert_array_equal(records.load_npz(str(tmp_path / "c.npz"))["z"], np.arange(3))


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    records.atomic_write_json(str(path), {"status": "running"})
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(records.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        records.atomic_write_json(str(path), {"status": "complete", "big": list(range(1000))})
    with pytest.raises(OSError, match="disk full"):
        records.atomic_save_npz(str(tmp_path / "arrays.npz"), {"a": np.ones(3)})
    assert path.read_bytes() == before
    assert not (tmp_path / "arrays.npz").exists()


def test_npz_holds_numeric_arrays_only(tmp_path):
    with pytest.raises(TypeError, match="object"):
        records.atomic_save_npz(str(tmp_path / "x.npz"), {"bad": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "x.npz").exists()


def test_to_jsonable():
    obj = {
        "nan": float("nan"),
        "inf": np.float32(np.inf),
        "neg": -math.inf,
        "np": np.float64(2.5),
        "int": np.int64(3),
        "bool": np.bool_(True),
        "arr": np.array([1.0, np.nan]),
        "jax": jnp.array([1.0, 2.0]),
        "tuple": (1, (2, 3)),
        4: "key",
    }
    out = records.to_jsonable(obj)
    assert out == {
        "nan": None, "inf": None, "neg": None, "np": 2.5, "int": 3, "bool": True,
        "arr": [1.0, None], "jax": [1.0, 2.0], "tuple": [1, [2, 3]], "4": "key",
    }
    assert isinstance(out["int"], int) and isinstance(out["bool"], bool)
    json.dumps(out, allow_nan=False)  # strict JSON


# --------------------------------------------------------------------------- metrics.jsonl


def test_repair_jsonl_drops_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"unit": "a"}\n{"unit": "b"}\n{"unit": "c", "val')
    assert [r["unit"] for r in records.read_jsonl(str(path))] == ["a", "b"]
    records.repair_jsonl(str(path))
    assert path.read_bytes() == b'{"unit": "a"}\n{"unit": "b"}\n'
    records.repair_jsonl(str(path))  # a complete file is left alone
    assert path.read_bytes() == b'{"unit": "a"}\n{"unit": "b"}\n'
    path.write_bytes(b'{"unit": "a"')  # only a partial line
    records.repair_jsonl(str(path))
    assert path.read_bytes() == b""
    records.repair_jsonl(str(tmp_path / "absent.jsonl"))  # no file: nothing to do
    assert not (tmp_path / "absent.jsonl").exists()


def test_append_and_read_jsonl(tmp_path):
    records.append_jsonl(str(tmp_path), {"unit": "u1", "loss": float("nan")})
    records.append_jsonl(str(tmp_path / "metrics.jsonl"), {"unit": "u2", "loss": 1.0})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert records.read_jsonl(str(tmp_path)) == [{"unit": "u1", "loss": None}, {"unit": "u2", "loss": 1.0}]


def test_completed_units_need_both_arrays_and_line(tmp_path):
    _open(tmp_path)
    records.save_unit(str(tmp_path), "both", {"x": np.ones(2)}, {"radius": 1.0})
    records.atomic_save_npz(records.unit_file(str(tmp_path), "arrays_only"), {"x": np.ones(2)})
    records.append_jsonl(str(tmp_path), {"unit": "line_only"})
    assert records.completed_units(str(tmp_path)) == {"both"}
    np.testing.assert_array_equal(records.load_unit(str(tmp_path), "both")["x"], np.ones(2))


# --------------------------------------------------------------------------- run folders


def test_open_run_new_then_resume(tmp_path):
    path = tmp_path / "toy" / "run"
    assert _open(path) is False
    assert sorted(os.listdir(path)) == ["config.json", "flags.txt", "units"]
    config = records.read_config(str(path))
    assert config["status"] == "running" and config["experiment"] == "toy"
    assert config["settings"]["widths"] == [16] and config["axes"] == {"loss": ["radius", "seed"]}
    assert {"versions", "devices", "backend", "x64", "native_kernels", "git"} <= set(config["environment"])
    assert (path / "flags.txt").read_text() == "--model=mlp\n"
    records.save_unit(str(path), "u0", {"x": np.zeros(1)}, {})
    with open(path / "metrics.jsonl", "a") as fh:
        fh.write('{"unit": "u1", "par')  # killed in the middle of an append
    assert _open(path) is True  # same settings: resume
    assert (path / "metrics.jsonl").read_text() == '{"unit": "u0"}\n'
    assert records.completed_units(str(path)) == {"u0"}


def test_open_run_refuses_other_settings_unless_overwrite(tmp_path):
    path = tmp_path / "run"
    _open(path)
    records.save_unit(str(path), "u0", {"x": np.zeros(1)}, {})
    other = dict(SETTINGS, seed=1)
    with pytest.raises(records.RunDirError, match="seed") as err:
        _open(path, settings=other)
    assert "--overwrite" in str(err.value)
    assert records.read_config(str(path))["settings"]["seed"] == 0  # untouched
    assert _open(path, settings=other, overwrite=True) is False
    assert records.read_config(str(path))["settings"]["seed"] == 1
    assert records.completed_units(str(path)) == set() and os.listdir(path / "units") == []


def test_finish(tmp_path):
    _open(tmp_path)
    stacked = {"loss": np.arange(12, dtype=np.float32).reshape(2, 2, 3), "eig": np.ones((2, 2, 3, 2))}
    records.finish(str(tmp_path), stacked, extra_field=7)
    config = records.read_config(str(tmp_path))
    assert config["status"] == "complete" and config["extra_field"] == 7 and "finished" in config
    np.testing.assert_array_equal(records.load_arrays(str(tmp_path))["eig"], stacked["eig"])


def test_checkpoint_round_trip(tmp_path):
    _open(tmp_path)
    assert records.load_checkpoint(str(tmp_path), "u", {"w": jnp.zeros(2)}) is None
    state = {"w": jnp.arange(3.0), "step": jnp.asarray(5, jnp.int32)}
    records.save_checkpoint(str(tmp_path), "u", epoch=2, state=state, history={"loss": np.arange(4.0)})
    epoch, loaded, history = records.load_checkpoint(str(tmp_path), "u", state)
    assert epoch == 2 and loaded["step"].dtype == jnp.int32
    np.testing.assert_array_equal(loaded["w"], state["w"])
    np.testing.assert_array_equal(history["loss"], np.arange(4.0))
    records.drop_checkpoint(str(tmp_path), "u")
    assert records.load_checkpoint(str(tmp_path), "u", state) is None


def test_an_optional_setting_at_its_default_matches_its_absence(tmp_path):
    """Options declared ``setting="changed"`` (here threshold_dimension's lr_reference_d, default 0) are
    settings only off their default: a folder that recorded the default (written by code where it was
    a plain setting) resumes without it, and one recorded off the default does not."""
    from gzone.studies import threshold_dimension  # noqa: F401  (defines the option)

    assert records.optional_defaults()["lr_reference_d"] == 0
    _open(tmp_path / "a", settings={**SETTINGS, "lr_reference_d": 0})
    assert _open(tmp_path / "a") is True
    _open(tmp_path / "b")
    assert _open(tmp_path / "b", settings={**SETTINGS, "lr_reference_d": 0}) is True
    _open(tmp_path / "c", settings={**SETTINGS, "lr_reference_d": 1000})
    with pytest.raises(records.RunDirError, match="lr_reference_d"):
        _open(tmp_path / "c")
