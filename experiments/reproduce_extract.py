"""The vocabulary of the reproduction manifest: entries, quantities, tolerances and extractors.

An `Entry` is one run (an experiment, a committed flagfile, overrides, a run name) and the
`Quantity`s read from its records; a quantity passes when its extractor's value lies within its
`Tol` of the value recorded in REPRODUCTION.md (`Quantity.passes`; NaN never passes).

An extractor is a function ``Records -> float`` (`gzone.runs.schema.read` gives the records of a run
folder: config.json, arrays.npz, analysis.json). The factories below make the ones the manifest
uses, by named axes and grid values rather than positions, so that a reduced run (fewer radii,
dimensions or seeds) is read the same way as the full one:

    mean("frac_pos", radius=0, d=10)          seed mean of frac+ at x = log10(r^2/r_X^2) = 0, d = 10
    ratio("gn_frob", "frob", radius=0, d=10)  seed mean of ||G||_F / ||H||_F there
    zone(10, "frac_pos", "extent_hi")         a field of `gzone.analysis.zone.summarise`
    loss_law("p")                             a field of `gzone.analysis.zone.loss_power_law`
    row("alpha.alpha", mode="free", r0=0.01)  a field of a radius-dynamics analysis row
    d_int("grid")                             threshold_dimension's d_int90 (grid or interpolated)
    diagonal_spread("frac_pos", d=50, degree=3)  largest spread of a zone map along r^L / T = const
    density("top_over_edge", radius=0)        seed mean of a `gzone.analysis.spectral_density.summary` field
    gordon("larsen", target=0.8, start="t0")  a field of threshold_dimension's Gordon prediction rows

Coordinates: ``radius`` (x = log10(r^2/r_X^2)), ``d``, ``temperature`` (T), ``r0`` (r0 / r_X),
``mode`` (its name), ``start`` and ``epoch`` (an index, -1 the last); the axes not named are
averaged (the seed axis, usually). A coordinate that is not on the run's grid raises KeyError.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from gzone.analysis import spectral_density
from gzone.analysis import zone as zone_lib
from gzone.runs.schema import Records

Extractor = Callable[[Records], float]
GRIDS = {"radius": "log10_r2_over_rx2", "d": "dims", "temperature": "temperatures", "r0": "r0_over_rx"}


@dataclasses.dataclass(frozen=True)
class Tol:
    """Passes when |now - recorded| <= abs + rel * |recorded|."""

    abs: float
    rel: float
    reason: str

    def bound(self, recorded: float) -> float:
        """The allowed |now - recorded| (+ 1e-9 of it: a decimal edge, 0.52 for 0.50 +- 0.02, passes)."""
        return (self.abs + self.rel * abs(recorded)) * (1 + 1e-9)

    def text(self) -> str:
        parts = ([f"{self.abs:g}"] if self.abs else []) + ([f"{self.rel:.0%}"] if self.rel else [])
        return "+-" + " + ".join(parts)


@dataclasses.dataclass(frozen=True)
class Quantity:
    name: str
    paper: str  # the published value, as text ("-" where the paper gives none)
    recorded: str  # as written in REPRODUCTION.md's section of the claim
    extract: Callable
    tol: Tol

    @property
    def value(self) -> float:
        return float(self.recorded)

    def passes(self, now: float) -> bool:
        """Finite and within the tolerance of the recorded value."""
        return math.isfinite(now) and abs(now - self.value) <= self.tol.bound(self.value)


@dataclasses.dataclass(frozen=True)
class Entry:
    claim: int
    name: str  # the run name (--name); with the experiment, the run folder <workdir>/<experiment>/<name>
    experiment: str  # a module of experiments/ with config_from_argv and run
    flagfile: str  # experiments/flagfiles/<flagfile>.flags
    quantities: tuple[Quantity, ...]
    overrides: tuple[str, ...] = ()
    quick: bool = False
    minutes: float = 0.0  # expected wall time on 2 CPU cores


def _position(records: Records, axis: str, value) -> int:
    if axis == "mode":
        names = list(records.derived["mode_names"])
        if value not in names:
            raise KeyError(f"mode {value!r} not in the run's modes {names}")
        return int(np.flatnonzero(np.asarray(records.arrays["modes"]) == names.index(value))[0])
    if axis not in GRIDS:
        return int(value)  # an index: start, epoch, record, seed
    grid = np.asarray(records.arrays[GRIDS[axis]], float)
    hits = np.flatnonzero(np.isclose(grid, float(value), rtol=1e-6, atol=1e-9))
    if not hits.size:
        raise KeyError(f"{axis} = {value:g} not in the run's grid {[float(f'{g:.6g}') for g in grid]}")
    return int(hits[0])


def select(records: Records, key: str, **at) -> np.ndarray:
    """``arrays[key]`` at the named coordinates (those axes dropped); KeyError if a value is off-grid."""
    axes = list(records.config["axes"][key])
    value = np.asarray(records.arrays[key])
    unknown = set(at) - set(axes)
    if unknown:
        raise KeyError(f"{key} has axes {axes}, not {sorted(unknown)}")
    index = tuple(_position(records, a, at[a]) if a in at else slice(None) for a in axes)
    return value[index]


def _named(fn: Callable, text: str) -> Extractor:
    fn.__name__ = fn.__qualname__ = text
    return fn


def mean(key: str, **at) -> Extractor:
    """The mean of ``arrays[key]`` at ``at`` over the remaining axes (a NaN anywhere gives NaN)."""
    return _named(lambda r: float(np.mean(select(r, key, **at))), f"mean {key} {at}")


def ratio(num: str, den: str, **at) -> Extractor:
    """The mean over the remaining axes of the per-element ratio ``num / den`` at ``at``."""
    def fn(r):
        with np.errstate(all="ignore"):
            return float(np.mean(select(r, num, **at) / select(r, den, **at)))
    return _named(fn, f"mean {num}/{den} {at}")


def extreme(key: str, which: str, **at) -> Extractor:
    """The smallest (``which="min"``) or largest seed mean of ``arrays[key]`` over the radii at ``at``."""
    reduce = {"min": np.min, "max": np.max}[which]
    return _named(lambda r: float(reduce(np.mean(select(r, key, **at), axis=-1))), f"{which} {key} {at}")


def zone(d: int, metric: str, field: str) -> Extractor:
    """A field of the zone summary of a scan (`gzone.analysis.zone.summarise`) for one d and metric:
    peak, peak_x, at_rx, far_inside, far_outside, extent_lo, extent_hi (NaN when there is no zone)."""
    def fn(r):
        rows = [row for row in zone_lib.summarise(r.arrays) if row["d"] == d and row["metric"] == metric]
        if not rows:
            raise KeyError(f"no zone summary for d = {d}, {metric}")
        if field.startswith("extent"):
            ext = rows[0]["extent"]
            return math.nan if ext is None else float(ext[0 if field == "extent_lo" else 1])
        return float(rows[0][field])
    return _named(fn, f"zone d={d} {metric} {field}")


def loss_law(field: str, *, x_min: float = 1.0) -> Extractor:
    """A field of `gzone.analysis.zone.loss_power_law`: p, ci_low, ci_high, inside_mean."""
    return _named(lambda r: float(zone_lib.loss_power_law(r.arrays, x_min=x_min)[field]), f"loss law {field}")


def _field(obj, path: str) -> float:
    for part in path.split("."):
        obj = obj[part]
    return math.nan if obj is None else float(obj)


def row(path: str, *, mode: str, r0: float) -> Extractor:
    """A field (dotted path, e.g. ``alpha.alpha``) of the radius-dynamics analysis row of (mode, r0)."""
    def fn(r):
        for item in r.analysis["rows"]:
            if item["mode"] == mode and math.isclose(item["r0_over_rx"], r0, rel_tol=1e-6):
                return _field(item, path)
        raise KeyError(f"no analysis row for mode {mode}, r0/r_X = {r0:g}")
    return _named(fn, f"row {mode} r0={r0:g} {path}")


def analysis(path: str) -> Extractor:
    """A field (dotted path) of the run's analysis.json, e.g. ``baseline_test_accuracy``."""
    return _named(lambda r: _field(r.analysis, path), f"analysis {path}")


