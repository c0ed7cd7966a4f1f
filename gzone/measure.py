"""One point measurement, composed from options: loss, gradient, subspace Hessian, full space, logits.

    measure = make_measure_fn(fm, Spec(subspace=True, gn_split=True, full=fullspace.Spec(10)))
    out = measure(key, theta, P, x, y)            # one point; vmap / map it over seeds
    out = measure(key, theta, P, x, y, temperature=T)   # the loss of the logits / T (T data)

Always: ``loss``, ``accuracy``, ``grad_norm`` (|g|), ``grad_radial`` (g . theta / |theta|), ``radius``
(|theta|), on the fixed examples (x [N, ...], y [N]). Norms are computed without overflow or underflow
(`subspace.norm`: the radius is right at 1e-30 and 1e30 in float32). Non-finite policy: where the loss
or any logit is not finite, every metric but ``radius`` is NaN (accuracy included: an argmax of NaN
logits would be finite garbage); the caller records it and goes on. Options (`Spec`, all static):

  subspace       the exact subspace Hessian P^T H P of the projection P [D, d] (`curvature.hessian`):
                 `SUBSPACE_SCALARS` (frac_pos, trace_over_frob, trace, frob, top, bottom), ``eigvals`` [d],
                 ``n_pos`` (the number of positive eigenvalues)
  gn_split       with subspace: P^T G P and P^T R P, R = H - G (`fullspace.subspace_split`): gn_*, res_*
  full           full-space Tr/||.||_F with standard errors, extreme Lanczos eigenvalues, the SLQ
                 quadrature of H's spectral density (`fullspace.estimates`, probes from ``key``): full_*,
                 density_nodes and density_weights [probe, node]
  top_k, order   the top-k Ritz pairs of H by Lanczos from ``key``: ``top_eigs`` [k] (largest first) and
                 ``overlap`` [k] (the share of |g|^2 in the span of the top j Ritz vectors)
  gram           the logit-gradient Gram matrix on (xg, yg) grouped by logit and class
                 (`curvature.logits.cosine_groups`): q_*, q_*_std, n_*, ``block_mean``, ``block_count``
  logit_var      the variance of the logits across classes, averaged over the examples
  example_chunk  the examples in N / example_chunk chunks (it must divide N), accumulated by a
                 ``lax.scan`` whose body is one chunk's gradient, P^T H_c P and P^T G_c P (the loss is
                 a mean: chunk means averaged), so peak memory is one chunk's activations; equal to
                 all N at once up to rounding. Only the per-example sums above (base metrics,
                 subspace, gn_split), and not with batch statistics (`check_example_chunk`)

`make_point_fn` is the radius scan's measurement: a point at a radius and a projection from keys,
then `make_measure_fn`. Everything is traceable: jit it once at the caller.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from gzone import curvature, flat, layer_metric, projections, subspace
from gzone.curvature import fullspace, gauss_newton, logits, spectra

Array = jax.Array
BASE_SCALARS = ("loss", "accuracy", "grad_norm", "grad_radial", "radius")
SUBSPACE_SCALARS = ("frac_pos", "trace_over_frob", "trace", "frob", "top", "bottom")
SCALAR_METRICS = BASE_SCALARS + SUBSPACE_SCALARS  # a radius scan's scalars (`schema.SCAN_SCALARS`)


@dataclasses.dataclass(frozen=True)
class Gram:
    """The logit-gradient Gram option: C classes, examples per Jacobian block (divides the Gram examples)."""

    num_classes: int
    chunk: int = 10


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to measure at a point (see the module docstring)."""

    subspace: bool = False
    hessian_method: str = "linearize_map"
    chunk_size: int | None = None
    gn_split: bool = False
    full: fullspace.Spec | None = None
    top_k: int = 0
    order: int = 0
    gram: Gram | None = None
    logit_var: bool = False
    example_chunk: int | None = None

    def __post_init__(self):
        if self.gn_split and not self.subspace:
            raise ValueError("gn_split needs subspace=True")
        if self.top_k and not 1 <= self.top_k <= self.order:
            raise ValueError(f"need 1 <= top_k <= order, got top_k={self.top_k}, order={self.order}")
        if self.example_chunk is not None:
            other = [n for n, on in (("full", self.full is not None), ("top_k", self.top_k),
                                     ("gram", self.gram is not None), ("logit_var", self.logit_var)) if on]
            if other:
                raise ValueError(f"example_chunk does not support {', '.join(other)} (not per-example sums)")
            if self.example_chunk < 1:
                raise ValueError(f"example_chunk must be >= 1, got {self.example_chunk}")
        if self.hessian_method not in curvature.METHODS:
            raise ValueError(
                f"method {self.hessian_method!r} unknown; allowed: {', '.join(curvature.METHODS)}"
            )


