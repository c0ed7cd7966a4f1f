"""Run directories: config.json, flags.txt, metrics.jsonl, units/, arrays.npz; resume.

Layout of ``<workdir>/<experiment>/<name>/``:

  config.json     {"experiment", "settings" (the resolved config), "derived" (r_X, D, ...),
                   "axes" (named axes of each array in arrays.npz), "environment" (versions,
                   devices, git revision), "created", "status"}
  flags.txt       the flags, replayable with ``--flagfile=<run>/flags.txt``
  metrics.jsonl   append-only, one JSON object per completed unit of work
  units/<k>.npz   the arrays of each completed unit (what resume reloads)
  arrays.npz      all units assembled with named axes, written when the run completes

Every file is written atomically (temp file ``<name>.tmp<pid>`` in the same folder, then rename);
metrics.jsonl lines are appended and fsynced after the unit's arrays are safely on disk, so a run
killed at any moment resumes from its last completed unit. No pickles anywhere.

Everything read back is checked: config.json must parse (`DamagedFile` otherwise, naming the file
and ``--overwrite``); a unit's archive must pass its CRC checks (`verify_npz`), else the unit counts
as not done and is computed again; metrics.jsonl lines that do not parse are skipped. Temp files
left by a killed writer (their process is gone) are removed when the run folder is opened.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from typing import Any

import numpy as np

from gzone.runs import environment
from gzone.runs.files import (  # noqa: F401  (the run folder's file primitives, used as records.*)
    DamagedFile,
    atomic_save_npz,
    atomic_write_bytes,
    atomic_write_json,
    load_npz,
    remove_stale_temp_files,
    to_jsonable,
    verify_npz,
)


class RunDirError(RuntimeError):
    """The run folder exists with other settings (or cannot be used).

    ``flag``: the command-line option that fixes it (``name``: another run name or --overwrite;
    ``workdir``: a folder that can be created and written).
    """

    def __init__(self, message: str, flag: str = "name"):
        super().__init__(message)
        self.flag = flag


# --------------------------------------------------------------------------- run folder


def run_path(workdir: str, experiment: str, name: str) -> str:
    return os.path.join(workdir, experiment, name)


def optional_defaults() -> dict:
    """{name: default} of the options that are settings only off their default (``setting="changed"``):
    a run folder that recorded such an option at its default (or not at all) resumes either way."""
    import dataclasses

    from gzone import options

    out, todo = {}, [options.Group]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if dataclasses.is_dataclass(cls):
            out.update({f.name: to_jsonable(f.default) for f in dataclasses.fields(cls)
                        if f.metadata.get("setting") == "changed"})
    return out


def open_run(
    path: str,
    *,
    experiment: str,
    settings: dict,
    derived: dict,
    axes: dict[str, list[str]],
    flags_text: str | None,
    overwrite: bool = False,
    schema_version: int | None = None,
) -> bool:
    """Creates the run folder, or checks that an existing one can be resumed.

    Args:
      path: the run folder.
      experiment: experiment name.
      settings: the resolved configuration; a resume requires it to be equal.
      derived: values computed from the settings (r_X, D, ...), recorded only.
      axes: named axes of each array of arrays.npz.
      flags_text: replayable flag lines (None: no flags.txt, e.g. a run started from Python).
      overwrite: remove an existing folder first.
      schema_version: the record schema this run writes (default `schema.VERSION`); a folder of another
        version is refused.

    Returns:
      True when resuming an existing run, False for a new one.

    Raises:
      RunDirError: the folder holds a run with different settings (and not ``overwrite``).
    """
    if schema_version is None:
        from gzone.runs import schema

        schema_version = schema.VERSION
    settings = to_jsonable(settings)
    config_path = os.path.join(path, "config.json")
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(
            f"cannot use {path} as a run folder: it is a file; choose another --workdir or --name"
        )
    if os.path.exists(path) and overwrite:
        shutil.rmtree(path)
    if os.path.isdir(path):
        remove_stale_temp_files(path)
    if os.path.exists(config_path):
        old = read_config(path)
        if old.get("schema") != schema_version:
            raise RunDirError(
                f"{path} holds a run of record schema {old.get('schema', 1)} (this gzone writes "
                f"{schema_version}); "
                "pass --overwrite (overwrite=True) to replace it or choose another --name"
            )
        saved, optional = old.get("settings", {}), optional_defaults()
        diff = sorted(k for k in set(saved) | set(settings)  # an absent optional setting is its default
                      if saved.get(k, optional.get(k)) != settings.get(k, optional.get(k)))
        if diff or old.get("experiment") != experiment:
            raise RunDirError(
                f"{path} holds a run with other settings (differs in: {', '.join(diff) or 'experiment'}); "
                "pass --overwrite to replace it or choose another --name"
            )
        repair_jsonl(os.path.join(path, "metrics.jsonl"))
        return True
    try:
        os.makedirs(os.path.join(path, "units"), exist_ok=True)
        probe = os.path.join(path, f".write_test{os.getpid()}")
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        os.remove(probe)
    except OSError as err:
        raise RunDirError(
            f"cannot create or write the run folder {path} ({err.strerror or err}); choose another --workdir",
            flag="workdir",
        ) from None
    config = {
        "schema": schema_version,
        "experiment": experiment,
        "settings": settings,
        "derived": derived,
        "axes": axes,
        "environment": environment.describe(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
    }
    if flags_text is not None:
        atomic_write_bytes(os.path.join(path, "flags.txt"), flags_text.encode())
    atomic_write_json(config_path, config)
    return False


def read_config(path: str) -> dict:
    """config.json of a run folder; `DamagedFile` when it is unreadable or not a JSON object."""
    file = os.path.join(path, "config.json")
    try:
        with open(file) as fh:
            config = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DamagedFile(
            f"{file} cannot be read ({type(err).__name__}); pass --overwrite (overwrite=True) to "
            "start the run again"
        ) from err
    if not isinstance(config, dict):
        raise DamagedFile(
            f"{file} is not a run's config; pass --overwrite (overwrite=True) to start the run again"
        )
    return config


def update_config(path: str, **fields) -> None:
    config = read_config(path)
    config.update(fields)
    atomic_write_json(os.path.join(path, "config.json"), config)


# --------------------------------------------------------------------------- units


def repair_jsonl(path: str) -> None:
    """Drops a partial last line left by a kill in the middle of an append."""
    if not os.path.exists(path):
        return
    with open(path, "rb") as fh:
        data = fh.read()
    if data and not data.endswith(b"\n"):
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def read_jsonl(path: str) -> list[dict]:
    """All complete lines of a metrics.jsonl (a partial last line is ignored)."""
    path = os.fspath(path)
    path = path if path.endswith(".jsonl") else os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: its unit counts as not done
            if isinstance(record, dict):
                out.append(record)
    return out


def append_jsonl(path: str, record: dict) -> None:
    path = os.fspath(path)
    path = path if path.endswith(".jsonl") else os.path.join(path, "metrics.jsonl")
    line = json.dumps(to_jsonable(record), sort_keys=True) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def unit_file(path: str, unit: str) -> str:
    return os.path.join(path, "units", f"{unit}.npz")


def completed_units(path: str, *, verify: bool = False) -> set[str]:
    """Units with both their arrays and their metrics line on disk (and, with `verify`, arrays that
    pass their CRC checks)."""
    done = set()
    for record in read_jsonl(path):
        unit = record.get("unit")
        if isinstance(unit, str) and os.path.exists(unit_file(path, unit)):
            done.add(unit)
    if verify:
        done = {u for u in done if verify_npz(unit_file(path, u)) is None}
    return done


def save_unit(path: str, unit: str, arrays: dict[str, np.ndarray], record: dict) -> None:
    """Arrays first (atomic), then the metrics line: a unit counts once both are down."""
    atomic_save_npz(unit_file(path, unit), arrays)
    append_jsonl(path, {"unit": unit, **record})


def load_unit(path: str, unit: str) -> dict[str, np.ndarray]:
    return load_npz(unit_file(path, unit))


def finish(path: str, arrays: dict[str, np.ndarray], **extra) -> None:
    """Writes arrays.npz and marks the run complete in config.json."""
    atomic_save_npz(os.path.join(path, "arrays.npz"), arrays)
    update_config(
        path,
        status="complete",
        finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    )


def load_arrays(path: str) -> dict[str, np.ndarray]:
    return load_npz(os.path.join(path, "arrays.npz"))


# --------------------------------------------------------------------------- checkpoints


def checkpoint_file(path: str, unit: str) -> str:
    return os.path.join(path, "units", f"{unit}.ckpt.npz")


def save_checkpoint(path: str, unit: str, *, epoch: int, state: Any, history: dict) -> None:
    """State pytree leaves and the history so far after `epoch` completed epochs (atomic)."""
    import jax

    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"state_{i:04d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"hist_{k}": np.asarray(v) for k, v in history.items()})
    arrays["epoch"] = np.asarray(epoch)
    atomic_save_npz(checkpoint_file(path, unit), arrays)


def load_checkpoint(path: str, unit: str, template: Any) -> tuple[int, Any, dict] | None:
    """(epochs done, state shaped like `template`, history) or None when there is none.

    Raises:
      DamagedFile: the checkpoint cannot be read or does not fit the template.
    """
    import jax

    file = checkpoint_file(path, unit)
    if not os.path.exists(file):
        return None
    arrays = load_npz(file)
    leaves, treedef = jax.tree_util.tree_flatten(template)
    names = [f"state_{i:04d}" for i in range(len(leaves))]
    if "epoch" not in arrays or any(
        n not in arrays or arrays[n].shape != np.shape(l) for n, l in zip(names, leaves)
    ):
        raise DamagedFile(f"{file} does not hold a state of this run's shapes")
    loaded = [arrays[n] for n in names]
    state = jax.tree_util.tree_unflatten(
        treedef, [jax.numpy.asarray(a, l.dtype) for a, l in zip(loaded, leaves)]
    )
    history = {k[5:]: v for k, v in arrays.items() if k.startswith("hist_")}
    return int(arrays["epoch"]), state, history


def drop_checkpoint(path: str, unit: str) -> None:
    file = checkpoint_file(path, unit)
    if os.path.exists(file):
        os.remove(file)
