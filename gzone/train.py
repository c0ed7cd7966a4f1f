"""Training as one `lax.scan`: full space, hyperplanes, hyperspheres, fixed radius.

    trainer = train.make_trainer(fm, spec)             # pure functions, like an optax pair
    state = trainer.init(params0, space)               # params0: theta0 [D] or z0 [d]
    state, hist = trainer.run(state, key, data, space, epoch0, num_epochs)   # jit this
    state, per_step = train.make_step_runner(fm, spec)(state, key, data, space, num_steps)  # any step count

``run`` is one `lax.scan` over epochs (an inner scan over batches), so a whole run compiles once,
vmaps over seeds (vmap ``run`` over state/key/space) and can be called epoch by epoch to save
and resume. Batch order in epoch e is ``jax.random.permutation(fold_in(key, e), N)``; the last
partial batch is dropped.

Modes (`TrainSpec.mode`):
  * ``full``: train theta [D]. With ``fixed_radius`` the poster's method keeps |theta| = r0:
      g <- g - (g . theta_hat) theta_hat        (exact: the tangent part of the gradient)
      u <- optimizer(g); u <- tangent(theta, u) (Adam's elementwise scaling gives u a radial
                                                 part again; this projection is exact too)
      theta <- r0 (theta + u) / |theta + u|      (a retraction: the tangent step leaves the
                                                 sphere by O(|u|^2 / r0); rescaling maps it back)
  * ``hyperplane``: train z [d], theta = a + P z (a = the anchor, P the projection of `Space`).
  * ``hypersphere``: train z [d], theta = r0 (a + T z)/|a + T z| with T = (I - a_hat a_hat^T) P and
    r0 = |a| (`subspace.hypersphere`): on the sphere exactly by construction, up to rounding.

History (``hist``), recorded inside the scan: per record block of `record_every` steps within
each epoch (``n_rec = max(1, steps_per_epoch // record_every)`` blocks per epoch):
``loss``, ``accuracy`` (means over the block's batches), ``radius`` and ``layer_norms`` (at the
block's last step), ``update_sq`` (mean |theta_{t+1} - theta_t|^2 over the block), ``step``;
per epoch: ``test_loss``, ``test_accuracy``, ``epoch_radius``; optional ``snapshots`` of theta.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gzone import flat, projections, subspace

Array = jax.Array
MODES = ("full", "hyperplane", "hypersphere")
OPTIMIZERS = ("adam", "sgd", "momentum")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Static settings of a training run.

    Attributes:
      mode: one of MODES.
      optimizer: one of OPTIMIZERS (optax adam, sgd, sgd with momentum 0.9).
      lr: learning rate.
      batch_size: examples per step.
      steps_per_epoch: N_train // batch_size (set by `spec_for`).
      record_every: steps per record block (within an epoch).
      fixed_radius: full mode only: keep |theta| = |theta0| (see module docstring).
      snapshot_every: keep theta every this many steps within an epoch (0: none; memory
        n_snapshots x D per seed, held on the device).
      eval_chunk: test examples per evaluation chunk (bounds memory).
    """

    mode: str = "full"
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 128
    steps_per_epoch: int = 1
    record_every: int = 50
    fixed_radius: bool = False
    snapshot_every: int = 0
    eval_chunk: int = 2000

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} unknown; allowed: {', '.join(MODES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} unknown; allowed: {', '.join(OPTIMIZERS)}")
        if self.fixed_radius and self.mode != "full":
            raise ValueError("fixed_radius applies to mode='full' (hypersphere mode is fixed by "
                             "construction)")
        if min(self.batch_size, self.steps_per_epoch, self.record_every) < 1 or self.lr <= 0:
            raise ValueError("batch_size, steps_per_epoch, record_every and lr must be positive")

    @property
    def records_per_epoch(self) -> int:
        return max(1, self.steps_per_epoch // self.record_every)

    @property
    def block(self) -> int:
        return min(self.record_every, self.steps_per_epoch)

    @property
    def snapshots_per_epoch(self) -> int:
        return self.steps_per_epoch // self.snapshot_every if self.snapshot_every else 0


def spec_for(n_train: int, **kwargs) -> TrainSpec:
    """A TrainSpec with steps_per_epoch = n_train // batch_size."""
    batch = kwargs.get("batch_size", TrainSpec.batch_size)
    if n_train < batch:
        raise ValueError(f"batch_size={batch} exceeds the {n_train} training examples")
    return TrainSpec(steps_per_epoch=n_train // batch, **kwargs)


def make_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    if name == "adam":
        return optax.adam(lr)
    if name == "sgd":
        return optax.sgd(lr)
    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    raise ValueError(f"optimizer {name!r} unknown; allowed: {', '.join(OPTIMIZERS)}")


class Data(NamedTuple):
    """Arrays of a dataset on the device. x_*: [N, ...] float; y_*: [N] int32."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Space:
    """The subspace of a subspace run: anchor a [D] and projection P [D, d]."""

    anchor: Array
    P: Any


class TrainState(NamedTuple):
    params: Array  # theta [D] (full) or z [d] (subspace)
    opt_state: Any
    r0: Array  # |theta| to hold in fixed-radius / hypersphere runs
    step: Array  # global step count


class Trainer(NamedTuple):
    init: Callable[..., TrainState]
    run: Callable[..., tuple[TrainState, dict]]
    theta: Callable[[TrainState, Space | None], Array]


def evaluate(fm: flat.FlatModel, theta: Array, x: Array, y: Array, chunk: int = 2000) -> tuple[Array, Array]:
    """(mean loss, accuracy) over all of x, y, `chunk` examples at a time.

    With batch statistics (``fm.state == "batch"``) each chunk is a batch of its own, and the last
    n % chunk examples one more (no zero padding enters the statistics).
    """
    n = x.shape[0]
    if n <= chunk:
        logits = flat.logits(fm, theta, x)
        return jnp.mean(flat.example_losses(fm, logits, y)), jnp.mean(jnp.argmax(logits, -1) == y)
    if fm.state == "batch" and n % chunk:
        head = n - n % chunk
        loss_head, acc_head = evaluate(fm, theta, x[:head], y[:head], chunk)
        loss_rest, acc_rest = evaluate(fm, theta, x[head:], y[head:], chunk)
        return (loss_head * head + loss_rest * (n - head)) / n, (acc_head * head + acc_rest * (n - head)) / n
    pad = (-n) % chunk
    xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(-1, chunk, *x.shape[1:])
    ys = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)]).reshape(-1, chunk)
    ms = (jnp.arange(n + pad) < n).reshape(-1, chunk)

    def one(args):
        xb, yb, mb = args
        logits = flat.logits(fm, theta, xb)
        hits = (jnp.argmax(logits, -1) == yb) * mb
        return jnp.sum(flat.example_losses(fm, logits, yb) * mb), jnp.sum(hits)

    losses, hits = jax.lax.map(one, (xs, ys, ms))
    return jnp.sum(losses) / n, jnp.sum(hits) / n


def _theta_fn(spec: TrainSpec) -> Callable[[Array, Space | None, Array], Array]:
    """(params, space, r0) -> theta [D] for the spec's mode."""

    def theta_of(params, space, r0):
        if spec.mode == "full":
            return params
        if spec.mode == "hyperplane":
            return space.anchor + projections.apply(space.P, params)
        return subspace.hypersphere(space.anchor, space.P, r0)(params)

    return theta_of


def _step_fn(fm: flat.FlatModel, spec: TrainSpec, opt: optax.GradientTransformation) -> Callable:
    """One optimiser step: (state, (xb, yb), space, theta) -> (state, metrics, theta after the step).

    ``theta`` is theta of ``state`` (the previous step's ``theta after``, carried by the scan; see
    `_carries_theta`): in a hyperplane the step then does one P^T g and one P z, the gradient
    being grad_z = P^T grad_theta at theta = a + P z (what autodiff through a + P z computes),
    instead of recomputing a + P z for the loss. Other modes recompute theta (``theta`` is None).
    """
    theta_of = _theta_fn(spec)

    def step_fn(state: TrainState, batch, space, theta=None):
        xb, yb = batch

        if theta is not None:  # hyperplane: theta = a + P z given

            def loss_theta(th):
                logits = flat.logits(fm, th, xb)
                return jnp.mean(flat.example_losses(fm, logits, yb)), logits

            (value, logits), grad_theta = jax.value_and_grad(loss_theta, has_aux=True)(theta)
            grad = projections.apply_T(space.P, grad_theta).astype(state.params.dtype)
            th_old = theta
        else:

            def loss_of(params):
                th = theta_of(params, space, state.r0)
                logits = flat.logits(fm, th, xb)
                return jnp.mean(flat.example_losses(fm, logits, yb)), (logits, th)

            (value, (logits, th_old)), grad = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        if spec.fixed_radius:
            grad = subspace.tangent(state.params, grad)
        updates, opt_state = opt.update(grad, state.opt_state, state.params)
        if spec.fixed_radius:
            updates = subspace.tangent(state.params, updates)
        params = optax.apply_updates(state.params, updates)
        if spec.fixed_radius:
            params = state.r0 * params / jnp.linalg.norm(params)
        new = TrainState(params, opt_state, state.r0, state.step + 1)
        th_new = theta_of(params, space, state.r0)
        metrics = {
            "loss": value,
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == yb),
            "radius": jnp.linalg.norm(th_new),
            "layer_norms": flat.layer_norms(fm, th_new),
            "update_sq": jnp.sum((th_new - th_old) ** 2),
        }
        return new, metrics, th_new

    return step_fn


def _carries_theta(spec: TrainSpec) -> bool:
    """Whether the step scan carries theta = a + P z from step to step (hyperplanes: one P z a step)."""
    return spec.mode == "hyperplane"


def make_trainer(fm: flat.FlatModel, spec: TrainSpec, *, batch_sharding=None) -> Trainer:
    """The pure functions of a training run (see module docstring).

    Args:
      fm: the flat model.
      spec: static settings.
      batch_sharding: optional `jax.sharding.Sharding` for a [batch_size, ...] batch (e.g.
        ``NamedSharding(mesh, PartitionSpec('batch'))``): each step's batch is constrained to it,
        so a jitted ``run`` is data-parallel over the mesh (gradients all-reduced by XLA).
    """
    opt = make_optimizer(spec.optimizer, spec.lr)
    theta_of = _theta_fn(spec)
    step_fn = _step_fn(fm, spec, opt)
    carry_theta = _carries_theta(spec)

    def init(params0: Array, space: Space | None = None) -> TrainState:
        r0 = jnp.linalg.norm(params0 if spec.mode == "full" else space.anchor)
        return TrainState(params0, opt.init(params0), r0, jnp.zeros((), jnp.int32))

    def theta(state: TrainState, space: Space | None = None) -> Array:
        return theta_of(state.params, space, state.r0)

    def epoch_fn(state, key, data: Data, space, epoch):
        n = data.x_train.shape[0]
        steps, batch = spec.steps_per_epoch, spec.batch_size
        order = jax.random.permutation(jax.random.fold_in(key, epoch), n)[: steps * batch]
        order = order.reshape(steps, batch)
        n_snap = spec.snapshots_per_epoch
        D = fm.D
        snaps0 = jnp.zeros((n_snap, D), data.x_train.dtype) if n_snap else None
        th0 = theta_of(state.params, space, state.r0) if carry_theta else None

        def body(carry, inputs):
            st, snaps, th = carry
            t, idx = inputs
            xb, yb = data.x_train[idx], data.y_train[idx]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            st, metrics, th_new = step_fn(st, (xb, yb), space, th)
            if n_snap:
                is_snap = ((t + 1) % spec.snapshot_every == 0) & ((t + 1) // spec.snapshot_every <= n_snap)
                slot = jnp.clip((t + 1) // spec.snapshot_every - 1, 0, n_snap - 1)
                snaps = jax.lax.cond(is_snap, lambda s: s.at[slot].set(th_new.astype(s.dtype)), lambda s: s,
                                     snaps)
            return (st, snaps, th_new if carry_theta else None), metrics

        carry0 = (state, snaps0, th0)
        (state, snaps, th_end), per_step = jax.lax.scan(body, carry0, (jnp.arange(steps), order))
        R, B = spec.records_per_epoch, spec.block
        blocks = jax.tree_util.tree_map(lambda a: a[: R * B].reshape(R, B, *a.shape[1:]), per_step)
        hist = {
            "loss": blocks["loss"].mean(1),
            "accuracy": blocks["accuracy"].mean(1),
            "update_sq": blocks["update_sq"].mean(1),
            "radius": blocks["radius"][:, -1],
            "layer_norms": blocks["layer_norms"][:, -1],
            "step": epoch * steps + (jnp.arange(R) + 1) * B,
        }
        th = th_end if carry_theta else theta_of(state.params, space, state.r0)
        test_loss, test_acc = evaluate(fm, th, data.x_test, data.y_test, spec.eval_chunk)
        per_epoch = {"test_loss": test_loss, "test_accuracy": test_acc, "epoch_radius": jnp.linalg.norm(th)}
        if n_snap:
            per_epoch["snapshots"] = snaps
        return state, (hist, per_epoch)

    def run(state: TrainState, key: Array, data: Data, space: Space | None, epoch0, num_epochs: int):
        """Trains epochs epoch0 .. epoch0 + num_epochs - 1 (num_epochs static, epoch0 data).

        Returns the new state and a history dict whose leading axis is the epoch
        (record-block arrays are [num_epochs, records_per_epoch, ...]).
        """

        def body(st, epoch):
            st, (hist, per_epoch) = epoch_fn(st, key, data, space, epoch)
            return st, {**hist, **per_epoch}

        return jax.lax.scan(body, state, epoch0 + jnp.arange(num_epochs))

    return Trainer(init, run, theta)


def make_step_runner(
    fm: flat.FlatModel, spec: TrainSpec, *, batch_sharding=None
) -> Callable[..., tuple[TrainState, dict]]:
    """A run of a given number of steps (e.g. a burn-in shorter than an epoch).

    Returns:
      run_steps(state, key, data, space, num_steps) -> (state, per-step metrics), with
      ``num_steps`` static. It continues from ``state.step``: global step t uses slot
      ``t % steps_per_epoch`` of epoch ``t // steps_per_epoch``'s batch order
      ``permutation(fold_in(key, epoch), N)``, the order `make_trainer`'s ``run`` uses, so
      ``run_steps`` over k * steps_per_epoch steps from step 0 reaches the same state as ``run``
      over k epochs, and a run can be split at any step. States come from
      ``make_trainer(fm, spec).init``. Metrics: ``loss``, ``accuracy`` (of each step's batch
      before its update) and ``step`` (global step after the update), each [num_steps].
      Cost: one permutation of the N training indices per step.
    """
    step_fn = _step_fn(fm, spec, make_optimizer(spec.optimizer, spec.lr))
    theta_of, carry_theta = _theta_fn(spec), _carries_theta(spec)

    def run_steps(state: TrainState, key: Array, data: Data, space: Space | None, num_steps: int):
        n, steps, batch = data.x_train.shape[0], spec.steps_per_epoch, spec.batch_size

        def body(carry, _):
            st, th = carry
            epoch, slot = st.step // steps, st.step % steps
            order = jax.random.permutation(jax.random.fold_in(key, epoch), n)
            idx = jax.lax.dynamic_slice_in_dim(order, slot * batch, batch)
            xb, yb = data.x_train[idx], data.y_train[idx]
            if batch_sharding is not None:
                xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
                yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
            st, metrics, th_new = step_fn(st, (xb, yb), space, th)
            per_step = {"loss": metrics["loss"], "accuracy": metrics["accuracy"], "step": st.step}
            return (st, th_new if carry_theta else None), per_step

        th0 = theta_of(state.params, space, state.r0) if carry_theta else None
        (state, _), per_step = jax.lax.scan(body, (state, th0), None, length=num_steps)
        return state, per_step

    return run_steps


# the seed axis over a trainer, and epochs in chunks (re-exported here: train.seed_runner, train.fit)
from gzone.train_runs import fit, seed_runner  # noqa: E402, F401