def d_int(kind: str = "grid", stat: str = "estimate") -> Extractor:
    """threshold_dimension's d_int: ``grid`` (first evaluated d reaching the goal) or ``interpolated``."""
    return analysis(f"d_int.{kind}.{stat}")


def diagonal_spread(key: str, *, d: int, degree: int) -> Extractor:
    """The largest max - min, seed by seed, of ``key`` over the cells of a (radius, temperature) map
    that share r^degree / T (cells whose log10(r^degree / T) agree to 1e-6), classes of 2+ cells."""
    def fn(r):
        values = select(r, key, d=d)  # [radius, temperature, seed]
        x = np.asarray(r.arrays["log10_r2_over_rx2"], float)
        log_t = np.log10(np.asarray(r.arrays["temperatures"], float))
        classes: dict[float, list] = {}
        for i, xi in enumerate(x):
            for j, tj in enumerate(log_t):
                classes.setdefault(round(degree * xi / 2 - tj, 6), []).append(values[i, j])
        spreads = [np.ptp(np.stack(cells), axis=0).max() for cells in classes.values() if len(cells) > 1]
        return float(max(spreads)) if spreads else math.nan
    return _named(fn, f"diagonal spread {key} d={d}")


def density(key: str, *, radius: float) -> Extractor:
    """The seed mean (NaN-skipping, as the study's table) at one radius of a statistic of the recorded SLQ
    quadratures of the full Hessian (`gzone.analysis.spectral_density.summary`, edge rank 2 C)."""
    def fn(r):
        stats = spectral_density.summary(r.arrays["density_nodes"][:, 0], r.arrays["density_weights"][:, 0],
                                         D=r.derived["D"],
                                         k=spectral_density.edge_rank(r.derived["num_classes"]))
        return float(np.nanmean(np.asarray(stats[key])[_position(r, "radius", radius)]))
    return _named(fn, f"density {key} radius={radius:g}")


def gordon(path: str, *, target: float, start: str) -> Extractor:
    """A field (dotted path) of threshold_dimension's ``gordon`` analysis row of (target, start), e.g.
    ``measured_threshold`` or ``larsen`` (eq. (4), the mean over the solutions)."""
    def fn(r):
        for item in r.analysis["gordon"]:
            if item["start"] == start and math.isclose(item["target"], target, rel_tol=1e-6):
                return _field(item, path)
        raise KeyError(f"no gordon row for target {target:g}, start {start}")
    return _named(fn, f"gordon target={target:g} {start} {path}")
