"""Several processes on one run: jax.distributed, which process computes which unit, barriers.

    processes.initialize(coordinator_address="host:1234", num_processes=2, process_id=0)
    index, count = processes.current()

A run split over N processes (one per host, or several on one machine) writes one run folder on a
shared filesystem. Every process runs the same library call; the run engine (`engine.Engine`)
gives each planned unit to one process (`assign`: the costliest first, each to the least loaded),
a process computes only its own units and waits for the others' before assembling, and process 0
alone writes arrays.npz and marks the run complete. A unit whose process died is not in the folder,
so a rerun computes it. Processes coordinate through the folder and jax.distributed's collectives
(`broadcast`, `barrier`, from `jax.experimental.multihost_utils`); on CPU they need gloo
collectives, which `initialize` turns on.
"""

from __future__ import annotations

import os

import jax
import numpy as np


def _detected() -> bool:
    """True in a multi-process cluster job that jax.distributed.initialize() can configure on its own."""
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return True
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    return "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> tuple[int, int]:
    """Joins jax.distributed (once per process) and returns (process index, process count).

    With all three arguments: those. With none: automatic in a cluster job that jax detects
    (SLURM with several tasks, Open MPI, a TPU pod slice), else a single process. Must run before
    anything touches a JAX backend.

    Raises:
      ValueError: some but not all of the three arguments, or a process id outside [0, N).
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("give all of coordinator_address, num_processes and process_id, or none of them")
    if all(given) and not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, num_processes={num_processes}), got {process_id}")
    if not all(given) and not _detected():
        return current()
    if jax.distributed.is_initialized():
        return current()
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # collectives between CPU processes
    except (AttributeError, ValueError):
        pass
    if all(given):
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    return current()


def current() -> tuple[int, int]:
    """(jax.process_index(), jax.process_count()): (0, 1) for a single process."""
    return jax.process_index(), jax.process_count()


def assign(units: list[tuple[str, float]], count: int) -> dict[str, int]:
    """Unit name -> process: the costliest unit first, each to the process with the least work so far
    (ties: the lower index). Deterministic, so every process computes the same assignment."""
    load = [0.0] * count
    out = {}
    for name, weight in sorted(units, key=lambda u: (-float(u[1]), u[0])):
        p = min(range(count), key=lambda i: (load[i], i))
        out[name] = p
        load[p] += float(weight)
    return out


def owner(name: str, count: int) -> int:
    """The process of a unit no plan announced (e.g. one an adaptive search asks for): by a stable hash."""
    import zlib

    return zlib.crc32(name.encode()) % count


def broadcast(value: int) -> int:
    """Process 0's integer, on every process (a collective: every process must call it)."""
    if current()[1] == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.asarray(multihost_utils.broadcast_one_to_all(np.int32(value))))


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier called `name` (a no-op for one process)."""
    if current()[1] > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
