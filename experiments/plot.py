r"""Redraws a run's figures from its records (never recomputes).

    python -m experiments.plot --run_dir=runs/radius_scan/quick
"""

from __future__ import annotations

import dataclasses
import os

from experiments import cli, config
from gzone import options
from gzone.options import option


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plot(options.Group):
    run_dir: str | None = option(None, "A finished run folder (config.json and arrays.npz).", kind="str")


GROUPS = {"plot": Plot}


def config_from_argv(argv: list[str]) -> Plot:
    return config.parse(argv, **GROUPS)["plot"]


def run(c: Plot, log=print) -> list[str]:
    from gzone import plots

    if not c.run_dir:
        raise config.UsageError("run_dir", "required: a run folder")
    if not os.path.exists(os.path.join(c.run_dir, "config.json")):
        raise config.UsageError("run_dir", f"{c.run_dir} has no config.json (is it a run folder?)")
    try:
        figures = plots.draw(c.run_dir)
    except ValueError as err:
        raise config.UsageError("run_dir", str(err)) from None
    for figure in figures:
        log(f"figure: {figure}")
    return figures


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
