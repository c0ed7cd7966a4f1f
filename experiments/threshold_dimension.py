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

import dataclasses

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import threshold_dimension as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "options": study.ThresholdOptions,
          "output": config.Output, "processes": config.Processes}


@dataclasses.dataclass(frozen=True)
class Config:
    data: config.Data
    model: config.Model
    options: study.ThresholdOptions
    output: config.Output
    processes: config.Processes
    flags_text: str


def config_from_argv(argv: list[str]) -> Config:
    """The flags (e.g. ``["--flagfile=experiments/flagfiles/mnist_dint_cpu.flags"]``) as a checked Config."""
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
    result = study.threshold_dimension(module, train, test, run_dir=folder, log=progress,
                                       **dataclasses.asdict(c.options))
    return c.output.report(result, log)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
