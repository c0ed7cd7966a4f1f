"""What a library call returns: the run's arrays with named axes, its settings, figures and a folder.

    result.arrays["frac_pos"]       numpy arrays, axes in result.axes (`schema`)
    result.table()                  the summary the command line prints
    result.plot("figures/")         the experiment's figures (drawn from these records only)
    result.save("runs/my_scan")     the command line's run-folder format (resumable, replottable)

Each experiment's result type (e.g. `gzone.ScanResult`) adds its own table and accessors.
"""

from __future__ import annotations

import os

import numpy as np

from gzone.runs import schema, stores


class Result:
    """A finished run (see module docstring).

    Attributes:
      experiment: the experiment's name.
      arrays: dict of numpy arrays, axes named in `axes`.
      axes: dict array name -> list of axis names.
      settings: what the run computed (options, model identity, data fingerprint).
      derived: values computed from the settings (r_X, D, radii, ...).
      analysis: the experiment's summary statistics (analysis.json), or None.
      path: the run folder it was computed in, or None.
    """

    def __init__(self, store: stores.MemoryStore, arrays: dict, analysis: dict | None = None):
        self._store = store
        self.experiment = store.experiment
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.axes, self.settings, self.derived = store.axes, store.settings, store.derived
        self.analysis = analysis
        self.path = store.path
        schema.check(self.config, self.arrays, f"{self.experiment} result")

    @property
    def config(self) -> dict:
        """The run's config.json contents (experiment, schema, settings, derived, axes)."""
        return {"experiment": self.experiment, "schema": schema.VERSION, "settings": self.settings,
                "derived": self.derived, "axes": self.axes, "status": "complete"}

    @property
    def D(self) -> int:
        return int(self.derived["D"])

    @property
    def r_x(self) -> float:
        return float(self.derived["r_x"])

    def table(self) -> str:
        raise NotImplementedError

    def plot(self, path: str) -> list[str]:
        """Draws the experiment's figures into folder `path` (created if needed); returns the files."""
        from gzone import plots

        os.makedirs(path, exist_ok=True)
        return plots.draw_records(path, schema.Records(self.path, self.config, self.arrays, self.analysis))

    def save(self, run_dir: str, *, overwrite: bool = False) -> str:
        """Writes the run as a run folder (config.json, metrics.jsonl, units/, arrays.npz, analysis.json)."""
        return stores.write_folder(os.fspath(run_dir), self._store, self.arrays, overwrite=overwrite)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in list(self.arrays.items())[:6])
        return f"<{type(self).__name__} {self.experiment}: {shapes}{', ...' if len(self.arrays) > 6 else ''}>"
