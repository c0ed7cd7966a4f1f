r"""Training confined to random hyperplanes / hyperspheres: flags -> `gzone.train_subspace`.

Fort & Scherlis (2019): hyperplanes through points at radius r train well for r up to about r_X;
hyperspheres (|theta| = r fixed) only near r_X. For each mode, d, radius and seed: a point a at
radius r (same conventions and radius flags as the radius scan), a random d-dimensional
subspace, and a training run of z in R^d (theta = a + P z, or its normalised hypersphere form).

    python -m experiments.train_subspace --flagfile=experiments/flagfiles/mnist_subspace.flags \
        --data_dir=/path/to/npz

Records: <workdir>/train_subspace/<name>/ (a unit per (mode, d, radius) with all seeds; epoch
checkpoints inside a unit), arrays.npz with axes [mode, d, radius, seed(, epoch(, record))],
figure subspace_training.png. Run the same command again after an interruption to resume.
"""

from __future__ import annotations

import dataclasses

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import train_subspace as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "radii": config.RadiusGrid,
          "training": study.TrainSubspaceOptions, "output": config.Output, "processes": config.Processes}


@dataclasses.dataclass(frozen=True)
class Config:
    data: config.Data
    model: config.Model
    radii: config.RadiusGrid
    training: study.TrainSubspaceOptions
    output: config.Output
    processes: config.Processes
    flags_text: str


def config_from_argv(argv: list[str]) -> Config:
    """The flags (e.g. ``["--flagfile=experiments/flagfiles/mnist_subspace.flags"]``) as a checked Config."""
    return Config(**config.parse(argv, extra={"training": lambda built: built["radii"].kwargs()}, **GROUPS))


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the subspace training; prints its summary; returns the run folder."""
    c = config_
    c.processes.initialize()
    config.enable_x64_if(c.training.dtype)
    dataset = c.data.load()
    module = c.model.build(dataset.num_classes)
    label = f"{dataset.name}_{c.model.label}_{c.model.activation}"
    name = config.default_name(label, c.data, c.model, c.radii, c.training)
    folder = c.output.folder(EXPERIMENT, name, c.flags_text, context={"dataset": dataset.describe()})
    train, test = (dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)
    result = study.train_subspace(module, train, test, run_dir=folder, log=progress,
                                  **dataclasses.asdict(c.training))
    return c.output.report(result, log)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
