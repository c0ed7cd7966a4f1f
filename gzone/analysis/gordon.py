r"""The threshold training dimension predicted from the Hessian at a solution (Larsen et al. 2021).

Gordon's escape theorem, as Larsen, Fort, Becker & Ganguli use it: a random d-dimensional affine
subspace through the initialisation theta_0 hits a set S with high probability once

    d + w^2(S_0) > D,                                                                      (1)

S_0 being the directions from theta_0 into S (S projected onto the unit sphere around theta_0) and
w(K) = E_g sup_{u in K} <g, u>, g ~ N(0, I_D), the Gaussian width. For convex S the directions into S
form a convex cone K, and the sharp form of (1) is the approximate kinematic formula of Amelunxen,
Lotz, McCoy & Tropp: a random subspace hits K once d + delta(K) > D (to within O(sqrt(D))), with the
statistical dimension delta(K) = E |proj_K(g)|^2, w^2 <= delta <= w^2 + 1. So d* ~ D - delta(K).

The quadratic well. Near a solution theta* with Hessian H, L(theta) = L* + (1/2) x^T H x with
x = theta - theta*, and the sublevel set S(eps) = {L <= L* + eps} is the ellipsoid x^T A x <= 1,
A = H / (2 eps): semi-axes r_i = sqrt(2 eps / lambda_i) along H's eigenvectors v_i (infinite where
lambda_i <= 0). Let b = theta_0 - theta*, R = |b|, and beta = b^T A b - 1 > 0 (theta_0 outside).

Exact cone (`cone_dimension`). The ray theta_0 + t u (t > 0) meets the ellipsoid iff the minimum
over t of (b + t u)^T A (b + t u), which is b^T A b - (u^T A b)^2 / u^T A u, is <= 1 (with
u^T A b < 0), i.e. iff u^T M u >= 0 for

    M = (A b)(A b)^T - beta A.                                                              (2)

M is a rank-one update of -beta A (negative semidefinite): it has one positive eigenvalue mu_0 and
the others -mu_i <= 0. In M's orthonormal eigenbasis K = {mu_0 u_0^2 >= sum_i mu_i u_i^2}: an elliptic
cone around its axis whose half-angles alpha_i have tan^2 alpha_i = mu_0 / mu_i (alpha_i = 90 deg
where mu_i = 0: a flat direction of H). The statistical dimension of such a cone is, to O(1),
1 + sum_i sin^2 alpha_i (a circular cone of half-angle alpha: D sin^2 alpha), so

    d*(eps) ~ D - 1 - sum_i mu_0 / (mu_0 + mu_i).                                           (3)

Matrix-free form (`cone_prediction`): the rank-one update moves the -beta a_i (a_i = lambda_i /
(2 eps)) only within their gaps (interlacing), so mu_i ~ beta a_i and

    d*(eps) ~ D - 1 - sum_i mu_0 / (mu_0 + beta a_i),                                       (3')

which needs H's spectrum (Lanczos outliers + an SLQ bulk, `combine_spectrum`) and beta and mu_0
(`cone_terms`: both from a Lanczos run on H started at b, via a secular equation).

Larsen's approximation (`larsen_prediction`). Taking every axis to lie across the line of sight, an
extent r_i at distance R subtends sin alpha_i = r_i / sqrt(R^2 + r_i^2), and with delta ~ w^2 ~
sum_i sin^2 alpha_i:

    d*(eps) ~ D - sum_i r_i^2 / (R^2 + r_i^2) = D - sum_i 2 eps / (lambda_i R^2 + 2 eps).     (4)

(3') replaces 1 / R^2 in (4)'s tan^2 alpha_i = r_i^2 / R^2 by mu_0 / beta, which counts the well's own
extent along the line of sight; the two agree when the well is far and narrow (beta >> 1). On true
quadratics in a few hundred dimensions, (3) and (3') match Monte Carlo thresholds of random
subspaces (exact hits by `subspace_hits`) to a few dimensions, while (4) overestimates d* once the
sublevel set is wide compared with R (tests/test_gordon.py).
"""

from __future__ import annotations

import numpy as np


def _check(epsilon: float, distance: float | None = None) -> None:
    if not epsilon > 0 or (distance is not None and not distance > 0):
        raise ValueError(f"epsilon and the distance must be positive, got {epsilon}, {distance}")


def larsen_prediction(
    values, multiplicities=None, *, dimension: int, epsilon: float, distance: float
) -> float:
    """d*(eps) by eq. (4): D - sum_i m_i 2 eps / (lambda_i R^2 + 2 eps) (a term 1 where lambda_i <= 0).

    Args:
      values: [n] Hessian eigenvalues at the solution; multiplicities: [n] how many eigenvalues each
        stands for (None: 1 each; fractional from an SLQ density).
      dimension: D. epsilon: the sublevel set's height above the minimum. distance: R = |b|.
    """
    _check(epsilon, distance)
    lam = np.asarray(values, np.float64)
    m = np.ones_like(lam) if multiplicities is None else np.asarray(multiplicities, np.float64)
    terms = np.where(lam > 0, 2.0 * epsilon / (np.maximum(lam, 0.0) * distance**2 + 2.0 * epsilon), 1.0)
    return float(np.clip(dimension - np.sum(m * terms), 0, dimension))


