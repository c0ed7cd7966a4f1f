r"""Emergent properties of the local loss geometry (Fort & Ganguli 2019) from the command line: flags ->
`gzone.emergent_geometry`.

Parts (--parts): training (the initialisation and --num_checkpoints snapshots of one full-space run
per seed, log-spaced in step) and radius (points at the radii of --log10_r2_over_rx2 or --radii at
initialisation, drawn by --convention). At every point, on fixed training examples: the clustering
of the logit gradients (q_SLSC / q_SL / q_SLDC / q_DL on C x --gram_per_class examples), the top
--top_k Hessian eigenvalues by Lanczos and the outliers above the bulk, the share of |g|^2 in the
top-j Hessian subspace, the logit variance and |theta| (on --n_hessian examples).

    python -m experiments.emergent_geometry --flagfile=experiments/flagfiles/mnist_emergent_cpu.flags \
        --data_dir=/path/to/npz

Records: <workdir>/emergent_geometry/<name>/: units train (epoch checkpoints inside; the measured
thetas), ckpt_<i> and radius_<i> (all seeds); arrays.npz (train_<key> [checkpoint, seed, ...],
radius_<key> [radius, seed, ...], training curves); analysis.json (outlier counts by both rules,
means); figures. Run the same command again to resume.
"""

from __future__ import annotations

import dataclasses

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import emergent_geometry as study

EXPERIMENT = study.EXPERIMENT


@dataclasses.dataclass(frozen=True, kw_only=True)
class RadiusGrid(config.RadiusGrid):
    """The radius flags, needed by --parts=radius only."""

    radii_required = False


GROUPS = {"data": config.Data, "model": config.Model, "radii": RadiusGrid, "study": study.EmergentOptions,
          "output": config.Output, "processes": config.Processes}


Config = config.config_class(GROUPS, module=__name__, radii_into="study")
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the measurements; prints the summary; returns the run folder."""
    return config.run_study(config_, EXPERIMENT, "study", study.emergent_geometry, log=log, progress=progress)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
