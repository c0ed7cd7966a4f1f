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

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import train_subspace as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "radii": config.RadiusGrid,
          "training": study.TrainSubspaceOptions, "output": config.Output, "processes": config.Processes}


Config = config.config_class(GROUPS, module=__name__, radii_into="training")
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the subspace training; prints its summary; returns the run folder."""
    return config.run_study(config_, EXPERIMENT, "training", study.train_subspace,
                            log=log, progress=progress, activation_in_name=True)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