def cone_prediction(
    values, multiplicities=None, *, dimension: int, epsilon: float, beta: float, mu0: float
) -> float:
    """d*(eps) by eq. (3'): D - 1 - sum_i m_i mu_0 / (mu_0 + beta lambda_i / (2 eps)).

    Args:
      values, multiplicities, dimension, epsilon: as for `larsen_prediction`.
      beta: b^T H b / (2 eps) - 1 (> 0: theta_0 outside the sublevel set).
      mu0: the top eigenvalue of M = A b b^T A - beta A (eq. 2), > 0.
    """
    _check(epsilon)
    if not beta > 0 or not mu0 > 0:
        raise ValueError(
            f"beta and mu0 must be positive (theta_0 outside the sublevel set), got {beta}, {mu0}"
        )
    a = np.maximum(np.asarray(values, np.float64), 0.0) / (2.0 * epsilon)
    m = np.ones_like(a) if multiplicities is None else np.asarray(multiplicities, np.float64)
    return float(np.clip(dimension - 1.0 - np.sum(m * mu0 / (mu0 + beta * a)), 0, dimension))


def cone_dimension(H, b, *, epsilon: float) -> float:
    """d*(eps) by the exact cone, eq. (3), for a dense H [D, D] and b = theta_0 - theta* [D] (small D)."""
    _check(epsilon)
    A = np.asarray(H, np.float64) / (2.0 * epsilon)
    b = np.asarray(b, np.float64)
    Ab = A @ b
    beta = float(b @ Ab) - 1.0
    if not beta > 0:
        return 0.0  # theta_0 is inside the sublevel set: every subspace through it hits it
    mu = np.linalg.eigvalsh(np.outer(Ab, Ab) - beta * A)
    mu0, rest = mu[-1], np.maximum(-mu[:-1], 0.0)
    return float(np.clip(A.shape[0] - 1.0 - np.sum(mu0 / (mu0 + rest)), 0, A.shape[0]))


def cone_terms(nodes, weights, *, b_norm_sq: float, epsilon: float) -> tuple[float, float]:
    """(beta, mu0) of eq. (3') from the spectral measure of H seen from b.

    With H = sum_j lambda_j v_j v_j^T and b_j = v_j . b, the measure puts weight b_j^2 / |b|^2 at
    lambda_j; a Lanczos run on H started at b gives it as Gauss quadrature (`spectra.lanczos(...,
    start=b)` then `spectra.gauss_quadrature`: nodes, weights summing to 1), exact for polynomials of
    degree < 2 x its steps. Then beta = b^T A b - 1 = |b|^2 sum_k w_k a_k - 1 (a_k = nodes / (2 eps)),
    and mu0, the positive eigenvalue of M = (A b)(A b)^T - beta A, is the root of the secular equation

        1 = (A b)^T (mu I + beta A)^{-1} (A b) = |b|^2 sum_k w_k a_k^2 / (mu + beta a_k)

    (decreasing in mu; at mu = 0 its right side is 1 + 1 / beta), solved by bisection. The weights of
    H's own eigen-decomposition give the exact values (tests/test_gordon.py).

    Returns:
      (beta, mu0); beta <= 0 means theta_0 is inside the sublevel set (then mu0 is 0).
    """
    _check(epsilon)
    a = np.maximum(np.asarray(nodes, np.float64).ravel(), 0.0) / (2.0 * epsilon)
    w = np.asarray(weights, np.float64).ravel()
    w = w / w.sum()
    beta = b_norm_sq * float(np.sum(w * a)) - 1.0
    if not beta > 0:
        return beta, 0.0

    def excess(mu):
        return b_norm_sq * float(np.sum(w * a**2 / (mu + beta * a))) - 1.0

    lo, hi = 0.0, max(b_norm_sq * float(np.sum(w * a**2)), 1e-300)  # excess(hi) <= 0: sum w a^2 / hi <= 1
    while excess(hi) > 0:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
        if hi - lo <= 1e-14 * hi:
            break
    return beta, 0.5 * (lo + hi)


