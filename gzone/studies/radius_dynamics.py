r"""Radius dynamics: full-space training from initial radii r0, free or at fixed radius, as one library call.

    result = gzone.radius_dynamics(model, (x_train, y_train), (x_test, y_test), r0_over_rx=[0.1, 1, 10],
                                   epochs=2, batch_size=32)
    result.analysis["rows"]          # alpha fits and the random-walk comparison per (mode, r0)

The poster's experiment (CIFAR-10, MLP 3072-200-200-10, Adam): from r0 < r_X the radius grows like
sqrt(t) and a good solution appears near r_X; from r0 > r_X the radius barely moves and training
fails; at fixed radius (radial part of the gradient and of the update removed, theta renormalised
to r0 every step, `train.TrainSpec.fixed_radius`) only r0 near r_X trains well. A unit of the run
is one (mode, r0) with all seeds as one compiled call (`train.seed_runner`), trained chunk by
chunk with a checkpoint after each (`Engine.fit`).

Trainability across the zone (Vysogorets, Dawid & Kempe 2024): ``full_batch`` makes every step a
gradient on all training examples (with ``optimizer="sgd"``: full-batch gradient descent) and
``lr_radius_power`` p scales the learning rate at each initial radius to lr (r0 / r_X)^-p. For a
positively homogeneous network of degree L at weight scale alpha = r0 / r_X, the gradient scales as
alpha^(L-1) and so the relative step |dtheta| / |theta| as lr alpha^(L-2): p = L - 2 keeps it
independent of the scale, their protocol. A compile per learning rate.

The poster's own protocol differs from gzone's defaults in three choices, each an option:
``convention="isotropic"`` (all D parameters, biases included, ~ N(0, 1), rescaled to |theta| = r0),
``reference_radius="units"`` (r_X = sqrt(number of units after the input), `models.units_radius`,
instead of the Xavier radius) and the data option ``input_scaling=unit_range`` (pixels to [-1, 1]).

Records (`schema.radius_dynamics_axes`): r(t), |dtheta|^2, train loss and accuracy every
``record_every`` steps, test loss and accuracy per epoch; analysis.json (`analysis.dynamics.summarise`):
per r0 < r_X the exponent alpha of r(t)^2 - r0^2 ~ t^alpha and the random-walk model
<|r(t)|^2> = r0^2 + D sigma^2 t, with sigma^2 from the measured update sizes and, for Adam, with
sigma = lr (`dynamics.adam_walk_r2`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gzone import models, options, seeds, subspace
from gzone import problem as problem_lib
from gzone import train as train_lib
from gzone.analysis import dynamics
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores

EXPERIMENT = "radius_dynamics"
REFERENCE_RADII = ("xavier", "units")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RadiusDynamicsOptions(
    options.Points, options.Training, options.Objective, options.Seeds, options.Precision
):
    """The options of radius dynamics (keyword arguments of `radius_dynamics`)."""

    r0_over_rx: tuple[float, ...] = option((0.01, 0.1, 1.0, 10.0, 100.0), "Initial radii r0 in units of r_X.")
    radius_modes: tuple[str, ...] = option(
        schema.RADIUS_MODES,
        "free: ordinary training; fixed: |theta| held at r0.",
        choices=schema.RADIUS_MODES,
    )
    full_batch: bool = option(
        False, "Every step on all training examples (batch_size ignored; an epoch is one step)."
    )
    lr_radius_power: float = option(
        0.0,
        "Learning rate lr (r0 / r_X)^-p at each initial radius r0 (p = L - 2 for a homogeneous net of L "
        "layers: Vysogorets et al.'s full-batch protocol); 0: lr at every r0.",
    )
    reference_radius: str = option(
        "xavier",
        "The r_X of r0_over_rx and of the reported radii: xavier: the Xavier radius sqrt(E|theta|^2); "
        "units: sqrt(number of units of the layers after the input), sqrt(sum of kernel size / fan_in) "
        "(the poster's).",
        choices=REFERENCE_RADII,
        setting="changed",
    )
    num_seeds: int = options.override(options.Seeds, "num_seeds", 1)
    epochs: int = options.override(options.Training, "epochs", 2)
    batch_size: int = options.override(options.Training, "batch_size", 32)

    def _check(self):
        if min(self.r0_over_rx) <= 0:
            shown = ",".join(map(str, self.r0_over_rx))
            raise OptionError("r0_over_rx", f"initial radii must be positive, got {shown}")
        for name in ("r0_over_rx", "radius_modes"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise OptionError(name, f"repeated values in {','.join(map(str, values))}")


class RadiusDynamicsResult(result.Result):
    """Radius dynamics' records (`result.Result`): curves [mode, r0, seed, epoch(, record)] and the
    analysis (alpha fits, random-walk ratios) in ``analysis``."""

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.derived["mode_names"])

    def table(self) -> str:
        """A row per (mode, r0): final radius, final and best test accuracy, alpha, measured / random walk
        (sigma from the measured updates; for Adam also sigma = lr)."""
        head = (
            f"{'mode':<6} {'r0/rX':>7} {'r_T/rX':>8} {'test acc':>8} {'best':>6} {'alpha [95% CI]':>22} "
            f"{'meas/RW':>8} {'meas/RW(lr)':>11}"
        )
        lines = [head, "-" * len(head)]
        for row in self.analysis["rows"]:
            alpha, ratio, lr_ratio = "", "", ""
            if "alpha" in row:
                a = row["alpha"]
                alpha = f"{a['alpha']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
                ratio = f"{row['rw_ratio_constant']:.3g}"
                lr_ratio = f"{row['rw_lr_ratio']:.3g}" if "rw_lr_ratio" in row else ""
            lines.append(
                f"{row['mode']:<6} {row['r0_over_rx']:>7g} {row['final_radius_over_rx']:>8.3g} "
                f"{row['final_test_accuracy']:>8.3f} {row['best_test_accuracy']:>6.3f} {alpha:>22} "
                f"{ratio:>8} {lr_ratio:>11}"
            )
        return "\n".join(lines)


def radius_dynamics(
    model, train, test, *, run_dir: str | stores.RunFolder | None = None, log=progress.to_stderr, **kwargs
) -> RadiusDynamicsResult:
    """Trains `model` in the full space from points at each initial radius r0, free or at |theta| = r0.

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train: (x_train [N, *input_shape], y_train [N] integer labels in [0, C)), the training examples
        (batches of ``batch_size``, the last partial batch of an epoch dropped).
      test: (x_test, y_test), evaluated after every epoch.
      run_dir: a folder (or `stores.RunFolder`) to record the run in and resume from; None: in memory.
      log: where progress lines go (None: silent).
      **kwargs: `RadiusDynamicsOptions`: ``r0_over_rx``, ``radius_modes``, ``num_seeds``, ``epochs``,
        ``lr``, ``batch_size``, ``record_every``, ``convention``, ...

    Returns:
      A `RadiusDynamicsResult` with the analysis. Cost: one compile per mode; per unit S x epochs x
      N / batch_size steps of the full gradient on a batch.
    """
    opts = RadiusDynamicsOptions(**kwargs)
    return problem_lib.run_study(run, opts, model=model, train=train, test=test, run_dir=run_dir, log=log)


def run(
    prob: problem_lib.Problem,
    data: train_lib.Data,
    opts: RadiusDynamicsOptions,
    *,
    run_dir=None,
    log=progress.to_stderr,
) -> RadiusDynamicsResult:
    """Radius dynamics of a built problem on validated data (what `radius_dynamics` calls)."""
    fm, r_x, dtype, S = prob.fm, prob.r_x, prob.dtype, opts.num_seeds
    r_ref = reference_radius(prob, opts.reference_radius)
    n_train = int(data.x_train.shape[0])
    spec = opts.train_spec(n_train, **({"batch_size": n_train} if opts.full_batch else {}))
    r0s = r_ref * np.asarray(opts.r0_over_rx, np.float64)
    lrs = [opts.lr * float(a) ** -opts.lr_radius_power for a in opts.r0_over_rx]
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "train")
    settings = {
        **options.settings(opts),
        "seed_mode": seed_mode,
        "model": prob.identity(),
        "data": problem_lib.data_settings(data),
    }
    derived = {
        **prob.describe(),
        "r0": r0s,
        "mode_names": list(opts.radius_modes),
        "seed_mode": seed_mode,
        "steps_per_epoch": spec.steps_per_epoch,
        "batch_size": spec.batch_size,
        "lr_per_r0": lrs,
        "reference_radius": opts.reference_radius,
        "r_ref": r_ref,
    }
    store = stores.open_store(
        run_dir, experiment=EXPERIMENT, settings=settings, derived=derived, axes=schema.radius_dynamics_axes()
    )
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    names = [unit_name(m, i) for m in opts.radius_modes for i in range(len(r0s))]
    engine.plan([(name, 1.0) for name in names])
    if store.path:
        engine.say(
            f"{'resuming' if store.resumed else 'new run'}: {store.path}  "
            f"({len(store.done())}/{len(names)} units done)"
        )
    engine.say(
        f"{derived['model']}: D = {fm.D}, r_X = {r_ref:.4g} ({opts.reference_radius}; Xavier radius "
        f"{r_x:.4g}); r0/r_X in {list(opts.r0_over_rx)}; "
        f"{opts.epochs} epochs x {spec.steps_per_epoch} steps, {S} seeds; seed mode {seed_mode}"
    )

    keys = seeds.SeedKeys.from_seed(opts.seed)
    k_init, k_train = keys.init_keys(S), keys.train_keys(S)
    sample = prob.sample_fn(opts.sample_init)
    point = jax.jit(
        jax.vmap(
            lambda k, r: subspace.point_at_radius(
                k, r, convention=opts.convention, sample_fn=sample, D=fm.D, r_x=r_x, dtype=dtype
            ),
            in_axes=(0, None),
        )
    )
    for mode in opts.radius_modes:
        pending = [
            i
            for i in range(len(r0s))
            if not engine.has(unit_name(mode, i)) and engine.mine(unit_name(mode, i))
        ]
        trainers = {}  # one per learning rate (a compile each)
        for i in pending:
            name = unit_name(mode, i)
            if lrs[i] not in trainers:
                trainer = train_lib.make_trainer(
                    fm, dataclasses.replace(spec, fixed_radius=(mode == "fixed"), lr=lrs[i])
                )
                trainers[lrs[i]] = (jax.jit(jax.vmap(trainer.init)), train_lib.seed_runner(
                    trainer, seed_mode, opts.devices))
            init, run_seeds = trainers[lrs[i]]

            def compute(name=name, i=i, mode=mode, init=init, run_seeds=run_seeds):
                state0 = init(point(k_init, jnp.asarray(r0s[i], dtype)))
                _, hist = engine.fit(
                    name,
                    lambda st, e0, n: run_seeds(st, k_train, None, e0, data, n),
                    state0,
                    epochs=opts.epochs,
                    epochs_per_call=opts.epochs_per_call,
                )
                out = unit_arrays(hist)
                return out, {
                    "mode": mode,
                    "r0_over_rx": opts.r0_over_rx[i],
                    "r0": r0s[i],
                    "final_test_accuracy": out["test_accuracy"][:, -1],
                    "final_radius": out["radius"][:, -1, -1],
                }

            engine.unit(name, compute, weight=1.0, what=lambda a, r: _progress_line(a, r, r_ref), wait=False)

    units = {name: engine.unit(name, _missing) for name in names}
    arrays = {
        k: np.stack([
            np.stack([units[unit_name(m, i)][k] for i in range(len(r0s))]) for m in opts.radius_modes
        ])
        for k in units[names[0]]
        if k != "step"
    }
    arrays.update(
        step=units[names[0]]["step"],
        r0=r0s,
        r0_over_rx=np.asarray(opts.r0_over_rx, np.float64),
        modes=np.arange(len(opts.radius_modes)),
    )
    adam = {"D": fm.D, "adam_lr": lrs} if opts.optimizer == "adam" else {}
    analysis = dynamics.summarise(arrays, modes=opts.radius_modes, r_x=r_ref, **adam)
    analysis.update(reference_radius=opts.reference_radius, r_x_xavier=r_x)
    store.write_json("analysis.json", analysis)
    store.finish(arrays)
    return RadiusDynamicsResult(store, arrays, analysis)


def reference_radius(prob: problem_lib.Problem, kind: str) -> float:
    """The r_X of r0 / r_X (`REFERENCE_RADII`): the Xavier radius or `models.units_radius`."""
    if kind == "units":
        return models.units_radius(prob.module, prob.input_shape)
    return prob.r_x


def unit_name(mode: str, i: int) -> str:
    return f"{mode}_r0{i:02d}"


def unit_arrays(hist: dict) -> dict[str, np.ndarray]:
    """A unit's records from the seeds' training history (`train.fit`, arrays [S, epoch, ...])."""
    return {
        "radius": hist["radius"],
        "update_sq": hist["update_sq"],
        "train_loss": hist["loss"],
        "train_accuracy": hist["accuracy"],
        "test_accuracy": hist["test_accuracy"],
        "test_loss": hist["test_loss"],
        "layer_norms": hist["layer_norms"],
        "step": hist["step"][0],
    }


def _progress_line(arrays: dict, record: dict, r_x: float) -> str:
    return (
        f"radius {np.mean(arrays['radius'][:, -1, -1]) / r_x:.3g} r_X, "
        f"test acc {np.mean(arrays['test_accuracy'][:, -1]):.3f}"
    )


def _missing():
    raise RuntimeError("a unit of the radius dynamics is missing at assembly")
