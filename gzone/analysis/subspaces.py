"""The subspaces of the degrees-of-freedom experiments (Li et al. 2018; Larsen et al. 2021).

  random_space(key, anchor, kind=, d=)      a random affine subspace anchor + P z
  lottery_basis(displacements, ...)         top right singular vectors of a trajectory's displacements
  lottery_space(anchor, directions, d)      the lottery subspace of dimension d through `anchor`
  make_subspace_minimizer(loss_fn, ...)     full-batch training of z for any differentiable loss
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gzone import projections, train

Array = jax.Array


def random_space(key: Array, anchor: Array, *, kind: str, d: int) -> train.Space:
    """A random d-dimensional affine subspace anchor + P z (P of a projections.KINDS kind)."""
    return train.Space(anchor, projections.make(kind, key, D=anchor.shape[-1], d=d, dtype=anchor.dtype))


class LotteryBasis(NamedTuple):
    """directions: [D, r] orthonormal columns, by decreasing singular value; singular_values: [r]."""

    directions: np.ndarray
    singular_values: np.ndarray


def lottery_basis(
    displacements, *, rank: int | None = None, centred: bool = False, rtol: float = 1e-6, block: int = 1 << 16
) -> LotteryBasis:
    """Top right singular vectors of a trajectory's displacements X [T, D] (rows theta_t - theta_0).

    Larsen et al.'s lottery subspace is the span of the top d of them (uncentred SVD); ``centred``
    subtracts the mean displacement first (PCA). Computed through the T x T Gram matrix in float64
    (exact products of float32 inputs), G = X X^T = U S^2 U^T, then V = X^T U S^-1 in column
    blocks of D and one Cholesky re-orthonormalisation. Directions whose singular value is below
    rtol * the largest are dropped (the returned r can be smaller than `rank`). Cost T^2 D + D r^2
    multiply-adds; memory D r float64 (1.3 GB at D = 656,810, r = 256) beyond X.
    """
    x = np.asarray(displacements)
    if x.ndim != 2:
        raise ValueError(f"displacements must be [T, D], got shape {x.shape}")
    T, D = x.shape
    mean = x.mean(axis=0, dtype=np.float64) if centred else None
    rows = lambda c: x[:, c].astype(np.float64) - (mean[c] if centred else 0.0)  # noqa: E731
    gram = np.zeros((T, T))
    for start in range(0, D, block):
        xb = rows(slice(start, start + block))
        gram += xb @ xb.T
    lam, u = np.linalg.eigh(gram)
    lam, u = lam[::-1], u[:, ::-1]
    s = np.sqrt(np.clip(lam, 0.0, None))
    keep = int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0
    r = keep if rank is None else min(int(rank), keep)
    w = u[:, :r] / s[:r]
    v = np.empty((D, r), np.float64)
    for start in range(0, D, block):
        c = slice(start, start + block)
        v[c] = rows(c).T @ w
    chol = np.linalg.cholesky(v.T @ v)
    v = np.linalg.solve(chol, v.T).T  # V L^-T: exactly orthonormal in float64, same column order
    return LotteryBasis(v.astype(x.dtype if x.dtype.kind == "f" else np.float64), s[:r])


def lottery_space(anchor: Array, directions: Array, d: int) -> train.Space:
    """The lottery subspace of dimension d through `anchor`: Dense(directions[:, :d])."""
    if not 1 <= d <= directions.shape[-1]:
        raise ValueError(f"lottery dimension d={d} must be in [1, {directions.shape[-1]}] (the basis rank)")
    return train.Space(anchor, projections.Dense(directions[..., :d]))


def make_subspace_minimizer(
    loss_fn: Callable[[Array], Array], *, optimizer: str = "adam", lr: float = 1e-2, steps: int = 1000
) -> Callable[[train.Space], tuple[Array, Array]]:
    """Full-batch training of z in theta = a + P z for any loss_fn(theta) (one lax.scan, vmappable).

    Returns:
      fit(space) -> (final loss, z [d]), starting from z = 0 (theta = the anchor).
    """
    opt = train.make_optimizer(optimizer, lr)

    def fit(space: train.Space):
        d = space.P.shape[1]
        f = lambda z: loss_fn(space.anchor + projections.apply(space.P, z))  # noqa: E731
        z0 = jnp.zeros(d, space.anchor.dtype)

        def body(carry, _):
            z, opt_state = carry
            updates, opt_state = opt.update(jax.grad(f)(z), opt_state, z)
            return (optax.apply_updates(z, updates), opt_state), None

        (z, _), _ = jax.lax.scan(body, (z0, opt.init(z0)), None, length=steps)
        return f(z), z

    return fit