def combine_spectrum(top, nodes, weights, *, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """A whole spectrum as (values, multiplicities) from the top-k Lanczos eigenvalues and an SLQ density.

    The k top values count once each; the SLQ quadrature (nodes, weights [P, m] of `spectra.slq`, each
    probe's weights summing to 1) stands for the other D - k eigenvalues: its nodes below the smallest
    top value, their weights rescaled to D - k in total.
    """
    top = np.sort(np.asarray(top, np.float64))[::-1]
    nodes, weights = np.asarray(nodes, np.float64).ravel(), np.asarray(weights, np.float64).ravel()
    keep = nodes < top[-1] if top.size else np.ones_like(nodes, bool)
    bulk = weights[keep]
    if bulk.sum() <= 0:
        raise ValueError("the SLQ quadrature has no mass below the top eigenvalues")
    return np.concatenate([top, nodes[keep]]), np.concatenate(
        [np.ones(top.size), bulk / bulk.sum() * (dimension - top.size)]
    )


def subspace_hits(H, center, start, P, *, epsilon: float) -> tuple[bool, float]:
    """Whether start + span(P) reaches {theta : (1/2)(theta - c)^T H (theta - c) <= eps}, exactly.

    The quadratic's minimum on the subspace in closed form: with b = start - c, A = P^T H P and
    g = P^T H b, it is (1/2) b^T H b + g^T z + (1/2) z^T A z at z = -A^+ g (H positive semidefinite).

    Returns:
      (hit, the minimum).
    """
    H, P = np.asarray(H, np.float64), np.asarray(P, np.float64)
    b = np.asarray(start, np.float64) - np.asarray(center, np.float64)
    Hb = H @ b
    A, g = P.T @ H @ P, P.T @ Hb
    z = np.linalg.lstsq(A, -g, rcond=None)[0]
    value = 0.5 * float(b @ Hb) + float(g @ z) + 0.5 * float(z @ A @ z)
    return value <= epsilon, value


def predictions(well: dict, *, targets, dimension: int) -> dict[str, np.ndarray]:
    """Predicted threshold dimensions per training-loss target, start point and seed, with what drives them.

    Args:
      well: `curvature.wells.well_spectrum`'s arrays with a leading seed axis [G, ...] (the solution
        theta*, its spectrum, and the spectral measures seen from K start points).
      targets: training-loss levels; eps = target - L(theta*) (a target at or below the solution's own
        loss gives NaN: the quadratic model cannot reach it).
      dimension: D.

    Returns:
      dict of [target, start, seed] arrays: ``epsilon``, ``cone`` (eq. 3'), ``larsen`` (eq. 4), ``beta``
      and ``mu0`` (`cone_terms`); [start, seed]: ``distance`` R = |b| and ``start_curvature``
      b^T H_+ b / |b|^2 (H's positive part, from the quadrature seen from b), so that the quadratic
      model's loss at the start is L* + R^2 start_curvature / 2; [start, seed, fraction]: ``line_loss``
      the loss at theta* + s b (`wells.FRACTIONS`; NaN when `well` has none); [seed]: ``loss`` L* and
      ``top`` the largest eigenvalue.
    """
    G, K = np.shape(well["start_sq"])
    names = ("epsilon", "cone", "larsen", "beta", "mu0")
    out = {k: np.full((len(targets), K, G), np.nan) for k in names}
    out["distance"] = np.sqrt(np.asarray(well["start_sq"], np.float64)).T
    out["start_curvature"] = np.zeros((K, G))
    out["loss"] = np.asarray(well["loss"], np.float64).reshape(G)
    out["top"] = np.asarray(well["top"], np.float64).reshape(G, -1).max(-1)
    line = well.get("line_loss")
    out["line_loss"] = (np.full((K, G, 0), np.nan) if line is None
                        else np.moveaxis(np.asarray(line, np.float64), 0, 1))
    for g in range(G):
        values, mult = combine_spectrum(
            well["top"][g], well["nodes"][g], well["weights"][g], dimension=dimension
        )
        for k in range(K):
            w = np.asarray(well["start_weights"][g][k], np.float64).ravel()
            nodes = np.maximum(np.asarray(well["start_nodes"][g][k], np.float64).ravel(), 0.0)
            out["start_curvature"][k, g] = float(np.sum(w * nodes) / np.sum(w))
        for ti, target in enumerate(targets):
            eps = float(target) - out["loss"][g]
            if not eps > 0:
                continue
            for k in range(K):
                sq = float(well["start_sq"][g][k])
                beta, mu0 = cone_terms(
                    well["start_nodes"][g][k], well["start_weights"][g][k], b_norm_sq=sq, epsilon=eps
                )
                out["epsilon"][ti, k, g], out["beta"][ti, k, g], out["mu0"][ti, k, g] = eps, beta, mu0
                out["cone"][ti, k, g] = (
                    cone_prediction(values, mult, dimension=dimension, epsilon=eps, beta=beta, mu0=mu0)
                    if beta > 0
                    else 0.0
                )
                out["larsen"][ti, k, g] = larsen_prediction(
                    values, mult, dimension=dimension, epsilon=eps, distance=np.sqrt(sq)
                )
    return out
