"""The units of a radius scan (`gzone.studies.radius_scan`): their names, their assembly into the
schema's arrays and their progress lines."""

from __future__ import annotations

import numpy as np

from gzone.analysis import zone
from gzone.runs import engine as engine_lib
from gzone.runs import schema


def unit_name(ri: int, d: int, ti: int | None = None) -> str:
    return f"r{ri:03d}_d{d}" if ti is None else f"r{ri:03d}_d{d}_t{ti:02d}"


def t_indices(temps) -> list:
    return [None] if temps is None else list(range(len(temps)))


def assemble(
    engine: engine_lib.Engine, dims, radii, log10_rel, scalars=(), per_d=(), per_k=(), temps=None
) -> dict:
    """The units stacked into the schema's arrays (a temperature axis before the seeds with `temps`).

    ``scalars`` and ``per_k`` (any keys shaped [seed, ...]: [k]-vectors, the density's [probe, node])
    become [radius, d, (temperature,) seed, ...]; ``per_d`` keys ``<key>_d<d>`` [radius, ...].
    """
    R, T = range(len(radii)), t_indices(temps)
    units = {(ri, d, ti): engine.unit(unit_name(ri, d, ti), _missing) for ri in R for d in dims for ti in T}

    def per_t(get):  # [T, ...] stacked, or the one value without a temperature axis
        return get(None) if temps is None else np.stack([get(ti) for ti in T])

    arrays = {
        k: np.stack([np.stack([per_t(lambda ti: units[ri, d, ti][k]) for d in dims]) for ri in R])
        for k in (*schema.SCAN_SCALARS, *scalars, *per_k)
    }
    for d in dims:
        arrays[f"eigvals_d{d}"] = np.stack([per_t(lambda ti: units[ri, d, ti]["eigvals"]) for ri in R])
        for k in per_d:
            arrays[f"{k}_d{d}"] = np.stack([per_t(lambda ti: units[ri, d, ti][k]) for ri in R])
    arrays.update(radii=np.asarray(radii), log10_r2_over_rx2=np.asarray(log10_rel), dims=np.asarray(dims))
    if temps is not None:
        arrays["temperatures"] = np.asarray(temps, np.float64)
    return arrays


def _missing():
    raise RuntimeError("a unit of the scan is missing at assembly")


def progress_line(record: dict) -> str:
    m = record["mean"]
    at = f" T={record['temperature']:.3g}" if "temperature" in record else ""
    line = (
        f"d={record['d']} log10(r^2/r_X^2)={record['log10_r2_over_rx2']:+.2f}{at}: frac+ "
        f"{zone.fmt(m['frac_pos'])}, Tr/||H|| {zone.fmt(m['trace_over_frob'])}"
    )
    if "gn_trace_over_frob" in m:
        line += (
            f", G Tr/||G|| {zone.fmt(m['gn_trace_over_frob'])}, R frac+ {zone.fmt(m['res_frac_pos'])} "
            f"Tr/||R|| {zone.fmt(m['res_trace_over_frob'])}"
        )
    if "full_trace_over_frob" in m:
        line += f", full Tr/||H|| {zone.fmt(m['full_trace_over_frob'])}"
    if "density_top" in record:
        top, trace = zone.fmt(record["density_top"]), f"{record['density_trace'] or float('nan'):.3e}"
        line += f", density: top Ritz {top}, Tr(H)/D {trace}"
    return line


def density_means(nodes, weights) -> dict:
    """A unit's metrics-line values of its density quadratures [seed, probe, node]: the means over seeds
    of the top Ritz value and of Tr(H) / D."""
    top = np.max(np.asarray(nodes, np.float64), axis=(-2, -1))
    trace = np.mean(np.sum(np.asarray(weights, np.float64) * nodes, -1), -1)
    return {"density_top": _mean(top), "density_trace": _mean(trace)}


def _mean(values) -> float | None:
    return float(np.nanmean(values)) if np.isfinite(values).any() else None
