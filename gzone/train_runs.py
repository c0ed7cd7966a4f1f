"""Running a trainer: over a leading seed axis as one jitted computation, and epoch chunk by chunk.

Both are re-exported by `gzone.train` (``train.seed_runner``, ``train.fit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import jax
import numpy as np

from gzone import seeds

if TYPE_CHECKING:
    from gzone.train import Trainer, TrainState


def seed_runner(
    trainer: Trainer, seed_mode: str, devices: list | None = None
) -> Callable[..., tuple[TrainState, dict]]:
    """`trainer.run` over a leading seed axis, as one jitted computation.

    Returns:
      run_seeds(states, keys, spaces, epoch0, data, num_epochs) -> (states, history): states, keys
      [S] and spaces (a `Space` with leading axis S, or None in full mode) carry the seed axis
      (vmapped or `lax.map`-ped by `seeds.map_seeds` with ``seed_mode``); epoch0 and data are
      shared; num_epochs is static. History arrays are [S, num_epochs, ...]. Cost: one compile per
      num_epochs value (`fit` calls it with ``epochs_per_call`` and once more for a shorter last chunk).
      With several `devices` the seed axis is sharded over them (`seeds.shard_seeds`).
    """

    def run_seeds(states, keys, spaces, epoch0, data, num_epochs):
        def one_seed(state, key, space, e0, d):
            return trainer.run(state, key, d, space, e0, num_epochs)

        over = seeds.shard_seeds(
            seeds.map_seeds(one_seed, seed_mode, per_seed=3), per_seed=3, devices=devices
        )
        return over(states, keys, spaces, epoch0, data)

    return jax.jit(run_seeds, static_argnums=5)


def fit(
    run_fn: Callable[..., tuple[TrainState, dict]],
    state: TrainState,
    *,
    epochs: int,
    epochs_per_call: int = 1,
    start_epoch: int = 0,
    history: dict | None = None,
    on_chunk: Callable[[int, TrainState, dict], None] | None = None,
) -> tuple[TrainState, dict]:
    """Calls a jitted ``run_fn(state, epoch0, num_epochs)`` chunk by chunk up to `epochs`.

    The epoch axis of each chunk's history is axis 0, or axis 1 when the state is vmapped over
    seeds (detected from the state's step: [S] vs []). After each chunk `on_chunk(epochs_done,
    state, history_so_far)` can save a checkpoint, so a killed run resumes at that epoch.
    Each chunk size compiles once (a last shorter chunk compiles once more).
    """
    seed_axis = state.step.ndim  # 0 (no seed axis) or 1 (epochs after the seed axis)
    history = dict(history or {})
    epoch = start_epoch
    while epoch < epochs:
        n = min(epochs_per_call, epochs - epoch)
        state, chunk = run_fn(state, epoch, n)
        chunk = jax.tree_util.tree_map(np.asarray, chunk)
        for k, v in chunk.items():
            history[k] = v if k not in history else np.concatenate([history[k], v], axis=seed_axis)
        epoch += n
        if on_chunk is not None:
            on_chunk(epoch, state, history)
    return state, history
