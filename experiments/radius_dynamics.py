r"""Radius dynamics (full-space training from radii r0, free or fixed): flags -> `gzone.radius_dynamics`.

The poster's experiment (CIFAR-10, MLP 3072-200-200-10, Adam): from r0 < r_X the radius grows like
sqrt(t) and a good solution appears near r_X; from r0 > r_X the radius barely moves and training
fails; at fixed radius (radial part of the gradient removed, radius renormalised every step)
only r0 near r_X trains well.

    python -m experiments.radius_dynamics --flagfile=experiments/flagfiles/cifar10_chang_cpu.flags \
        --data_dir=/path/to/npz

The poster's own protocol (isotropic initial points, r_X = sqrt(units after the input), inputs in
[-1, 1]): --convention=isotropic --reference_radius=units --input_scaling=unit_range, as in
cifar10_chang_poster_cpu.flags.

Records r(t) every --record_every steps and test accuracy per epoch; fits, per r0 < r_X, the
exponent alpha of r(t)^2 - r0^2 ~ t^alpha, and compares with the random-walk model
<|r(t)|^2> = r0^2 + D sigma^2 t (sigma^2 from the measured update sizes; for Adam also sigma = lr).
Records go to <workdir>/radius_dynamics/<name>/ (a unit per (mode, r0), analysis.json, radius_dynamics.png).
Resumes after a kill at epoch granularity (--epochs_per_call): run the same command again.
"""

from __future__ import annotations

from experiments import cli, config
from gzone.runs.progress import to_stderr
from gzone.studies import radius_dynamics as study

EXPERIMENT = study.EXPERIMENT
GROUPS = {"data": config.Data, "model": config.Model, "dynamics": study.RadiusDynamicsOptions,
          "output": config.Output, "processes": config.Processes}


Config = config.config_class(GROUPS, module=__name__)
config_from_argv = Config.from_argv


def run(config_: Config, *, log=print, progress=to_stderr) -> str:
    """Runs (or resumes) the radius dynamics; prints the analysis table; returns the run folder."""
    return config.run_study(config_, EXPERIMENT, "dynamics", study.radius_dynamics,
                            log=log, progress=progress, activation_in_name=True)


if __name__ == "__main__":
    cli.main(config_from_argv, run, groups=GROUPS, doc=__doc__)
