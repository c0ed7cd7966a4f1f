r"""Training confined to random hyperplanes / hyperspheres through points at radius r, as one library call.

    result = gzone.train_subspace(model, (x_train, y_train), (x_test, y_test), r_over_rx=[0.1, 1, 10],
                                  dims=[10, 100], num_seeds=2, epochs=3)

Fort & Scherlis (2019): hyperplanes through points at radius r train well for r up to about r_X;
hyperspheres (|theta| = r fixed) only near r_X. For each mode, d, radius and seed: a point a at
radius r (`Points`, the radius scan's conventions and radius options), a random d-dimensional
subspace P (`Projection`) and a training run of z in R^d (`train`): theta = a + P z in a
hyperplane, theta = r (a + T z) / |a + T z| with T the part of P tangent to the sphere in a
hypersphere. A unit of the run is one (mode, d, radius) with all seeds as one compiled call
(`train.seed_runner`), trained chunk by chunk with a checkpoint after each (`Engine.fit`).

Records (`schema.train_subspace_axes`): results [mode, d, radius, seed], curves [..., epoch(, record)].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from gzone import options, projections, seeds, subspace
from gzone import problem as problem_lib
from gzone import train as train_lib
from gzone.options import OptionError, option
from gzone.runs import engine as engine_lib
from gzone.runs import progress, result, schema, stores

EXPERIMENT = "train_subspace"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSubspaceOptions(
    options.Radii,
    options.Points,
    options.Projection,
    options.Training,
    options.Objective,
    options.Seeds,
    options.Precision,
):
    """The options of subspace training (keyword arguments of `train_subspace`)."""

    modes: tuple[str, ...] = option(
        schema.SUBSPACE_MODES,
        "Subspace kinds to train in: hyperplane, hypersphere.",
        choices=schema.SUBSPACE_MODES,
    )
    dims: tuple[int, ...] = option((10, 100), "Subspace dimensions d.", minimum=1)
    num_seeds: int = options.override(options.Seeds, "num_seeds", 2)
    epochs: int = options.override(options.Training, "epochs", 3)
    lr: float = options.override(options.Training, "lr", 1e-2)

    def _check(self):
        for name in ("modes", "dims"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise OptionError(name, f"repeated values in {','.join(map(str, values))}")


class TrainSubspaceResult(result.Result):
    """Subspace training's records (`result.Result`): results [mode, d, radius, seed] and curves."""

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(self.derived["mode_names"])

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.arrays["dims"])

    def table(self) -> str:
        """Final test accuracy, mean over seeds: a row per (mode, d), a column per radius."""
        head = f"{'mode':<12} {'d':>6} " + " ".join(f"{x:>+7.2f}" for x in self.arrays["log10_r2_over_rx2"])
        lines = ["final test accuracy (mean over seeds); columns: log10(r^2/r_X^2)", head, "-" * len(head)]
        for mi, mode in enumerate(self.modes):
            for di, d in enumerate(self.dims):
                accs = self.arrays["final_test_accuracy"][mi, di].mean(axis=-1)
                lines.append(f"{mode:<12} {d:>6} " + " ".join(f"{a:>7.3f}" for a in accs))
        return "\n".join(lines)


def train_subspace(
    model, train, test, *, run_dir: str | stores.RunFolder | None = None, log=progress.to_stderr, **kwargs
) -> TrainSubspaceResult:
    """Trains `model` within random subspaces through points at each radius, for each mode, d and seed.

    Args:
      model: any flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train: (x_train [N, *input_shape], y_train [N] integer labels in [0, C)), the training examples
        (batches of ``batch_size``, the last partial batch of an epoch dropped).
      test: (x_test, y_test), evaluated after every epoch.
      run_dir: a folder (or `stores.RunFolder`) to record the run in and resume from; None: in memory.
      log: where progress lines go (None: silent).
      **kwargs: `TrainSubspaceOptions`: exactly one of ``r_over_rx``, ``log10_r2_over_rx2``, ``radii``;
        ``modes``, ``dims``, ``num_seeds``, ``epochs``, ``lr``, ``batch_size``, ``projection``, ...

    Returns:
      A `TrainSubspaceResult`. Cost: one compile per (mode, d); per unit S x epochs x N / batch_size
      steps, each a gradient through theta(z) on a batch.
    """
    opts = TrainSubspaceOptions(**kwargs)
    return problem_lib.run_study(run, opts, model=model, train=train, test=test, run_dir=run_dir, log=log)


