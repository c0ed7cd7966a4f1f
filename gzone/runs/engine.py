"""The run engine: an experiment is a set of named units, each computed once.

    store = stores.open_store(run_dir, experiment=..., settings=..., derived=..., axes=...)
    engine = Engine(store, label="radius_scan", log=log)
    engine.plan([(name, weight), ...])                 # the units known in advance (for the ETA)
    arrays = engine.unit(name, compute)                 # compute() -> (arrays, record)
    state, history = engine.fit(name, run_fn, state0, epochs=E, epochs_per_call=k)

`unit` returns a finished unit from the store, or computes it, saves it (arrays first, then its
metrics line, which names the ``process`` that made it) and prints a progress line with an ETA.
Split over several processes (`processes`: jax.distributed, one shared run folder), each planned
unit belongs to one process; ``unit(..., wait=False)`` skips another process's unit (the compute
loop), ``unit(...)`` waits until it is in the folder (assembly, or a unit another one needs).
`fit` trains chunk by chunk with a
checkpoint after each chunk (`train.fit`), resuming from the unit's checkpoint. The same code
runs with a run folder (`FolderStore`: resumable, nothing lost on a kill) or without one
(`MemoryStore`: nothing written), so the Python API and the command line share one path.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from gzone.runs import processes
from gzone.runs import progress as progress_lib

Compute = Callable[[], tuple[dict, dict]]


class Engine:
    """Units of one run over a store (see module docstring)."""

    def __init__(
        self,
        store,
        *,
        label: str,
        log: Callable[[str], None] | None = progress_lib.to_stderr,
        poll_seconds: float = 1.0,
    ):
        self.store, self.label, self.log, self.poll_seconds = store, label, log, poll_seconds
        self.cache: dict[str, dict] = {}
        self.progress = progress_lib.Progress(0, label, log=log)
        # Units are split over processes only when they share a run folder.
        self.index, self.count = processes.current() if store.path else (0, 1)
        self.owners: dict[str, int] = {}

    def plan(self, units: list[tuple[str, float]], *, unplanned: int = 0) -> None:
        """Declares the units known in advance with their relative costs (for the ETA and the split).

        ``unplanned``: how many more units are expected whose names are not known yet (those an
        adaptive search will pick); they count in the total, and the store's finished units that
        are not in `units` count as done (the ETA then weighs every unit alike).
        """
        done = self.store.done()
        for name in self.store.damaged:
            self.say(f"  {name}: its saved arrays are damaged; it will be computed again")
        if self.count > 1:
            self.owners.update(processes.assign(units, self.count))
            units = [(name, w) for name, w in units if self.owners[name] == self.index]
        pending = [w for name, w in units if name not in done]
        n_done = len(units) - len(pending)
        if unplanned:
            n_done += len(done - {name for name, _ in units})
        self.progress = progress_lib.Progress(
            max(len(units) + unplanned, n_done),
            self.label,
            done=n_done,
            weights=None if unplanned else pending or None,
            log=self.log,
        )

    def mine(self, name: str) -> bool:
        """Whether this process computes unit `name` (always, for a single process)."""
        if self.count == 1:
            return True
        return self.owners.get(name, processes.owner(name, self.count)) == self.index

    @property
    def assembles(self) -> bool:
        """Whether this process writes the run's arrays and analysis (process 0)."""
        return self.index == 0

    def has(self, name: str) -> bool:
        return name in self.cache or name in self.store.done()

    def say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def unit(
        self,
        name: str,
        compute: Compute,
        *,
        weight: float | None = None,
        what: Callable[[dict, dict], str] | None = None,
        keep_checkpoint: bool = False,
        wait: bool = True,
    ) -> dict[str, np.ndarray] | None:
        """The unit's arrays: from the store when it is there, else ``compute()`` -> (arrays, record), saved.

        Args:
          name: the unit's name (unique in the run).
          compute: () -> (arrays, record): the unit's arrays and its metrics line (JSON-able).
          weight: the unit's relative cost (as declared in `plan`), for the ETA.
          what: (arrays, record) -> the text of the progress line.
          keep_checkpoint: keep the unit's training checkpoint (`fit`) after it is saved (when
            another unit starts from that state); by default it is removed.
          wait: for another process's unit not yet in the folder: wait for it (True), or return None.
        """
        if name in self.cache:
            return self.cache[name]
        if name in self.store.done():
            arrays = self.store.load(name)
            if arrays is not None:
                self.cache[name] = arrays
                return arrays
            self.say(f"  {name}: its saved arrays are damaged; computing it again")
        if not self.mine(name):
            return self._wait_for(name) if wait else None
        start = time.time()
        arrays, record = compute()
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        record = {**record, "seconds": time.time() - start, "process": self.index}
        self.store.save(name, arrays, record)
        if not keep_checkpoint:
            self.store.drop_checkpoint(name)
        self.cache[name] = arrays
        line = what(arrays, record) if what is not None else ""
        self.progress.step(f"{name}{': ' + line if line else ''} ({record['seconds']:.1f}s)", weight=weight)
        return arrays

    def _wait_for(self, name: str) -> dict[str, np.ndarray]:
        """Polls the run folder until another process has saved unit `name`; returns its arrays."""
        start = last = time.time()
        while True:
            self.store.refresh()
            if name in self.store.done():
                arrays = self.store.load(name)
                if arrays is not None:
                    self.cache[name] = arrays
                    return arrays
            if time.time() - last > 60:
                last = time.time()
                self.say(
                    f"  waiting for {name} from process "
                    f"{self.owners.get(name, processes.owner(name, self.count))} "
                    f"({progress_lib.duration(last - start)})"
                )
            time.sleep(self.poll_seconds)

    def fit(
        self,
        name: str,
        run_fn: Callable,
        state0: Any,
        *,
        epochs: int,
        epochs_per_call: int,
        accuracy_key: str = "test_accuracy",
    ) -> tuple[Any, dict]:
        """`train.fit` with a checkpoint of unit `name` after every call; resumes from it if there is one."""
        from gzone import train

        start, state, history = 0, state0, None
        checkpoint = self.store.load_checkpoint(name, state0)
        if name in self.store.damaged_checkpoints:
            self.say(f"  {name}: its checkpoint is damaged; training it from the start")
        if checkpoint is not None:
            start, state, history = checkpoint
            self.say(f"  {name}: resuming after epoch {start}")

        def on_chunk(epoch, st, hist):
            self.store.save_checkpoint(name, epoch=epoch, state=st, history=hist)
            if epoch < epochs and accuracy_key in hist:
                self.say(
                    f"  {name}: epoch {epoch}/{epochs}, test accuracy "
                    f"{float(np.mean(hist[accuracy_key][..., -1])):.4f}"
                )

        return train.fit(
            run_fn,
            state,
            epochs=epochs,
            epochs_per_call=epochs_per_call,
            start_epoch=start,
            history=history,
            on_chunk=on_chunk,
        )

    def checkpoint(self, name: str, template: Any):
        """The state saved by `fit` for unit `name` (None when there is none)."""
        found = self.store.load_checkpoint(name, template)
        return None if found is None else found[1]

    def drop_checkpoint(self, name: str) -> None:
        self.store.drop_checkpoint(name)
