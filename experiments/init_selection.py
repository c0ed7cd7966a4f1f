r"""Convexity-selected initialisations (Fort & Scherlis 2019) from the command line -> `gzone.init_selection`.

Draw K = --num_inits initialisations (--init sample, placed by --convention at --r_over_rx r_X), score
each on --n_score fixed training examples (the exact d-dimensional subspace Hessian's Tr(H)/||H||_F and
fraction of positive eigenvalues, the full-space Tr(H)/||H||_F by --num_probes probes, the initial loss),
pick the --num_selected best by --score and as many bottom-scored (or random, --compare) ones, train each
from the same initial point with --num_seeds batch orders for the same budget (--epochs), and compare the
two groups by a two-sided Mann-Whitney U test with the rank-biserial effect size.

    python -m experiments.init_selection --flagfile=experiments/flagfiles/mnist_init_selection_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/init_selection/<name>/: units score_b<j>, train_top and train_other (epoch
checkpoints inside); arrays.npz (scores [init], training results [group, init, seed, ...]);
analysis.json (selection, tests, Spearman correlations of score and outcome); figure init_selection.png.
Run the same command again after an interruption to resume.
"""

from __future__ import annotations

import dataclasses

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import init_selection as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "options": study.SelectionOptions,
          "output": config.Output, "processes": config.Processes}


@dataclasses.dataclass(frozen=True)
class Config:
    data: config.Data
    model: config.Model
    options: study.SelectionOptions
    output: config.Output
    processes: config.Processes
    flags_text: str


def config_from_argv(argv: list[str]) -> Config:
    """The flags (e.g. ``["--flagfile=experiments/flagfiles/init_selection_smoke.flags"]``) as a Config."""
    return Config(**config.parse(argv, **GROUPS))


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the study; prints its summary; returns the run folder."""
    c = config_
    c.processes.initialize()
    config.enable_x64_if(c.options.dtype)
    dataset = c.data.load()
    module = c.model.build(dataset.num_classes)
    name = config.default_name(f"{dataset.name}_{c.model.label}", c.data, c.model, c.options)
    folder = c.output.folder(EXPERIMENT, name, c.flags_text, context={"dataset": dataset.describe()})
    train, test = (dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)
    result = study.init_selection(module, train, test, run_dir=folder, log=progress,
                                  **dataclasses.asdict(c.options))
    return c.output.report(result, log)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
