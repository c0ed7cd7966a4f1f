"""The run engine: an experiment is a set of named units, each computed once.

    store = stores.open_store(run_dir, experiment=..., settings=..., derived=..., axes=...)
    engine = Engine(store, label="radius_scan", log=log)
    engine.plan([(name, weight), ...])                 # the units known in advance (for the ETA)
    arrays = engine.unit(name, compute)                 # compute() -> (arrays, record)
    state, history = engine.fit(name, run_fn, state0, epochs=E, epochs_per_call=k)

`unit` returns a finished unit from the store, or computes it, saves it (arrays first, then its
metrics line) and prints a progress line with an ETA. `fit` trains chunk by chunk with a
checkpoint after each chunk (`train.fit`), resuming from the unit's checkpoint. The same code
runs with a run folder (`FolderStore`: resumable, nothing lost on a kill) or without one
(`MemoryStore`: nothing written), so the Python API and the command line share one path.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from gzone.runs import progress as progress_lib

Compute = Callable[[], tuple[dict, dict]]


class Engine:
    """Units of one run over a store (see module docstring)."""

    def __init__(self, store, *, label: str, log: Callable[[str], None] | None = progress_lib.to_stderr):
        self.store, self.label, self.log = store, label, log
        self.cache: dict[str, dict] = {}
        self.progress = progress_lib.Progress(0, label, log=log)

    def plan(self, units: list[tuple[str, float]], *, unplanned: int = 0) -> None:
        """Declares the units known in advance with their relative costs (for the progress lines).

        ``unplanned``: how many more units are expected whose names are not known yet (those an
        adaptive search will pick); they count in the total, and the store's finished units that
        are not in `units` count as done (the ETA then weighs every unit alike).
        """
        done = self.store.done()
        pending = [w for name, w in units if name not in done]
        n_done = len(units) - len(pending)
        if unplanned:
            n_done += len(done - {name for name, _ in units})
        self.progress = progress_lib.Progress(max(len(units) + unplanned, n_done), self.label, done=n_done,
                                              weights=None if unplanned else pending or None, log=self.log)

    def has(self, name: str) -> bool:
        return name in self.cache or name in self.store.done()

    def say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def unit(self, name: str, compute: Compute, *, weight: float | None = None,
             what: Callable[[dict, dict], str] | None = None, keep_checkpoint: bool = False) -> dict[str, np.ndarray]:
        """The unit's arrays: from the store when it is there, else ``compute()`` -> (arrays, record), saved.

        Args:
          name: the unit's name (unique in the run).
          compute: () -> (arrays, record): the unit's arrays and its metrics line (JSON-able).
          weight: the unit's relative cost (as declared in `plan`), for the ETA.
          what: (arrays, record) -> the text of the progress line.
          keep_checkpoint: keep the unit's training checkpoint (`fit`) after it is saved (when
            another unit starts from that state); by default it is removed.
        """
        if name in self.cache:
            return self.cache[name]
        if name in self.store.done():
            arrays = self.store.load(name)
            if arrays is not None:
                self.cache[name] = arrays
                return arrays
            self.say(f"  {name}: its saved arrays are damaged; computing it again")
        start = time.time()
        arrays, record = compute()
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        record = {**record, "seconds": time.time() - start}
        self.store.save(name, arrays, record)
        if not keep_checkpoint:
            self.store.drop_checkpoint(name)
        self.cache[name] = arrays
        line = what(arrays, record) if what is not None else ""
        self.progress.step(f"{name}{': ' + line if line else ''} ({record['seconds']:.1f}s)", weight=weight)
        return arrays

    def fit(self, name: str, run_fn: Callable, state0: Any, *, epochs: int, epochs_per_call: int,
            accuracy_key: str = "test_accuracy") -> tuple[Any, dict]:
        """`train.fit` with a checkpoint of unit `name` after every call; resumes from it if there is one."""
        from gzone import train

        start, state, history = 0, state0, None
        checkpoint = self.store.load_checkpoint(name, state0)
        if checkpoint is not None:
            start, state, history = checkpoint
            self.say(f"  {name}: resuming after epoch {start}")

        def on_chunk(epoch, st, hist):
            self.store.save_checkpoint(name, epoch=epoch, state=st, history=hist)
            if epoch < epochs and accuracy_key in hist:
                self.say(f"  {name}: epoch {epoch}/{epochs}, test accuracy {float(np.mean(hist[accuracy_key][..., -1])):.4f}")

        return train.fit(run_fn, state, epochs=epochs, epochs_per_call=epochs_per_call, start_epoch=start,
                         history=history, on_chunk=on_chunk)

    def checkpoint(self, name: str, template: Any):
        """The state saved by `fit` for unit `name` (None when there is none)."""
        found = self.store.load_checkpoint(name, template)
        return None if found is None else found[1]

    def drop_checkpoint(self, name: str) -> None:
        self.store.drop_checkpoint(name)