def make_measure_fn(fm: flat.FlatModel, spec: Spec) -> Callable[..., dict[str, Array]]:
    """measure(key, theta, P, x, y, xg=None, yg=None, temperature=None) -> the spec's metrics at theta [D].

    ``P`` is the projection of the subspace option (None without it); ``key`` feeds the full-space
    probes and the top-k Lanczos start (None without them); (xg, yg) are the Gram option's examples;
    ``temperature`` (a scalar, data) measures the model with its logits divided by it
    (`flat.with_temperature`; None: fm as it is).
    Cost: 1 gradient; d + 2 HVPs for the subspace (d more Gauss-Newton products with the split);
    one HVP per probe; `order` HVPs for top_k; the Gram matrix (`logits.logit_gradient_gram`).
    """

    def measure(key, theta, P, x, y, xg=None, yg=None, temperature=None):
        fm_t = fm if temperature is None else flat.with_temperature(fm, temperature)
        return _measure(fm_t, key, theta, P, x, y, xg, yg)

    def _measure(fm, key, theta, P, x, y, xg, yg):
        if spec.example_chunk:
            sums, z = _chunk_sums(fm, spec, theta, P, x, y), None
        else:
            sums, z = _sums(fm, spec, theta, P, x, y)
        value, grad = sums["loss"], sums["grad"]
        norm = subspace.norm(theta)
        out = {
            "loss": value,
            "accuracy": sums["correct"] / x.shape[0],
            "grad_norm": subspace.norm(grad),
            "grad_radial": jnp.vdot(grad, theta) / norm,
            "radius": norm,
        }
        if spec.subspace:
            metrics = curvature.spectrum_metrics(sums["h"])
            out.update(
                {k: metrics[k] for k in SUBSPACE_SCALARS},
                eigvals=metrics["eigvals"],
                n_pos=jnp.sum(metrics["eigvals"] > 0).astype(theta.dtype),
            )
            if spec.gn_split:
                out.update(fullspace.split_metrics(sums["h"], sums["g"]))
        if spec.full is not None:
            out.update(fullspace.estimates(key, fm, theta, x, y, spec=spec.full))
        if spec.top_k:
            eigs, vectors = spectra.extreme_eigs(
                key,
                curvature.loss_hvp(fm, theta, x, y),
                dim=fm.D,
                k=spec.top_k,
                order=spec.order,
                which="top",
                dtype=theta.dtype,
            )
            out.update(top_eigs=eigs, overlap=logits.gradient_overlap(vectors, grad))
        if spec.gram is not None:
            gram = logits.logit_gradient_gram(fm, theta, xg, chunk=spec.gram.chunk)
            out.update(logits.cosine_groups(gram, yg, num_classes=spec.gram.num_classes))
        if spec.logit_var:
            out["logit_var"] = logits.logit_variance(z)
        finite = jnp.isfinite(value) & (sums["bad"] == 0)
        return {k: v if k == "radius" else _nan_unless(finite, v) for k, v in out.items()}

    return measure


def _sums(fm: flat.FlatModel, spec: Spec, theta: Array, P, x: Array, y: Array) -> tuple[dict, Array]:
    """The per-example-sum quantities on the batch (x [N, ...], y [N]) and its logits z [N, C].

    Returns ({loss, grad [D], correct (examples classified right), bad (non-finite logits), and with
    the subspace option h = P^T H P [d, d], with gn_split g = P^T G P [d, d]}, z).
    """
    f = flat.loss_fn(fm, x, y)
    value, grad = jax.value_and_grad(f)(theta)
    z = flat.logits(fm, theta, x)
    sums = {
        "loss": value,
        "grad": grad,
        "correct": jnp.sum(jnp.argmax(z, -1) == y),
        "bad": jnp.sum(~jnp.isfinite(z)),
    }
    if spec.subspace:
        sums["h"] = curvature.subspace_hessian(
            f, theta, P, method=spec.hessian_method, chunk_size=spec.chunk_size
        )
        if spec.gn_split:
            sums["g"] = curvature.subspace_matrix(
                gauss_newton.make_gauss_newton_mv(fm, theta, x), P, chunk_size=spec.chunk_size
            )
    return sums, z


