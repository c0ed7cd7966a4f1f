"""Where a run's units live: in memory (nothing written) or in a run folder (resumable).

    store = open_store(None, ...)                       # MemoryStore
    store = open_store("runs/x", ...)                   # FolderStore (a str or a `RunFolder`)

Both hold the run's identity (experiment, settings, derived values, axes) and its units: arrays
and a metrics line each, plus training checkpoints and named JSON files (analysis.json).
`FolderStore` writes them through `records` (atomic files, fsynced metrics lines); a resume
requires the same experiment, settings and record schema version.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from gzone.runs import processes, records, schema


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """A run folder to write (and resume) a run in.

    Attributes:
      path: the folder, e.g. ``runs/radius_scan/quick``.
      overwrite: replace a folder that holds a run with other settings.
      flags_text: replayable flag lines for flags.txt (the command line's; None from Python).
      context: extra values recorded in config.json's derived (e.g. the dataset's description).
    """

    path: str
    overwrite: bool = False
    flags_text: str | None = None
    context: dict | None = None


class MemoryStore:
    """Units in memory: what a run without a folder computes, kept for `Result.save`."""

    def __init__(self, *, experiment: str, settings: dict, derived: dict, axes: dict):
        self.experiment, self.settings, self.derived, self.axes = experiment, settings, derived, axes
        self.units: dict[str, dict] = {}
        self.lines: list[dict] = []
        self.files: dict[str, Any] = {}
        self.path = None
        self.resumed = False
        self.damaged: list[str] = []
        self.damaged_checkpoints: list[str] = []

    def done(self) -> set[str]:
        return set(self.units)

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        return self.units.get(name)

    def save(self, name: str, arrays: dict, record: dict) -> None:
        self.units[name] = arrays
        self.lines.append({"unit": name, **records.to_jsonable(record)})

    def records(self) -> list[dict]:
        return list(self.lines)

    def load_checkpoint(self, name: str, template: Any):
        return None

    def save_checkpoint(self, name: str, *, epoch: int, state: Any, history: dict) -> None:
        pass

    def drop_checkpoint(self, name: str) -> None:
        pass

    def write_json(self, name: str, obj: Any) -> None:
        self.files[name] = records.to_jsonable(obj)

    def finish(self, arrays: dict) -> None:
        pass

    def refresh(self) -> None:
        """Reads again what other processes added (a run folder's); nothing to do in memory."""


class FolderStore(MemoryStore):
    """Units in a run folder (`records` layout); resumes what is there."""

    def __init__(
        self,
        folder: RunFolder,
        *,
        experiment: str,
        settings: dict,
        derived: dict,
        axes: dict,
        process: tuple[int, int] = (0, 1),
    ):
        super().__init__(experiment=experiment, settings=settings, derived=derived, axes=axes)
        self.path = folder.path
        self.index, count = process
        self._verified: dict[str, tuple] = {}

        def open_(overwrite: bool) -> bool:
            return records.open_run(
                folder.path,
                experiment=experiment,
                settings=settings,
                derived={**derived, **(folder.context or {})},
                axes=axes,
                flags_text=folder.flags_text,
                overwrite=overwrite,
                schema_version=schema.VERSION,
            )

        if count == 1:
            self.resumed = open_(folder.overwrite)
        else:  # process 0 opens (and replaces) the folder first; the others join what it opened
            error = None
            if self.index == 0:
                try:
                    self.resumed = open_(folder.overwrite)
                except records.RunDirError as err:
                    error = err
            if processes.broadcast(0 if error is None else 1):
                raise error or records.RunDirError(f"process 0 could not open the run folder {folder.path}")
            if self.index != 0:
                self.resumed = open_(False)
        self.refresh()

    def refresh(self) -> None:
        """The units in the folder now: recorded, with arrays that pass their CRC checks (each file checked
        once per size and modification time)."""
        listed = records.completed_units(self.path)
        done = set()
        for name in listed:
            file = records.unit_file(self.path, name)
            try:
                stat = os.stat(file)
            except OSError:
                continue
            stamp = (stat.st_size, stat.st_mtime_ns)
            if self._verified.get(name) != stamp and records.verify_npz(file) is None:
                self._verified[name] = stamp
            if self._verified.get(name) == stamp:
                done.add(name)
        self._done = done
        self.damaged = sorted(listed - done)  # recorded, but the arrays fail their checks

    def done(self) -> set[str]:
        return set(self._done)

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        try:
            return records.load_unit(self.path, name)
        except records.DamagedFile:
            self._done.discard(name)
            return None

    def save(self, name: str, arrays: dict, record: dict) -> None:
        records.save_unit(self.path, name, arrays, record)
        self._done.add(name)

    def records(self) -> list[dict]:
        return records.read_jsonl(self.path)

    def load_checkpoint(self, name: str, template: Any):
        try:
            return records.load_checkpoint(self.path, name, template)
        except records.DamagedFile:
            self.damaged_checkpoints.append(name)
            return None

    def save_checkpoint(self, name: str, *, epoch: int, state: Any, history: dict) -> None:
        records.save_checkpoint(self.path, name, epoch=epoch, state=state, history=history)

    def drop_checkpoint(self, name: str) -> None:
        records.drop_checkpoint(self.path, name)

    def write_json(self, name: str, obj: Any) -> None:
        super().write_json(name, obj)
        if self.index == 0:  # the assembling process writes the run's files
            records.atomic_write_json(os.path.join(self.path, name), obj)

    def finish(self, arrays: dict) -> None:
        if self.index == 0:
            records.finish(self.path, arrays)


def open_store(
    run_dir: str | RunFolder | None, *, experiment: str, settings: dict, derived: dict, axes: dict
):
    """A `MemoryStore` (run_dir None) or a `FolderStore` (a path or a `RunFolder`)."""
    if run_dir is None:
        return MemoryStore(experiment=experiment, settings=settings, derived=derived, axes=axes)
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(os.fspath(run_dir))
    return FolderStore(
        folder,
        experiment=experiment,
        settings=settings,
        derived=derived,
        axes=axes,
        process=processes.current(),
    )


def write_folder(path: str, store: MemoryStore, arrays: dict, *, overwrite: bool = False) -> str:
    """Writes a finished run (its units, metrics lines, JSON files and arrays) as a run folder."""
    folder = FolderStore(
        RunFolder(path, overwrite=overwrite),
        experiment=store.experiment,
        settings=store.settings,
        derived=store.derived,
        axes=store.axes,
    )
    lines = {line["unit"]: line for line in store.records()}
    for name in sorted(store.done() - folder.done()):
        record = {k: v for k, v in lines.get(name, {}).items() if k != "unit"}
        folder.save(name, store.load(name), record)
    for name, obj in store.files.items():
        folder.write_json(name, obj)
    folder.finish(arrays)
    return path
