"""Figures drawn from a run's records only (never recomputed).

``draw(run_dir)`` reads a finished run folder (`schema.read`) and draws its experiment's figures
as PNG files in it; ``draw_records(out_dir, records)`` draws them from records in memory (what
`Result.plot` does). Each experiment NAME keeps its figures in ``gzone/plots/NAME.py``, registered
with `register` and imported on demand. matplotlib's object-oriented API only (no pyplot state,
no display needed).
"""

from __future__ import annotations

import importlib
from typing import Callable

from gzone.plots.common import band, mark_rx, radius_axes, save, title_of
from gzone.runs import schema

DRAWERS: dict[str, Callable[..., list[str]]] = {}
__all__ = [
    "DRAWERS",
    "band",
    "draw",
    "draw_records",
    "mark_rx",
    "radius_axes",
    "register",
    "save",
    "title_of",
]


def register(experiment: str):
    """Decorator: fn(out_dir, config, arrays, analysis) -> list of PNG paths draws `experiment`'s figures."""

    def wrap(fn):
        DRAWERS[experiment] = fn
        return fn

    return wrap


def draw_records(out_dir: str, records: schema.Records) -> list[str]:
    """Draws the figures of finished records into `out_dir`; returns the PNG paths."""
    experiment = records.experiment
    if experiment not in DRAWERS and isinstance(experiment, str) and experiment.isidentifier():
        try:
            importlib.import_module(f"gzone.plots.{experiment}")
        except ModuleNotFoundError:
            pass
    if experiment not in DRAWERS:
        raise ValueError(f"no figures defined for experiment {experiment!r}")
    return DRAWERS[experiment](out_dir, records.config, records.arrays, records.analysis)


def draw(run_dir: str) -> list[str]:
    """Draws the figures of a completed run folder into it; returns the PNG paths."""
    return draw_records(run_dir, schema.read(run_dir))
