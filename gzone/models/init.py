"""How any flax module is initialised, and its Xavier radius r_X.

Every parameter array (leaf of the ``'params'`` collection) gets a rule from its name:

  ``kernel``  Xavier normal, W ~ N(0, 2 / (fan_in + fan_out)) (``he``: N(0, 2 / fan_in)); fans
              from `kernel_fans`: Dense [in, out]; Conv [*window, c_in, c_out] (times the
              receptive field); DenseGeneral / attention kernels by the layer's own contracted and
              output axes (query/key/value [in, heads, head_dim]: fan_in = in, fan_out =
              heads * head_dim; out [heads, head_dim, out]: fan_in = heads * head_dim).
  ``bias``    0 (Dense and conv biases, LayerNorm / BatchNorm offsets).
  ``scale``   1 (LayerNorm / BatchNorm / GroupNorm / RMSNorm scales).
  any other   N(0, 1 / n), n the size of the array's last axis (embedding tables, position
              embeddings, class tokens, a user's own ``self.param``): flax's ``nn.Embed`` default,
              unit expected squared norm per row of n features.

The normals are not truncated (flax's ``glorot_normal`` truncates), so r_X below is exact in
expectation. Conventions (`INIT_CONVENTIONS`): ``xavier`` and ``he`` as above; ``isotropic``:
every one of the D parameters (biases and scales too) ~ N(0, r_X^2 / D), so that
E|theta|^2 = r_X^2 as for ``xavier`` but with no layer structure.

r_X = sqrt(E|theta|^2) under the ``xavier`` rule, over every parameter array:
r_X^2 = sum_kernels n 2 / (fan_in + fan_out) + (number of scale entries) + sum_other n / n_last.

`units_radius` is another reference radius, sqrt(sum_kernels n / fan_in): the E|theta|^2 of
LeCun-normal kernels N(0, 1 / fan_in) and nothing else, which for an MLP is the square root of the
number of units of the layers after the input (sqrt(200 + 200 + 10) = 20.25 for 3072-200-200-10,
against r_X = 24.38): the radius Chang's radius-dynamics poster calls r_X.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gzone.models.apply import _kwargs, param_shapes

INIT_CONVENTIONS = ("xavier", "he", "isotropic")


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel from its shape: Dense [in, out]; Conv [*window, c_in, c_out]."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return receptive * int(shape[-2]), receptive * int(shape[-1])


def _path_name(path) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def kernel_fans(module: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, int]]:
    """(fan_in, fan_out) of every ``kernel`` of the module, keyed by its path (``layer/.../kernel``).

    DenseGeneral layers (and so flax's attention projections) are found by running the
    initialiser under `flax.linen.intercept_methods` (shapes only, no FLOPs): their kernel is
    [*batch_dims, *contracted axes, *features], so the fans are the products of the contracted and
    of the feature axes. Every other kernel gets `fans` of its shape.
    """
    general: dict[str, tuple[int, int]] = {}

    def interceptor(next_fun, args, kwargs, context):
        m = context.module
        if isinstance(m, nn.DenseGeneral):
            axis = m.axis if isinstance(m.axis, Sequence) else (m.axis,)
            features = m.features if isinstance(m.features, Sequence) else (m.features,)
            batch = m.batch_dims if isinstance(m.batch_dims, Sequence) else (m.batch_dims,)
            general["/".join(m.path)] = (len(batch), len(axis), len(features))
        return next_fun(*args, **kwargs)

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    with nn.intercept_methods(interceptor):
        shapes = jax.eval_shape(
            lambda: module.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype), **_kwargs(module, False))
        )["params"]
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        if getattr(path[-1], "key", None) != "kernel":
            continue
        name = _path_name(path)
        layer = name.rsplit("/", 1)[0]
        if layer in general:
            nb, n_in, _ = general[layer]
            out[name] = (int(np.prod(leaf.shape[nb : nb + n_in])), int(np.prod(leaf.shape[nb + n_in :])))
        else:
            out[name] = fans(leaf.shape)
    return out


def leaf_rule(name: str, shape: Sequence[int], convention: str, fan: tuple[int, int] | None):
    """(std, constant) of one parameter array: entries ~ constant + std N(0, 1) (module docstring)."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "kernel":
        fan_in, fan_out = fan if fan is not None else fans(shape)
        return math.sqrt(2.0 / (fan_in + fan_out) if convention != "he" else 2.0 / fan_in), 0.0
    if leaf == "bias":
        return 0.0, 0.0
    if leaf == "scale":
        return 0.0, 1.0
    return 1.0 / math.sqrt(int(shape[-1]) if len(shape) else 1), 0.0


def _rules(module: nn.Module, input_shape, convention: str):
    """[(path, shape struct, std, constant)] per leaf in ravel_pytree order, and the treedef."""
    shapes = param_shapes(module, input_shape)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    kf = kernel_fans(module, input_shape) if any(_is_kernel(p) for p, _ in leaves) else {}
    rules = []
    for path, leaf in leaves:
        name = _path_name(path)
        std, const = leaf_rule(name, leaf.shape, convention, kf.get(name))
        rules.append((path, leaf, std, const))
    return rules, treedef


def _is_kernel(path) -> bool:
    return getattr(path[-1], "key", None) == "kernel"


def xavier_std_tree(shapes: Any) -> Any:
    """Per-leaf std of the Xavier rule from shapes alone (kernel fans by `fans`; biases and scales 0)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf_rule(_path_name(path), leaf.shape, "xavier", None)[0], shapes
    )


def _mean_sq(leaf, std: float, const: float) -> float:
    return float(np.prod(leaf.shape)) * (std**2 + const**2)


def xavier_radius(module: nn.Module, input_shape: Sequence[int]) -> float:
    """Expected Xavier radius r_X = sqrt(E|theta|^2) (module docstring).

    For D in the thousands and more, E|theta| agrees with this to O(1/D) relative.
    """
    rules, _ = _rules(module, input_shape, "xavier")
    return math.sqrt(sum(_mean_sq(leaf, std, const) for _, leaf, std, const in rules))


def units_radius(module: nn.Module, input_shape: Sequence[int]) -> float:
    """sqrt(sum over kernels of size / fan_in) (module docstring): sqrt(number of units after the input)
    for Dense layers (each kernel [in, out] adds out), output channels per conv kernel."""
    kf = kernel_fans(module, input_shape)
    shapes = param_shapes(module, input_shape)
    total = 0.0
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        if _is_kernel(path):
            total += float(np.prod(leaf.shape)) / kf[_path_name(path)][0]
    return math.sqrt(total)


def layer_xavier_radii(module: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
    """sqrt(E|theta_l|^2) of each layer's parameters under the Xavier rule, keyed by the layer's path
    (the parameter path without its last name, e.g. ``dense_00`` or ``block_00/conv_00``)."""
    rules, _ = _rules(module, input_shape, "xavier")
    out: dict[str, float] = {}
    for path, leaf, std, const in rules:
        name = _path_name(path)
        layer = name.rsplit("/", 1)[0] if "/" in name else name
        out[layer] = out.get(layer, 0.0) + _mean_sq(leaf, std, const)
    return {k: math.sqrt(v) for k, v in out.items()}


def init_params(
    key: jax.Array,
    module: nn.Module,
    input_shape: Sequence[int],
    convention: str = "xavier",
    dtype=jnp.float32,
) -> Any:
    """Samples parameters by a named convention (see the module docstring).

    Args:
      key: PRNG key (split into one key per parameter array, in ravel_pytree order).
      module: the flax module.
      input_shape: shape of one example.
      convention: one of INIT_CONVENTIONS.
      dtype: parameter dtype.

    Returns:
      The params pytree (the ``'params'`` collection's contents).
    """
    if convention not in INIT_CONVENTIONS:
        raise ValueError(f"init convention {convention!r} unknown; allowed: {', '.join(INIT_CONVENTIONS)}")
    rules, treedef = _rules(module, input_shape, "he" if convention == "he" else "xavier")
    keys = jax.random.split(key, len(rules))
    if convention == "isotropic":
        D = sum(int(np.prod(leaf.shape)) for _, leaf, _, _ in rules)
        std = xavier_radius(module, input_shape) / math.sqrt(D)
        rules = [(p, leaf, std, 0.0) for p, leaf, _, _ in rules]
    new = []
    for k, (_, leaf, std, const) in zip(keys, rules):
        if std > 0:
            sample = std * jax.random.normal(k, leaf.shape, dtype)
            new.append(sample + const if const else sample)
        else:
            new.append(jnp.full(leaf.shape, const, dtype))
    return jax.tree_util.tree_unflatten(treedef, new)
