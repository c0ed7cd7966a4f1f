"""Shared pieces of the figures: bands over seeds, the r_X marker, radius axes, titles, saving."""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib.figure import Figure


def save(fig: Figure, path: str, dpi: int = 110) -> str:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def band(ax, x, values, *, label, color=None, axis=-1, log_y=False):
    """Mean over `axis` as a line, min..max over it as a band; NaNs ignored."""
    values = np.asarray(values, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if log_y:
            mean = np.exp(np.nanmean(np.log(values), axis=axis))
        else:
            mean = np.nanmean(values, axis=axis)
        lo, hi = np.nanmin(values, axis=axis), np.nanmax(values, axis=axis)
    (line,) = ax.plot(x, mean, marker="o", ms=3, label=label, color=color)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color(), lw=0)
    return line


def mark_rx(ax, x=0.0, label="$r_X$"):
    ax.axvline(x, color="k", ls=":", lw=1)
    ymin, ymax = ax.get_ylim()
    ax.text(x, ymax, f" {label}", va="top", ha="left", fontsize=8)


def radius_axes(axes, *, legend_size=8, legend=True) -> None:
    """x label log10(r^2/r_X^2), grid, r_X marked and a legend on each of `axes`."""
    for ax in axes:
        ax.set_xlabel(r"$\log_{10}(r^2 / r_X^2)$")
        ax.grid(alpha=0.3)
        mark_rx(ax)
        if legend:
            ax.legend(fontsize=legend_size, loc="best")


def title_of(config: dict) -> str:
    derived = config.get("derived", {})
    dataset = derived.get("dataset", {}).get("name", config.get("settings", {}).get("dataset", "?"))
    return f"{derived.get('model', '?')} on {dataset}, D = {derived.get('D', '?')}"
