r"""Redraws a run's figures from its records (never recomputes).

    python -m experiments.plot --run_dir=runs/radius_scan/quick
"""

from __future__ import annotations

import os

from absl import flags

from experiments import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "A run folder holding config.json and arrays.npz.")


def main(argv):
    del argv
    from gzone import plots

    if not FLAGS.run_dir:
        raise cli.UsageError("run_dir", "required: a run folder")
    for name in ("config.json", "arrays.npz"):
        if not os.path.exists(os.path.join(FLAGS.run_dir, name)):
            raise cli.UsageError("run_dir", f"{FLAGS.run_dir} has no {name} (is the run complete?)")
    try:
        figures = plots.draw(FLAGS.run_dir)
    except ValueError as err:
        raise cli.UsageError("run_dir", str(err)) from None
    for figure in figures:
        print(f"figure: {figure}")


if __name__ == "__main__":
    cli.run(main)
