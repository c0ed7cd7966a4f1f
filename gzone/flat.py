"""One flat parameter vector theta in R^D for a model (``ravel_pytree``), and its loss.

    theta, fm = flat.flatten(module, params)
    fm = flat.flat_model(module, input_shape, loss="mse", model_state="batch", temperature=2.0)
    flat.loss(fm, theta, x, y)      # the mean loss of fm's kind, finite at huge logits
    flat.accuracy(fm, theta, x, y)

The loss of theta on a batch (x [N, ...], y [N]) is defined by the model (its parameters theta and,
for a module with state such as BatchNorm statistics, the state mode: `models.apply`), a loss kind
(`LOSSES`) and a softmax temperature T: with logits z = f(theta, x) [N, C],

  cross_entropy   L = (1/N) sum_n -log softmax(z_n / T)_{y_n}
  mse             L = (1/(N C)) sum_{n,c} (z_nc / T - onehot(y_n)_c)^2   (one-hot targets)

`logits` returns z / T (T = 1 unless the FlatModel carries a temperature, `with_temperature`), so
every consumer (accuracy, curvature, Gauss-Newton, logit gradients) sees the logits the loss
sees; the temperature may be a traced scalar (a radius scan's temperature axis is data).
The loss's Hessian in the logits u = z / T is `output_hessian_mv`.

Every function here is pure and works under jit, vmap, grad and jvp.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gzone import models

LOSSES = ("cross_entropy", "mse")


@dataclasses.dataclass(frozen=True)
class Segment:
    """A contiguous block of theta belonging to one parameter array.

    Attributes:
      name: ``layer/param``, e.g. ``dense_00/kernel``.
      layer: the layer name, e.g. ``dense_00``.
      start: first index in theta.
      size: number of entries.
      shape: the array's shape.
    """

    name: str
    layer: str
    start: int
    size: int
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class FlatModel:
    """A model seen through its flat parameters.

    Attributes:
      apply_fn: (params, x) -> logits [N, C] (model state handled inside: `models.apply_fn`).
      unravel: theta [D] -> params pytree.
      D: number of parameters.
      segments: the parameter arrays' blocks of theta, in order.
      loss: the loss kind, one of LOSSES.
      temperature: T, the logits are divided by it (None: T = 1, the logits untouched); a float or
        a traced scalar.
      state: the model-state mode (`models.STATE_MODES`) of a module with state, else None.
    """

    apply_fn: Callable
    unravel: Callable
    D: int
    segments: tuple[Segment, ...]
    loss: str = "cross_entropy"
    temperature: Any = None
    state: str | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} unknown; allowed: {', '.join(LOSSES)}")

    @property
    def layers(self) -> tuple[str, ...]:
        seen = []
        for s in self.segments:
            if s.layer not in seen:
                seen.append(s.layer)
        return tuple(seen)


def flatten(
    module: nn.Module,
    params: Any,
    *,
    state: dict | None = None,
    model_state: str = "batch",
    loss: str = "cross_entropy",
) -> tuple[jax.Array, FlatModel]:
    """Flattens a params pytree.

    Args:
      module: the flax module; params: its ``'params'`` collection.
      state: its other collections (`models.initial_state`; None: a module without state).
      model_state: how the state enters the loss (`models.STATE_MODES`).
      loss: the loss kind (LOSSES).

    Returns:
      theta: [D] the flat parameters (dtype of the params).
      fm: the `FlatModel` to evaluate any theta of the same layout. A segment's layer is its
        parameter path without the last name (``dense_00``, ``block_00/conv_00``).
    """
    theta, _ = ravel_pytree(params)
    segments, start = [], 0
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in leaves:
        keys = [getattr(p, "key", str(p)) for p in path]
        size = int(np.prod(leaf.shape))
        layer = "/".join(keys[:-1]) if len(keys) > 1 else keys[0]
        segments.append(Segment("/".join(keys), layer, start, size, tuple(leaf.shape)))
        start += size
    unravel = _make_unravel(jax.tree_util.tree_structure(params), tuple(segments))
    apply = models.apply_fn(module, state, model_state)
    mode = model_state if state else None
    return theta, FlatModel(apply, unravel, int(theta.shape[0]), tuple(segments), loss=loss, state=mode)


def _make_unravel(treedef, segments: tuple[Segment, ...]) -> Callable:
    """theta [D] -> params pytree by static `lax.dynamic_slice` + reshape (ravel_pytree's order).

    Used instead of ravel_pytree's own unravel: on XLA:CPU the gradient through that one
    (a transposed `jnp.split`) measured ~200x slower for MLP 3072-200-200-10 (500 ms against
    2.4 ms per batch-32 gradient), while static slices transpose to cheap pads.
    """

    def unravel(theta):
        leaves = [jax.lax.dynamic_slice_in_dim(theta, s.start, s.size).reshape(s.shape) for s in segments]
        return jax.tree_util.tree_unflatten(treedef, leaves)

    return unravel


def flat_model(
    module: nn.Module,
    input_shape,
    dtype=jnp.float32,
    *,
    loss: str = "cross_entropy",
    model_state: str = "batch",
    temperature: float | None = None,
) -> FlatModel:
    """The `FlatModel` of a module, without sampling parameters (the layout; the state at its init values).

    ``temperature`` None or 1 leaves the logits untouched (bitwise); else `with_temperature`.
    """
    shapes = models.param_shapes(module, input_shape)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, dtype), shapes)
    state = models.initial_state(module, input_shape, dtype)
    fm = flatten(module, zeros, state=state, model_state=model_state, loss=loss)[1]
    return fm if temperature is None or temperature == 1 else with_temperature(fm, temperature)


def with_temperature(fm: FlatModel, temperature) -> FlatModel:
    """The same model with its logits divided by T = `temperature` (a float or a traced scalar).

    Build it inside the traced function when T is data; T must be > 0.
    """
    if fm.temperature is not None:
        raise ValueError("the model already has a temperature; give one temperature, not two")
    return dataclasses.replace(fm, temperature=temperature)


def sample_fn(
    module: nn.Module, input_shape, convention: str = "xavier", dtype=jnp.float32
) -> Callable[[jax.Array], jax.Array]:
    """key -> flat init sample theta [D] by a named convention (models.INIT_CONVENTIONS)."""

    def fn(key):
        return ravel_pytree(models.init_params(key, module, input_shape, convention, dtype))[0]

    return fn


def logits(fm: FlatModel, theta: jax.Array, x: jax.Array) -> jax.Array:
    """Logits z / T [N, C] of inputs x [N, ...] at theta [D], computed in theta's dtype (T = 1 when
    ``fm.temperature`` is None). With batch statistics (``fm.state == "batch"``) they are those of x
    as one batch."""
    z = fm.apply_fn(fm.unravel(theta), x.astype(theta.dtype))
    if fm.temperature is None:
        return z
    return z / jnp.asarray(fm.temperature, z.dtype)


def cross_entropy(logits_: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy [N] via log-softmax (max-subtracted).

    Finite for any finite logits, however large: -log_softmax = logsumexp(l) - l_y, and
    logsumexp subtracts the max first.
    """
    logp = jax.nn.log_softmax(logits_, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]


