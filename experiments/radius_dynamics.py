r"""Radius dynamics (full-space training from radii r0, free or fixed): flags -> `gzone.radius_dynamics`.

The poster's experiment (CIFAR-10, MLP 3072-200-200-10, Adam): from r0 < r_X the radius grows like
sqrt(t) and a good solution appears near r_X; from r0 > r_X the radius barely moves and training
fails; at fixed radius (radial part of the gradient removed, radius renormalised every step)
only r0 near r_X trains well.

    python -m experiments.radius_dynamics --flagfile=experiments/flagfiles/cifar10_chang_cpu.flags \
        --data_dir=/path/to/npz

Records r(t) every --record_every steps and test accuracy per epoch; fits, per r0 < r_X, the
exponent alpha of r(t)^2 - r0^2 ~ t^alpha, and compares with the random-walk model
<|r(t)|^2> = r0^2 + D sigma^2 t (sigma^2 from the measured update sizes). Records go to
<workdir>/radius_dynamics/<name>/ (a unit per (mode, r0), analysis.json, radius_dynamics.png).
Resumes after a kill at epoch granularity (--epochs_per_call): run the same command again.
"""

from __future__ import annotations

import dataclasses

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import radius_dynamics as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "dynamics": study.RadiusDynamicsOptions,
          "output": config.Output, "processes": config.Processes}


@dataclasses.dataclass(frozen=True)
class Config:
    data: config.Data
    model: config.Model
    dynamics: study.RadiusDynamicsOptions
    output: config.Output
    processes: config.Processes
    flags_text: str


def config_from_argv(argv: list[str]) -> Config:
    """The flags (e.g. ``["--flagfile=experiments/flagfiles/cifar10_chang.flags"]``) as a checked Config."""
    return Config(**config.parse(argv, **GROUPS))


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the radius dynamics; prints the analysis table; returns the run folder."""
    c = config_
    c.processes.initialize()
    config.enable_x64_if(c.dynamics.dtype)
    dataset = c.data.load()
    module = c.model.build(dataset.num_classes)
    label = f"{dataset.name}_{c.model.label}_{c.model.activation}"
    name = config.default_name(label, c.data, c.model, c.dynamics)
    folder = c.output.folder(EXPERIMENT, name, c.flags_text, context={"dataset": dataset.describe()})
    train, test = (dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)
    result = study.radius_dynamics(module, train, test, run_dir=folder, log=progress,
                                   **dataclasses.asdict(c.dynamics))
    return c.output.report(result, log)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
