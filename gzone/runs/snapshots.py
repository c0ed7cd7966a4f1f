"""Trajectories on disk: the snapshots a training run keeps, one .npy file per epoch and unit.

    store = SnapshotStore(os.path.join(run_dir, "snapshots", unit))
    run_fn = to_store(run_fn, store)          # moves each chunk's snapshots out of the history to disk
    store.chunks(model)                        # memory-mapped [n, D] row chunks of one model's path
"""

from __future__ import annotations

import os
import re
from typing import Callable, Sequence

import numpy as np

from gzone.runs import files

_EPOCH_FILE = re.compile(r"^e(\d{5,})\.npy$")


class SnapshotStore:
    """A folder of snapshot chunks: ``e<epoch>.npy`` holds [S, n_snap, D] (S models, one epoch).

    Writes are atomic (temp file, fsync, rename), so a run killed midway leaves whole files only;
    rewriting an epoch (a resumed run redoing it) replaces the file.
    """

    def __init__(self, folder: str):
        self.folder = folder

    def write(self, epoch: int, snapshots: np.ndarray) -> None:
        """Stores the snapshots [S, n_snap, D] taken during `epoch`."""
        snapshots = np.asarray(snapshots)
        if snapshots.ndim != 3:
            raise ValueError(f"snapshots must be [S, n_snap, D], got shape {snapshots.shape}")
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"e{epoch:05d}.npy")
        files.write_then_rename(path, f"{path}.tmp{os.getpid()}",
                                lambda fh: np.save(fh, snapshots, allow_pickle=False))

    def epochs(self) -> list[int]:
        """The stored epochs, ascending."""
        if not os.path.isdir(self.folder):
            return []
        found = (_EPOCH_FILE.match(name) for name in os.listdir(self.folder))
        return sorted(int(m.group(1)) for m in found if m)

    def read(self, epoch: int) -> np.ndarray:
        """The memory-mapped [S, n_snap, D] array of one epoch (nothing is read until indexed)."""
        return np.load(os.path.join(self.folder, f"e{epoch:05d}.npy"), mmap_mode="r", allow_pickle=False)

    def chunks(self, model: int, epochs: Sequence[int] | None = None) -> list[np.ndarray]:
        """Model `model`'s trajectory as memory-mapped chunks [n_snap, D], one per epoch in order."""
        return [self.read(e)[model] for e in (self.epochs() if epochs is None else epochs)]


def to_store(run_fn: Callable, store: SnapshotStore, *, epoch_offset: int = 0) -> Callable:
    """Wraps ``run_fn(state, epoch0, num_epochs) -> (state, hist)`` for `train.fit`.

    Each call's ``hist['snapshots']`` ([n, n_snap, D], or [S, n, n_snap, D] when the state carries
    a seed axis) is written to `store` as one file per epoch (epoch number ``epoch_offset + epoch0
    + i``) and dropped from the history `train.fit` accumulates and checkpoints.
    """

    def wrapped(state, epoch0, num_epochs):
        state, hist = run_fn(state, epoch0, num_epochs)
        hist = dict(hist)
        snaps = np.asarray(hist.pop("snapshots"))
        if state.step.ndim == 0:  # no seed axis: [n, n_snap, D] -> [1, n, n_snap, D]
            snaps = snaps[None]
        for i in range(snaps.shape[1]):
            store.write(epoch_offset + int(epoch0) + i, snaps[:, i])
        return state, hist

    return wrapped


# --------------------------------------------------------------------------- streamed Gram matrix and PCA