def run(
    prob: problem_lib.Problem,
    data: train_lib.Data,
    opts: TrainSubspaceOptions,
    *,
    run_dir=None,
    log=progress.to_stderr,
) -> TrainSubspaceResult:
    """Subspace training of a built problem on validated data (what `train_subspace` calls)."""
    fm, r_x, dtype, S = prob.fm, prob.r_x, prob.dtype, opts.num_seeds
    too_big = [d for d in opts.dims if d > fm.D]
    if too_big:
        raise OptionError("dims", f"d={too_big[0]} exceeds the number of parameters D={fm.D} of the model")
    spec = opts.train_spec(int(data.x_train.shape[0]), mode="hyperplane")
    radii, log10_rel = opts.resolve(r_x, dtype)
    seed_mode = options.resolve_seed_mode(opts.seed_mode, "train")
    settings = {
        **options.settings(opts),
        "seed_mode": seed_mode,
        "model": prob.identity(),
        "data": problem_lib.data_settings(data),
    }
    derived = {
        **prob.describe(),
        "radii": radii,
        "log10_r2_over_rx2": log10_rel,
        "seed_mode": seed_mode,
        "mode_names": list(opts.modes),
        "steps_per_epoch": spec.steps_per_epoch,
    }
    store = stores.open_store(
        run_dir, experiment=EXPERIMENT, settings=settings, derived=derived, axes=schema.train_subspace_axes()
    )
    engine = engine_lib.Engine(store, label=EXPERIMENT, log=log)
    names = [unit_name(m, d, ri) for m in opts.modes for d in opts.dims for ri in range(len(radii))]
    engine.plan([(name, 1.0) for name in names])
    if store.path:
        engine.say(
            f"{'resuming' if store.resumed else 'new run'}: {store.path}  "
            f"({len(store.done())}/{len(names)} units done)"
        )
    engine.say(
        f"{derived['model']}: D = {fm.D}, r_X = {r_x:.4g}; modes {list(opts.modes)}, "
        f"d in {list(opts.dims)}, {len(radii)} radii, {S} seeds, {opts.epochs} epochs of "
        f"{spec.steps_per_epoch} steps; seed mode {seed_mode}"
    )

    keys = seeds.SeedKeys.from_seed(opts.seed)
    k_init, k_train = keys.init_keys(S), keys.train_keys(S)
    builders = {}  # the subspaces do not depend on the mode: one compile per d
    for mode in opts.modes:
        trainer = train_lib.make_trainer(fm, dataclasses.replace(spec, mode=mode))
        init, run_seeds = (
            jax.jit(jax.vmap(trainer.init)),
            train_lib.seed_runner(trainer, seed_mode, opts.devices),
        )
        for d, ri in ((d, ri) for d in opts.dims for ri in range(len(radii))):
            name = unit_name(mode, d, ri)
            if engine.has(name) or not engine.mine(name):
                continue
            if d not in builders:
                builders[d] = space_builder(prob, opts, d)

            def compute(name=name, mode=mode, d=d, ri=ri, init=init, run_seeds=run_seeds):
                spaces = builders[d](k_init, keys.proj_keys(d, S), jnp.asarray(radii[ri], dtype))
                state0 = init(jnp.zeros((S, d), dtype), spaces)
                _, hist = engine.fit(
                    name,
                    lambda st, e0, n: run_seeds(st, k_train, spaces, e0, data, n),
                    state0,
                    epochs=opts.epochs,
                    epochs_per_call=opts.epochs_per_call,
                )
                out = unit_arrays(hist)
                return out, {
                    "mode": mode,
                    "d": d,
                    "radius_index": ri,
                    "radius": radii[ri],
                    "log10_r2_over_rx2": log10_rel[ri],
                    "final_test_accuracy": out["final_test_accuracy"],
                }

            engine.unit(name, compute, weight=1.0, what=_progress_line, wait=False)

    units = {name: engine.unit(name, _missing) for name in names}
    arrays = {
        k: np.stack([
            np.stack([
                np.stack([units[unit_name(m, d, ri)][k] for ri in range(len(radii))]) for d in opts.dims
            ])
            for m in opts.modes
        ])
        for k in units[names[0]]
        if k != "step"
    }
    arrays.update(
        step=units[names[0]]["step"],
        radii=radii,
        log10_r2_over_rx2=log10_rel,
        dims=np.asarray(opts.dims),
        modes=np.arange(len(opts.modes)),
    )
    store.finish(arrays)
    return TrainSubspaceResult(store, arrays)


def space_builder(prob: problem_lib.Problem, opts: TrainSubspaceOptions, d: int):
    """(k_init [S], k_proj [S], radius) -> S `train.Space`s (a point at the radius, a d-dimensional
    projection), jitted with the seeds vmapped."""
    fm, sample = prob.fm, prob.sample_fn(opts.sample_init)

    def make_space(k_a, k_p, radius):
        a = subspace.point_at_radius(
            k_a, radius, convention=opts.convention, sample_fn=sample, D=fm.D, r_x=prob.r_x, dtype=prob.dtype
        )
        return train_lib.Space(a, projections.make(opts.projection, k_p, D=fm.D, d=d, dtype=prob.dtype))

    return jax.jit(seeds.map_seeds(make_space, "vmap"))


def unit_name(mode: str, d: int, ri: int) -> str:
    return f"{mode}_d{d}_r{ri:03d}"


def unit_arrays(hist: dict) -> dict[str, np.ndarray]:
    """A unit's records from the seeds' training history (`train.fit`, arrays [S, epoch, ...])."""
    return {
        "final_test_accuracy": hist["test_accuracy"][:, -1],
        "best_test_accuracy": hist["test_accuracy"].max(axis=1),
        "final_train_loss": hist["loss"][:, -1, -1],
        "test_accuracy": hist["test_accuracy"],
        "test_loss": hist["test_loss"],
        "train_loss": hist["loss"],
        "train_accuracy": hist["accuracy"],
        "radius_curve": hist["radius"],
        "step": hist["step"][0],
    }


def _progress_line(arrays: dict, record: dict) -> str:
    return f"test acc {np.mean(arrays['final_test_accuracy']):.3f}"


def _missing():
    raise RuntimeError("a unit of the subspace training is missing at assembly")
