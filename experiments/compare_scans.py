r"""Overlays finished radius scans (e.g. widths and depths, activations, datasets): one figure and
a table of the zone's peak, value at r_X and extent per run (never recomputes).

    python -m experiments.compare_scans \
        --run_dirs=runs/radius_scan/mnist_fs,runs/radius_scan/mnist_arch_200x3 \
        --labels=200x2,200x3 --d=100 --out=runs/compare_depth.png

Each run is read from its config.json and arrays.npz; the curves are seed means with a min..max band
against log10(r^2/r_X^2) (each run in units of its own r_X). The table (`gzone.analysis.zone.summarise`) is
printed and written as JSON next to the figure.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from experiments import cli, config
from gzone import options
from gzone.options import option


@dataclasses.dataclass(frozen=True, kw_only=True)
class Compare(options.Group):
    run_dirs: tuple[str, ...] | None = option(
        None, "Finished radius_scan run folders (config.json and arrays.npz).", kind="strs"
    )
    labels: tuple[str, ...] | None = option(
        None, "One legend label per run (default: the run folder names).", kind="strs"
    )
    d: int | None = option(
        None, "Subspace dimension to compare; every run must have scanned it.", kind="int", minimum=1
    )
    out: str | None = option(None, "Figure path (.png); the table goes next to it as .json.", kind="str")
    title: str | None = option(None, "Figure title (default: the dimension).", kind="str")


GROUPS = {"compare": Compare}


def config_from_argv(argv: list[str]) -> Compare:
    return config.parse(argv, **GROUPS)["compare"]


def load_runs(run_dirs, labels, d):
    """[(label, config, arrays, d index)] with clear errors for anything a comparison cannot use."""
    from gzone.runs import schema

    if not run_dirs:
        raise config.UsageError("run_dirs", "required: one or more radius_scan run folders")
    labels = labels or [os.path.basename(os.path.normpath(p)) for p in run_dirs]
    if len(labels) != len(run_dirs):
        raise config.UsageError("labels", f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = []
    for path, label in zip(run_dirs, labels):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise config.UsageError("run_dirs", f"{path} has no config.json (is it a run folder?)")
        try:
            rec = schema.read(path)
        except ValueError as err:
            raise config.UsageError("run_dirs", str(err)) from None
        if rec.experiment != "radius_scan":
            raise config.UsageError("run_dirs", f"{path} is a {rec.experiment!r} run, not a radius_scan")
        dims = [int(v) for v in rec.arrays["dims"]]
        if d not in dims:
            raise config.UsageError("d", f"{path} scanned d in {dims}, not {d}")
        arrays = rec.arrays
        if "temperatures" in arrays:  # a scan with a temperature axis: compared at T = 1
            temps = [float(t) for t in arrays["temperatures"]]
            if 1.0 not in temps:
                raise config.UsageError("run_dirs", f"{path} has a temperature axis without T = 1: {temps}")
            arrays = schema.take(arrays, rec.config["axes"], "temperature", temps.index(1.0))
        runs.append((label, rec.config, arrays, dims.index(d)))
    return runs


def summary_rows(runs, d) -> list[dict]:
    from gzone.analysis import zone

    rows = []
    for label, run_config, arrays, _ in runs:
        for row in zone.summarise(arrays):
            if row["d"] == d:
                rows.append({"run": label, "model": run_config.get("derived", {}).get("model"), **row})
    return rows


def table(rows) -> str:
    head = f"{'run':<14} {'metric':<16} {'peak':>13} {'at x':>6} {'at r_X':>13} {'zone x-range':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ext = "none" if r["extent"] is None else f"[{r['extent'][0]:+.1f}, {r['extent'][1]:+.1f}]"
        lines.append(
            f"{r['run']:<14} {r['metric']:<16} {r['peak']:>6.3f}+-{r['peak_std']:<5.3f} {r['peak_x']:>+6.1f} "
            f"{r['at_rx']:>6.3f}+-{r['at_rx_std']:<5.3f} {ext:>14}"
        )
    return "\n".join(lines)


def figure(runs, d, out, title=None) -> str:
    from matplotlib.figure import Figure

    from gzone import plots

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    for i, (label, _, arrays, di) in enumerate(runs):
        x = np.asarray(arrays["log10_r2_over_rx2"], float)
        seeds = arrays["frac_pos"].shape[-1]
        for ax, key in ((ax1, "frac_pos"), (ax2, "trace_over_frob")):
            plots.band(ax, x, arrays[key][:, di, :], label=f"{label} ({seeds} seeds)", color=f"C{i}")
    ax1.axhline(0.5, color="grey", lw=0.8)
    ax2.axhline(0.0, color="grey", lw=0.8)
    ax1.set_ylabel("fraction of positive eigenvalues")
    ax2.set_ylabel(r"$\mathrm{Tr}(H)/\|H\|_F$")
    plots.radius_axes((ax1, ax2), legend=False)
    ax1.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"subspace Hessian at d = {d}: seed mean, min..max band", fontsize=9)
    return plots.save(fig, out)


def run(c: Compare, log=print) -> list[dict]:
    """Prints the table, writes the figure and the table as JSON; returns the table's rows."""
    if c.d is None:
        raise config.UsageError("d", "required: a subspace dimension >= 1 that every run scanned")
    if not c.out or not c.out.endswith(".png"):
        raise config.UsageError("out", "required: a .png path")
    runs = load_runs(c.run_dirs, c.labels, c.d)
    rows = summary_rows(runs, c.d)
    log(table(rows))
    os.makedirs(os.path.dirname(os.path.abspath(c.out)), exist_ok=True)
    log(f"figure: {figure(runs, c.d, c.out, c.title)}")
    with open(os.path.splitext(c.out)[0] + ".json", "w") as fh:
        json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
