r"""Convexity-selected initialisations (Fort & Scherlis 2019) from the command line -> `gzone.init_selection`.

Draw K = --num_inits initialisations (--init sample, placed by --convention at --r_over_rx r_X), score
each on --n_score fixed training examples (the exact d-dimensional subspace Hessian's Tr(H)/||H||_F and
fraction of positive eigenvalues, the full-space Tr(H)/||H||_F by --num_probes probes, the initial loss),
pick the --num_selected best by --score and as many bottom-scored (or random, --compare) ones, train each
from the same initial point with --num_seeds batch orders for the same budget (--epochs), and compare the
two groups by a two-sided Mann-Whitney U test with the rank-biserial effect size, and on per-init means
by Welch's t-test with a 95 % interval of the difference top - other.

    python -m experiments.init_selection --flagfile=experiments/flagfiles/mnist_init_selection_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/init_selection/<name>/: units score_b<j>, train_top and train_other (epoch
checkpoints inside); arrays.npz (scores [init], training results [group, init, seed, ...]);
analysis.json (selection, tests, Spearman correlations of score and outcome); figure init_selection.png.
Run the same command again after an interruption to resume.
"""

from __future__ import annotations

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import init_selection as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "options": study.SelectionOptions,
          "output": config.Output, "processes": config.Processes}


Config = config.config_class(GROUPS, module=__name__)
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the study; prints its summary; returns the run folder."""
    return config.run_study(config_, EXPERIMENT, "options", study.init_selection, log=log, progress=progress)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
