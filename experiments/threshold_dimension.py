r"""Degrees of freedom from the command line: flags -> `gzone.threshold_dimension`.

Success probability P_s(d) of training in random d-dimensional subspaces, the threshold training
dimension d* (the smallest d with P_s(d) >= 1 - delta, by adaptive search on a log grid of d),
the intrinsic dimension d_int90 against a full-space baseline (bootstrap over seeds), from the
initialisation, burn-in points and lottery subspaces (Li et al. 2018; Larsen, Fort, Becker &
Ganguli 2021).

    python -m experiments.threshold_dimension --flagfile=experiments/flagfiles/mnist_threshold_cpu.flags \
        --data_dir=/path/to/npz --workdir=/path/to/runs

Records: <workdir>/threshold_dimension/<name>/ (config.json, flags.txt, metrics.jsonl, units/,
arrays.npz with axes [target, start, d, seed, ...], analysis.json, figures). Run the same command
again after an interruption to resume: the searches replay from the saved units.
"""

from __future__ import annotations

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import threshold_dimension as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "options": study.ThresholdOptions,
          "output": config.Output, "processes": config.Processes}


Config = config.config_class(GROUPS, module=__name__)
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the study; prints its summary; returns the run folder."""
    return config.run_study(config_, EXPERIMENT, "options", study.threshold_dimension,
                            log=log, progress=progress)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
