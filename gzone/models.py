"""flax.linen models, initialisation conventions and the Xavier radius r_X.

Models are named by a `ModelSpec`: ``mlp`` (any hidden widths, relu|tanh), ``cnn_fs`` (Fort &
Scherlis style: blocks of [3x3 conv -> 2x2 max-pool -> activation] then one dense layer) and
``small_cnn`` (Larsen et al.'s SmallCNN: 3x3 convs with 32, 64, 64 channels, each followed by the
activation and a 2x2 max-pool, then a dense layer).

Layers carry zero-padded names (``dense_00``, ``conv_00``) so that the flat parameter order of
`jax.flatten_util.ravel_pytree` (sorted keys) follows the network's depth.

Initialisation conventions (by name, see `init_params`):
  * ``xavier``: Glorot/Xavier normal, W ~ N(0, 2 / (fan_in + fan_out)), zero biases;
  * ``he``: He normal, W ~ N(0, 2 / fan_in), zero biases;
  * ``isotropic``: every one of the D parameters (biases too) ~ N(0, r_X^2 / D), so that
    E|theta|^2 = r_X^2 as for ``xavier`` but with no layer structure.
The normals are not truncated (flax's ``glorot_normal`` truncates), so the closed-form radius
below is exact in expectation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

MODEL_KINDS = ("mlp", "cnn_fs", "small_cnn")
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh}
INIT_CONVENTIONS = ("xavier", "he", "isotropic")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What network to build.

    Attributes:
      kind: one of MODEL_KINDS.
      widths: hidden widths of an MLP, or conv channels of ``cnn_fs``/``small_cnn``.
      activation: ``relu`` or ``tanh``.
    """

    kind: str = "mlp"
    widths: tuple[int, ...] = (200, 200)
    activation: str = "relu"

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind {self.kind!r} unknown; allowed: {', '.join(MODEL_KINDS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} unknown; allowed: relu, tanh")
        if any(int(w) <= 0 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths}")
        if self.kind != "mlp" and not self.widths:
            raise ValueError(f"{self.kind} needs at least one channel count")

    @property
    def name(self) -> str:
        return f"{self.kind}[{'-'.join(str(w) for w in self.widths)}]/{self.activation}"


class MLP(nn.Module):
    """Fully connected network: flatten, hidden Dense layers with the activation, Dense(C)."""

    widths: Sequence[int]
    num_classes: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths):
            x = act(nn.Dense(width, name=f"dense_{i:02d}")(x))
        return nn.Dense(self.num_classes, name=f"dense_{len(self.widths):02d}")(x)


class PatchConv(nn.Module):
    """'SAME' convolution, stride 1, as image patches times a matrix (im2col).

    Parameters are those of `flax.linen.Conv` (``kernel`` [*window, c_in, c_out], ``bias``
    [c_out]), so layouts, fans and r_X are unchanged. Why not `nn.Conv`: on XLA:CPU the kernel
    gradient of a convolution inside a loop (`lax.scan`/`lax.map`: training steps, mapped seeds,
    Hessian columns) measured ~20x slower than outside it, while a patches-times-matrix product
    keeps its speed there. Memory: the patches are prod(window) times the input activations.
    """

    features: int
    window: Sequence[int]

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.window, c_in, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        spatial = "HW"[: len(self.window)] if len(self.window) <= 2 else None
        dims = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
        patches = jax.lax.conv_general_dilated_patches(
            x, tuple(self.window), (1,) * len(self.window), "SAME", dimension_numbers=dims
        )  # [N, *spatial, c_in * prod(window)], channel-major
        order = (len(self.window), *range(len(self.window)), len(self.window) + 1)
        matrix = jnp.transpose(kernel, order).reshape(-1, self.features)
        return patches @ matrix.astype(patches.dtype) + bias.astype(patches.dtype).reshape(
            (1,) * (patches.ndim - 1) + (-1,)
        )


class ConvNet(nn.Module):
    """Conv blocks then one Dense layer.

    ``order='pool_act'`` gives conv -> max-pool -> activation (Fort & Scherlis);
    ``order='act_pool'`` gives conv -> activation -> max-pool (SmallCNN).
    1-D inputs [N, L] are treated as [N, L, 1] sequences (1-D convolutions). Convolutions are
    `PatchConv` ('patches', the default) or `flax.linen.Conv` ('xla'); same parameters.
    """

    channels: Sequence[int]
    num_classes: int
    activation: str = "relu"
    order: str = "pool_act"
    conv_impl: str = "patches"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        if x.ndim == 2:
            x = x[..., None]
        spatial = x.ndim - 2
        window = (3,) * spatial
        pool = (2,) * spatial
        for i, channels in enumerate(self.channels):
            if self.conv_impl == "xla":
                x = nn.Conv(channels, window, padding="SAME", name=f"conv_{i:02d}")(x)
            else:
                x = PatchConv(channels, window, name=f"conv_{i:02d}")(x)
            if self.order == "pool_act":
                x = act(nn.max_pool(x, pool, strides=pool))
            else:
                x = nn.max_pool(act(x), pool, strides=pool)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, name="dense_00")(x)


