r"""The Goldilocks radius scan (Fort & Scherlis 2019) from the command line: flags -> `gzone.radius_scan`.

For each radius r, subspace dimension d and seed: a point theta with |theta| = r, a random
d-dimensional subspace through it, and at theta the loss, accuracy, gradient and the exact d x d
Hessian of the loss restricted to the subspace, on --n_hessian fixed training examples.

    python -m experiments.radius_scan --flagfile=experiments/flagfiles/quick.flags

Records go to <workdir>/radius_scan/<name>/ (config.json, flags.txt, metrics.jsonl with a line per
completed (radius, d) unit, arrays.npz with axes [radius, d, seed], figures). Run the same command
again after an interruption to resume.
"""

from __future__ import annotations

import dataclasses

from experiments import cli, config
from gzone import options, seeds
from gzone.options import option
from gzone.runs.progress import to_stderr
from gzone.studies import radius_scan as study

EXPERIMENT = study.EXPERIMENT


@dataclasses.dataclass(frozen=True, kw_only=True)
class Examples(options.Group):
    n_hessian: int = option(
        1000, "Number of fixed training examples for loss, gradient and Hessian.", minimum=1
    )


GROUPS = {
    "data": config.Data,
    "model": config.Model,
    "radii": config.RadiusGrid,
    "examples": Examples,
    "scan": study.ScanOptions,
    "output": config.Output,
    "processes": config.Processes,
}


Config = config.config_class(GROUPS, module=__name__, radii_into="scan")
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the scan; prints its summary; returns the run folder."""
    c = config_

    def hessian_examples(dataset) -> dict:
        n = dataset.x_train.shape[0]
        if c.examples.n_hessian > n:
            raise config.UsageError("n_hessian", f"{c.examples.n_hessian} exceeds the {n} training examples")
        return {"hessian_examples": seeds.pick_examples(seeds.SeedKeys.from_seed(c.scan.seed).k_data, n,
                                                        c.examples.n_hessian)}

    p = config.prepare(c, EXPERIMENT, "scan", activation_in_name=True, context=hessian_examples)
    index = p.context["hessian_examples"]
    result = study.radius_scan(p.module, p.train[0][index], p.train[1][index], run_dir=p.folder, log=progress,
                               **p.options)
    return c.output.report(result, log)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
