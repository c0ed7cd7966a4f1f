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

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import trajectories as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "study": study.TrajectoryOptions,
          "output": config.Output, "processes": config.Processes}


Config = config.config_class(GROUPS, module=__name__)
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the trajectories; prints the summary; returns the run folder."""
    return config.run_study(config_, EXPERIMENT, "study", study.trajectories, log=log, progress=progress)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