def check_example_chunk(fm: flat.FlatModel, n: int, example_chunk: int) -> None:
    """Raises ValueError unless N = n examples can be measured in chunks of `example_chunk`."""
    if fm.state == "batch":
        raise ValueError(
            "example chunks need a loss that is a mean over examples; with batch statistics (model_state "
            "batch) it is not: use model_state frozen or no example chunks"
        )
    if example_chunk < 1 or n % example_chunk:
        raise ValueError(f"example_chunk={example_chunk} must divide the number of examples N={n}")


def _chunk_sums(fm: flat.FlatModel, spec: Spec, theta: Array, P, x: Array, y: Array) -> dict:
    """`_sums` over N / example_chunk chunks of the examples, accumulated by a ``lax.scan``.

    The scan's body does one chunk's whole computation (gradient, P^T H_c P, P^T G_c P), so nothing
    is differentiated through the scan and the live activations are one chunk's. The loss is a mean,
    so the mean-type sums (loss, grad, h, g) are averaged over the chunks; the counts are added.
    """
    n, c = x.shape[0], spec.example_chunk
    check_example_chunk(fm, n, c)
    chunks = (x.reshape(n // c, c, *x.shape[1:]), y.reshape(n // c, c, *y.shape[1:]))
    one = lambda xy: _sums(fm, spec, theta, P, *xy)[0]  # noqa: E731

    def body(total, xy):
        return jax.tree_util.tree_map(jnp.add, total, one(xy)), None

    zero = jax.tree_util.tree_map(
        lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(one, (chunks[0][0], chunks[1][0]))
    )
    total = jax.lax.scan(body, zero, chunks)[0]
    return {k: v if k in ("correct", "bad") else v / (n // c) for k, v in total.items()}


def _nan_unless(finite: Array, value: Array) -> Array:
    """value where `finite`, else NaN (integer arrays become floats to hold it)."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.inexact):
        value = value.astype(jnp.float32)
    return jnp.where(finite, value, jnp.nan)


def make_point_fn(
    fm: flat.FlatModel,
    *,
    d: int,
    projection: str,
    convention: str,
    sample_fn: Callable[[Array], Array],
    r_x: float,
    dtype=jnp.float32,
    hessian_method: str = "linearize_map",
    chunk_size: int | None = None,
    metric: str = "none",
    renormalise: bool = False,
    gn_split: bool = False,
    fullspace_spec: fullspace.Spec | None = None,
    example_chunk: int | None = None,
) -> Callable[..., dict[str, Array]]:
    """The radius scan's single-seed measurement at one radius.

    Args:
      fm: the flat model; d, projection: the subspace's dimension and kind (`projections.KINDS`).
      convention, sample_fn, r_x: how the point is drawn (`subspace.point_at_radius`).
      metric, renormalise: the per-layer metric on P (`layer_metric.apply`; ``none`` and False
        leave P as `projections.make` draws it).
      gn_split: also the Gauss-Newton and residual parts of P^T H P.
      fullspace_spec: also full-space estimates, probes from `fullspace.probe_key` (k_init): the
        same at every d and metric.
      example_chunk: examples per chunk of the measurement (`Spec.example_chunk`; None: all at once).

    Returns:
      point_fn(k_init, k_proj, radius, x, y, temperature=None) -> the `make_measure_fn` dict (without
      ``n_pos``); the temperature (data) divides the logits.
    """
    if convention not in subspace.POINT_CONVENTIONS:
        raise ValueError(
            f"point convention {convention!r} unknown; allowed: {', '.join(subspace.POINT_CONVENTIONS)}"
        )
    if projection not in projections.KINDS:
        raise ValueError(f"projection {projection!r} unknown; allowed: {', '.join(projections.KINDS)}")
    if not 1 <= d <= fm.D:
        raise ValueError(f"d={d} must be in [1, D={fm.D}]")
    make_P = layer_metric.make_projection_fn(
        fm, d=d, kind=projection, metric=metric, renormalise=renormalise, dtype=dtype
    )
    measure = make_measure_fn(
        fm,
        Spec(
            subspace=True,
            hessian_method=hessian_method,
            chunk_size=chunk_size,
            gn_split=gn_split,
            full=fullspace_spec,
            example_chunk=example_chunk,
        ),
    )

    def point_fn(k_init, k_proj, radius, x, y, temperature=None):
        theta = subspace.point_at_radius(
            k_init, radius, convention=convention, sample_fn=sample_fn, D=fm.D, r_x=r_x, dtype=dtype
        )
        key = fullspace.probe_key(k_init) if fullspace_spec is not None else None
        out = measure(key, theta, make_P(k_proj), x, y, temperature=temperature)
        out.pop("n_pos")
        return out

    return point_fn