def squared_error(logits_: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example mean squared error against one-hot targets [N]: (1/C) sum_c (z_c - onehot(y)_c)^2."""
    target = jax.nn.one_hot(y, logits_.shape[-1], dtype=logits_.dtype)
    return jnp.mean((logits_ - target) ** 2, axis=-1)


def example_losses(fm: FlatModel, logits_: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example losses [N] of fm's kind from logits [N, C] as `logits` returns them (z / T)."""
    return cross_entropy(logits_, y) if fm.loss == "cross_entropy" else squared_error(logits_, y)


def output_hessian_mv(fm: FlatModel, logits_: jax.Array, u: jax.Array) -> jax.Array:
    """H_out u: the Hessian of the mean loss in the logits u = z / T it sees, times u [N, C].

    cross_entropy: (p_n * u_n - p_n (p_n . u_n)) / N per example, p_n = softmax(z_n / T) (a
    covariance matrix diag(p) - p p^T per example: positive semidefinite, rank C - 1).
    mse: 2 u / (N C) (L = (1/(N C)) |u - targets|^2 is quadratic in u). In z itself both carry an
    extra 1/T^2 (`gauss_newton` differentiates through z / T, so it is included there).
    """
    if fm.loss == "mse":
        return 2.0 * u / (logits_.shape[0] * logits_.shape[1])
    return cross_entropy_hessian_mv(logits_, u)


def cross_entropy_hessian_mv(logits_: jax.Array, u: jax.Array) -> jax.Array:
    """H_CE u for the mean cross-entropy over N examples: (p * u - p (p . u)) / N per example.

    Args:
      logits_: [N, C] logits.
      u: [N, C] a logit-space direction.

    Returns:
      [N, C].
    """
    p = jax.nn.softmax(logits_, axis=-1)
    return (p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)) / logits_.shape[0]


def loss(fm: FlatModel, theta: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """The mean loss over the batch (scalar): softmax cross-entropy or MSE of fm, at its temperature."""
    return jnp.mean(example_losses(fm, logits(fm, theta, x), y))


def accuracy(fm: FlatModel, theta: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of examples whose arg-max logit is the label (scalar)."""
    return jnp.mean(jnp.argmax(logits(fm, theta, x), axis=-1) == y)


def loss_fn(fm: FlatModel, x: jax.Array, y: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """theta -> loss on a fixed batch (x, y): the function curvature code differentiates."""
    return lambda theta: loss(fm, theta, x, y)


def layer_index(fm: FlatModel) -> np.ndarray:
    """[D] int: the position in `fm.layers` of the layer owning each coordinate of theta."""
    layers = fm.layers
    out = np.empty(fm.D, np.int32)
    for s in fm.segments:
        out[s.start : s.start + s.size] = layers.index(s.layer)
    return out


def segment_index(fm: FlatModel) -> np.ndarray:
    """[D] int: the position in `fm.segments` of the parameter array owning each coordinate."""
    out = np.empty(fm.D, np.int32)
    for i, s in enumerate(fm.segments):
        out[s.start : s.start + s.size] = i
    return out


def layer_norms(fm: FlatModel, theta: jax.Array) -> jax.Array:
    """[num_layers] Euclidean norm of each layer's parameters (weights and biases together).

    Static slices (no scatter): cheap enough to record at every training step.
    """
    layers = fm.layers
    sq = [jnp.zeros((), theta.dtype) for _ in layers]
    for s in fm.segments:
        i = layers.index(s.layer)
        sq[i] = sq[i] + jnp.sum(jax.lax.dynamic_slice_in_dim(theta, s.start, s.size) ** 2)
    return jnp.sqrt(jnp.stack(sq))