def build(spec: ModelSpec, num_classes: int) -> nn.Module:
    """The flax module for a spec."""
    if spec.kind == "mlp":
        return MLP(widths=tuple(spec.widths), num_classes=num_classes, activation=spec.activation)
    order = "pool_act" if spec.kind == "cnn_fs" else "act_pool"
    return ConvNet(
        channels=tuple(spec.widths), num_classes=num_classes, activation=spec.activation, order=order
    )


def default_widths(kind: str) -> tuple[int, ...]:
    """The usual widths/channels of each model kind."""
    return {"mlp": (200, 200), "cnn_fs": (16, 16), "small_cnn": (32, 64, 64)}[kind]


# --------------------------------------------------------------------------- initialisation


def param_shapes(module: nn.Module, input_shape: Sequence[int]) -> Any:
    """Pytree of jax.ShapeDtypeStruct for the module's params (no FLOPs, no randomness used)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))["params"]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel: Dense [in, out]; Conv [*window, c_in, c_out]."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return receptive * int(shape[-2]), receptive * int(shape[-1])


def _is_kernel(path) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


def xavier_std_tree(shapes: Any) -> Any:
    """Per-leaf std of Xavier-normal init: sqrt(2/(fan_in+fan_out)) for kernels, 0 for biases."""

    def std(path, leaf):
        if _is_kernel(path):
            fan_in, fan_out = fans(leaf.shape)
            return math.sqrt(2.0 / (fan_in + fan_out))
        return 0.0

    return jax.tree_util.tree_map_with_path(std, shapes)


def xavier_radius(module: nn.Module, input_shape: Sequence[int]) -> float:
    """Expected Xavier radius r_X = sqrt(E|theta|^2) = sqrt(sum_kernels n * 2/(fan_in+fan_out)).

    For D in the thousands and more, E|theta| agrees with this to O(1/D) relative.
    """
    shapes = param_shapes(module, input_shape)
    stds = xavier_std_tree(shapes)
    total = sum(
        float(np.prod(s.shape)) * sd**2
        for s, sd in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(stds))
    )
    return math.sqrt(total)


def layer_xavier_radii(module: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """Expected Xavier radius of each layer's kernel, keyed by the layer name."""
    shapes = param_shapes(module, input_shape)
    out = {}
    for name, leaves in shapes.items():
        fan_in, fan_out = fans(leaves["kernel"].shape)
        out[name] = math.sqrt(float(np.prod(leaves["kernel"].shape)) * 2.0 / (fan_in + fan_out))
    return out


def init_params(
    key: jax.Array,
    module: nn.Module,
    input_shape: Sequence[int],
    convention: str = "xavier",
    dtype=jnp.float32,
) -> Any:
    """Samples parameters by a named convention (see the module docstring).

    Args:
      key: PRNG key.
      module: the flax module.
      input_shape: shape of one example.
      convention: one of INIT_CONVENTIONS.
      dtype: parameter dtype.

    Returns:
      The params pytree (the ``'params'`` collection's contents).
    """
    if convention not in INIT_CONVENTIONS:
        raise ValueError(f"init convention {convention!r} unknown; allowed: {', '.join(INIT_CONVENTIONS)}")
    shapes = param_shapes(module, input_shape)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(key, len(leaves))
    if convention == "isotropic":
        D = sum(int(np.prod(s.shape)) for _, s in leaves)
        std = xavier_radius(module, input_shape) / math.sqrt(D)
        stds = [std] * len(leaves)
    else:
        stds = []
        for path, leaf in leaves:
            if not _is_kernel(path):
                stds.append(0.0)
                continue
            fan_in, fan_out = fans(leaf.shape)
            var = 2.0 / (fan_in + fan_out) if convention == "xavier" else 2.0 / fan_in
            stds.append(math.sqrt(var))
    new = [
        std * jax.random.normal(k, leaf.shape, dtype) if std > 0 else jnp.zeros(leaf.shape, dtype)
        for k, (_, leaf), std in zip(keys, leaves, stds)
    ]
    return jax.tree_util.tree_unflatten(treedef, new)


def describe(module: nn.Module) -> str:
    """One line naming a module and its fields, e.g.
    ``MLP(widths=(100, 100), num_classes=10, activation='relu')``."""
    fields = [f for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    return (
        f"{type(module).__name__}(" + ", ".join(f"{f.name}={getattr(module, f.name)!r}" for f in fields) + ")"
    )


def apply_fn(module: nn.Module) -> Callable:
    """(params, x) -> logits, the pure forward function."""

    def fn(params, x):
        return module.apply({"params": params}, x)

    return fn
