"""Progress lines of a run: unit k of n, elapsed time and an ETA, on stderr (or any log function)."""

from __future__ import annotations

import sys
import time
from typing import Callable


def to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """Unit k of n, elapsed, ETA.

    ``weights`` (one per pending unit, e.g. the subspace dimension d) make the ETA track units of
    unequal cost: the remaining weight times the measured seconds per unit of weight.
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        done: int = 0,
        weights=None,
        log: Callable[[str], None] | None = to_stderr,
    ):
        self.total, self.label, self.done, self.log = total, label, done, log
        self.start = time.time()
        self.fresh = 0
        self.remaining_weight = float(sum(weights)) if weights else None
        self.done_weight = 0.0

    def step(self, what: str, weight: float | None = None) -> None:
        self.done += 1
        self.fresh += 1
        self.total = max(self.total, self.done)
        elapsed = time.time() - self.start
        if self.remaining_weight is not None and weight is not None:
            self.done_weight += weight
            self.remaining_weight -= weight
            eta = elapsed / self.done_weight * max(self.remaining_weight, 0.0)
        else:
            eta = elapsed / self.fresh * (self.total - self.done)
        if self.log is not None:
            self.log(
                f"[{self.label}] unit {self.done}/{self.total} {what} | elapsed {duration(elapsed)}, "
                f"ETA {duration(eta)}"
            )


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
