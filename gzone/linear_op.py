"""Linear maps x -> A x with an explicit transpose, as one JAX primitive.

JAX transposes a function operation by operation: the transpose of a gather is a scatter-add and
the transpose of a scatter-add is a gather. Where a map and its transpose each have a fast form of
their own (a sparse P stored row-major for P z and column-major for P^T v; Fastfood's permutation
and its inverse), autodiff would replace the fast form of one direction by the slow scatter of
the other. `LinearOp` pairs the two forms, and `apply(op, operands, x)` binds a primitive whose

  * JVP in x is the same map applied to the tangent of x (and, where the operands themselves
    carry tangents, the derivative of ``forward`` in them, by ordinary autodiff);
  * transpose (reverse mode, `jax.linear_transpose`) is ``op.transpose`` applied to the cotangent;
  * batching rule vmaps the forms (the vmaps are recorded in the primitive's parameters, so a
    transpose under `vmap`, at any nesting, still uses ``op.transpose``);
  * lowering is ``forward`` itself: XLA compiles the same operations as the plain function.

So grad, jvp, jax.hessian (forward over reverse), linear_transpose, vmap and lax.scan all work,
and every derivative of A x in x is a product with A or A^T in their fast forms. The map must be
linear in x; derivatives in the operands (rarely wanted) go through ordinary autodiff.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core
from jax.interpreters import ad, batching, mlir

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LinearOp:
    """A linear map in two forms: ``forward(operands, x) = A x`` and ``transpose(operands, y) = A^T y``.

    Both must be module-level functions (the op is a static, hashable parameter of the primitive)
    of a pytree of arrays `operands` (the map's data, e.g. a projection) and a vector. Where a form
    calls something autodiff cannot differentiate (a custom call), ``forward_ad`` /
    ``transpose_ad`` give the same map in plain jnp, used for derivatives in the operands only.
    """

    name: str
    forward: Callable[[Any, Array], Array]
    transpose: Callable[[Any, Array], Array]
    forward_ad: Callable[[Any, Array], Array] | None = None
    transpose_ad: Callable[[Any, Array], Array] | None = None

    @property
    def adjoint(self) -> "LinearOp":
        return LinearOp(f"{self.name}_T", self.transpose, self.forward, self.transpose_ad, self.forward_ad)

    @property
    def for_autodiff(self) -> "LinearOp":
        """The op with its plain-jnp forms (for autodiff in the operands)."""
        forward, transpose = self.forward_ad or self.forward, self.transpose_ad or self.transpose
        return LinearOp(f"{self.name}_ad", forward, transpose)


_linear_p = jex_core.Primitive("gzone_linear")


def apply(op: LinearOp, operands: Any, x: Array) -> Array:
    """A x with A = op over `operands` (a pytree of arrays); see the module docstring."""
    leaves, treedef = jax.tree_util.tree_flatten(operands)
    return _linear_p.bind(*leaves, x, op=op, treedef=treedef, levels=())


@functools.lru_cache(maxsize=None)
def _function(op: LinearOp, treedef, levels: tuple) -> Callable:
    """(*leaves, x) -> op.forward, vmapped once per level (innermost first), batch axes out at 0."""

    def base(*args):
        return op.forward(jax.tree_util.tree_unflatten(treedef, args[:-1]), args[-1])

    f = base
    for axes in levels:
        f = jax.vmap(f, in_axes=axes, out_axes=0)
    return f


@functools.lru_cache(maxsize=None)
def _adjoint_function(op: LinearOp, treedef, levels: tuple) -> Callable:
    """(*leaves, ct) -> the cotangent of x: op.transpose under the same vmaps, summed over the levels
    where x was not batched (there x was shared by every batch element)."""

    def base(*args):
        return op.transpose(jax.tree_util.tree_unflatten(treedef, args[:-1]), args[-1])

    f = base
    for axes in levels:
        x_axis = axes[-1]
        g = jax.vmap(f, in_axes=(*axes[:-1], 0), out_axes=0 if x_axis is None else x_axis)
        f = g if x_axis is not None else functools.partial(_sum_leading, g)
    return f


def _sum_leading(g: Callable, *args) -> Array:
    return jnp.sum(g(*args), axis=0)


def _abstract_eval(*avals, op, treedef, levels):
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    out = jax.eval_shape(_function(op, treedef, levels), *specs)
    return jax.core.ShapedArray(out.shape, out.dtype)


def _lowering(*args, op, treedef, levels):
    return _function(op, treedef, levels)(*args)


@functools.lru_cache(maxsize=None)
def _jitted(op: LinearOp, treedef, levels: tuple) -> Callable:
    return jax.jit(_function(op, treedef, levels))


def _impl(*args, op, treedef, levels):
    return _jitted(op, treedef, levels)(*args)


def _jvp(primals, tangents, *, op, treedef, levels):
    out = _linear_p.bind(*primals, op=op, treedef=treedef, levels=levels)
    *d_leaves, dx = tangents
    parts = []
    if type(dx) is not ad.Zero:
        parts.append(_linear_p.bind(*primals[:-1], dx, op=op, treedef=treedef, levels=levels))
    moving = [i for i, t in enumerate(d_leaves) if type(t) is not ad.Zero]
    if moving:  # the operands carry tangents: d(A x) = dA x, by autodiff of the forward form
        f = _function(op.for_autodiff, treedef, levels)

        def of_operands(*sub):
            args = list(primals)
            for i, s in zip(moving, sub):
                args[i] = s
            return f(*args)

        parts.append(jax.jvp(of_operands, [primals[i] for i in moving], [d_leaves[i] for i in moving])[1])
    if not parts:
        return out, ad.Zero(jax.typeof(out).to_tangent_aval())
    tangent = parts[0]
    for p in parts[1:]:
        tangent = tangent + p
    return out, tangent


def _transpose(ct, *args, op, treedef, levels):
    *leaves, x = args
    if any(ad.is_undefined_primal(leaf) for leaf in leaves):
        raise NotImplementedError(f"{op.name}: no transpose in the map's operands (it is linear in x only)")
    none = [None] * len(leaves)
    if type(ct) is ad.Zero:
        return [*none, None]
    if levels:  # under vmaps recorded in the parameters: the batched transpose form, directly
        x_bar = _adjoint_function(op, treedef, levels)(*leaves, ct)
    else:
        x_bar = _linear_p.bind(*leaves, ct, op=op.adjoint, treedef=treedef, levels=())
    return [*none, x_bar.astype(x.aval.dtype)]


def _batch(args, dims, *, op, treedef, levels):
    axes = tuple(None if d is None else d for d in dims)
    return _linear_p.bind(*args, op=op, treedef=treedef, levels=(*levels, axes)), 0


_linear_p.def_impl(_impl)
_linear_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(_linear_p, mlir.lower_fun(_lowering, multiple_results=False))
ad.primitive_jvps[_linear_p] = _jvp
ad.primitive_transposes[_linear_p] = _transpose
batching.primitive_batchers[_linear_p] = _batch
