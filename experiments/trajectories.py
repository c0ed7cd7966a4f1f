r"""Weight-space trajectories (Lipton 2016) from the command line: flags -> `gzone.trajectories`.

Groups of full-space training runs, each keeping theta every --snapshot_every steps: single (a) one
model; inits (b) S models from different initialisations; orders (c) S models from one
initialisation with different batch orders; clones (d) one model cloned S times after --clone_epoch
epochs. Per group: PCA of the joint trajectory, the loss surface on the PC1-PC2 plane, distances
between solutions, loss and radius along straight lines with barriers, the random-walk link.

    python -m experiments.trajectories --flagfile=experiments/flagfiles/mnist_trajectories_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/trajectories/<name>/: units train_<group> (epoch checkpoints inside) and
analysis_<group>; snapshots/<unit>/e<epoch>.npy ([S, n_snap, D] floats, one file per epoch);
arrays.npz with keys <group>_<array>; analysis.json; figures pca.png, loss_surface.png,
interpolation.png, distances.png, radius.png. Run the same command again to resume.
"""

from __future__ import annotations

import dataclasses

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import trajectories as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "study": study.TrajectoryOptions,
          "output": config.Output, "processes": config.Processes}


@dataclasses.dataclass(frozen=True)
class Config:
    data: config.Data
    model: config.Model
    study: study.TrajectoryOptions
    output: config.Output
    processes: config.Processes
    flags_text: str


def config_from_argv(argv: list[str]) -> Config:
    """The flags (e.g. ``["--flagfile=experiments/flagfiles/trajectories_smoke.flags"]``), checked."""
    return Config(**config.parse(argv, **GROUPS))


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the trajectories; prints the summary; returns the run folder."""
    c = config_
    c.processes.initialize()
    config.enable_x64_if(c.study.dtype)
    dataset = c.data.load()
    module = c.model.build(dataset.num_classes)
    name = config.default_name(f"{dataset.name}_{c.model.label}", c.data, c.model, c.study)
    folder = c.output.folder(EXPERIMENT, name, c.flags_text, context={"dataset": dataset.describe()})
    result = study.trajectories(module, (dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test),
                                run_dir=folder, log=progress, **dataclasses.asdict(c.study))
    return c.output.report(result, log)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
