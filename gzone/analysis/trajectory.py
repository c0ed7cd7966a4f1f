r"""Weight-space trajectories (Lipton 2016): snapshots on disk, streamed PCA, distances, loss on planes
and lines.

    store = snapshots.SnapshotStore(folder)                      # gzone.runs.snapshots: one .npy per epoch
    run_fn = snapshots.to_store(run_fn, store)                   # snapshots leave each chunk for the disk
    state, hist = train.fit(run_fn, state, epochs=E)             # hist holds no snapshots
    stats = trajectory.gram(store.chunks(0))                     # T x T Gram matrix, one streamed pass
    centred = trajectory.pca_from_gram(stats, centred=True)      # (centred=False: uncentred PCA)
    U = trajectory.directions(store.chunks(0), centred, mean=stats.mean, k=2)   # [2, D]
    fns = trajectory.make_surface_fns(metric_fn)                 # loss on a plane / along a line, vmapped

Snapshots: `train.TrainSpec(snapshot_every=k)` keeps theta every k steps inside the training scan
(on the device, for one compiled chunk of epochs only); `to_store` moves each chunk's snapshots to
one .npy file per epoch and removes them from the history, so host memory holds one chunk
(epochs_per_call x S x n_snap x D numbers) whatever the run's length. Files are read back as
memory maps.

PCA of T snapshots x D parameters goes through the T x T Gram matrix G = X X^T, never a D x D
covariance. `gram` streams column blocks X[:, c] of all snapshots (float64, at most `block_bytes`
at a time): G = sum_c X[:, c] X[:, c]^T and the mean, in ONE pass over the disk. The centred Gram
matrix is J G J with J = I - 1 1^T / T (float64 throughout: the rounding, ~1e-16 |theta|^2 per
entry, stays far below the variance along any component of interest). Eigenvectors V and eigenvalues
lambda of G give
the PCA: scores (coordinates of snapshot t on axis k) V_tk sqrt(lambda_k), explained ratios
lambda_k / sum(lambda), unit axes u_k = X^T V_k / sqrt(lambda_k) (a second streamed pass).
Cost: T^2 D multiply-adds and T^2 float64 numbers of memory.

Uncentred PCA keeps the origin: its "explained ratio" is a share of sum_t |theta_t|^2, and its
first axis mostly points at the trajectory's mean.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


# --------------------------------------------------------------------------- snapshots on disk


class GramStats(NamedTuple):
    """One streamed pass over T snapshots: gram [T, T] = X X^T (float64) and their mean [D]."""

    gram: np.ndarray
    mean: np.ndarray

    @property
    def sq_norms(self) -> np.ndarray:
        """[T] |theta_t|^2 (the radius along the trajectory is its square root)."""
        return np.diag(self.gram).copy()

    @property
    def centred(self) -> np.ndarray:
        """[T, T] the Gram matrix of the centred snapshots, J G J."""
        return _centre(self.gram)


def _centre(g: np.ndarray) -> np.ndarray:
    """J G J with J = I - 1 1^T / T."""
    row = g.mean(axis=0)
    return g - row[None, :] - row[:, None] + g.mean()


def _rows(chunks: Sequence[np.ndarray]) -> tuple[int, int]:
    sizes = [np.shape(c) for c in chunks]
    if not sizes or any(len(s) != 2 for s in sizes) or len({s[1] for s in sizes}) != 1:
        raise ValueError(f"chunks must be a non-empty list of [t_i, D] arrays with one D, got shapes {sizes}")
    return sum(s[0] for s in sizes), sizes[0][1]


def _column_blocks(chunks, block_bytes):
    """Yields (column slice, X[:, slice] float64 [T, cols]) over all columns, bounded in memory."""
    T, D = _rows(chunks)
    cols = max(1, int(block_bytes) // (8 * T))
    for c0 in range(0, D, cols):
        c = slice(c0, min(D, c0 + cols))
        yield c, np.concatenate([np.asarray(ch[:, c], np.float64) for ch in chunks])


def gram(chunks: Sequence[np.ndarray], *, block_bytes: int = 1 << 27) -> GramStats:
    """The Gram matrix and mean of snapshots given as row chunks, in one pass.

    Args:
      chunks: arrays [t_i, D] (in-memory or memory-mapped) whose rows, in order, are the T snapshots.
      block_bytes: memory of one float64 column block [T, cols] (default 128 MiB).
    """
    T, D = _rows(chunks)
    g = np.zeros((T, T))
    mean = np.zeros(D)
    for c, x in _column_blocks(chunks, block_bytes):
        g += x @ x.T
        mean[c] = x.mean(axis=0)
    return GramStats(g, mean)


@dataclasses.dataclass(frozen=True)
class PCA:
    """PCA of T snapshots from their Gram matrix (descending components).

    Attributes:
      variance: [K] eigenvalues lambda_k of the (centred or uncentred) Gram matrix.
      ratio: [K] lambda_k / sum of all T eigenvalues (explained variance ratio).
      scores: [T, K] coordinate of snapshot t on axis k: V_tk sqrt(lambda_k).
      V: [T, K] the Gram matrix's unit eigenvectors (signs: largest |entry| positive).
      centred: whether the mean was removed.
    """

    variance: np.ndarray
    ratio: np.ndarray
    scores: np.ndarray
    V: np.ndarray
    centred: bool


def pca_from_gram(stats: GramStats | np.ndarray, *, centred: bool, num_components: int | None = None) -> PCA:
    """PCA from a `GramStats` (or a raw uncentred Gram matrix [T, T]); K = num_components or T."""
    g = np.asarray(stats if isinstance(stats, np.ndarray) else stats.gram, np.float64)
    if centred:
        g = _centre(g)
    lam, V = np.linalg.eigh((g + g.T) / 2)
    lam, V = np.clip(lam[::-1], 0.0, None), V[:, ::-1]
    V = V * np.where(V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])] < 0, -1.0, 1.0)
    total = lam.sum()
    K = lam.size if num_components is None else min(int(num_components), lam.size)
    ratio = lam[:K] / total if total > 0 else np.zeros(K)
    return PCA(lam[:K], ratio, V[:, :K] * np.sqrt(lam[:K]), V[:, :K], centred)


def random_walk_ratio(steps: np.ndarray, *, num_components: int | None = None) -> np.ndarray:
    """Explained-variance ratios [K] a random walk would show: the baseline for a trajectory's PCA.

    Snapshots at steps t_i of a walk with i.i.d. steps in D dimensions have E[X X^T] / D ~ M with
    M_ij = min(t_i, t_j) (the start removed by centring); as D grows the centred PCA of one sample
    tends to that of J M J. For evenly spaced snapshots the ratios approach 6 / (pi^2 k^2)
    (Antognini & Sohl-Dickstein 2018): PC1 ~ 0.61, PC1-2 ~ 0.76, top 10 ~ 0.94, with a parabola on
    PC1-PC2 (curves like training paths, so a curved PC1-PC2 picture alone is no evidence of structure).
    """
    t = np.asarray(steps, np.float64)
    return pca_from_gram(
        np.minimum(t[:, None], t[None, :]), centred=True, num_components=num_components
    ).ratio


def directions(
    chunks: Sequence[np.ndarray],
    result: PCA,
    *,
    mean: np.ndarray | None = None,
    k: int = 2,
    block_bytes: int = 1 << 27,
) -> np.ndarray:
    """The first k principal axes u_k = (X - mean)^T V_k / sqrt(lambda_k) as unit vectors [k, D] (one
    streamed pass).

    Args:
      chunks: the snapshots the PCA was computed from.
      result: that PCA.
      mean: [D] the snapshots' mean (`GramStats.mean`); required when ``result.centred``.
      k: number of axes (components with lambda_k = 0 give zero vectors).
    """
    if result.centred and mean is None:
        raise ValueError("a centred PCA needs the snapshots' mean")
    T, D = _rows(chunks)
    k = min(k, result.V.shape[1])
    s = np.sqrt(result.variance[:k])
    w = np.where(s > 0, 1.0 / np.where(s > 0, s, 1.0), 0.0) * result.V[:, :k]  # [T, k]
    out = np.zeros((k, D))
    for c, x in _column_blocks(chunks, block_bytes):
        if result.centred:
            x = x - mean[c]
        out[:, c] = (x.T @ w).T
    return out


def pca(x: np.ndarray, *, centred: bool = True, num_components: int | None = None) -> PCA:
    """PCA of an in-memory trajectory x [T, D] (via the Gram matrix)."""
    return pca_from_gram(gram([np.asarray(x)]), centred=centred, num_components=num_components)


def path_statistics(
    gram_matrix: np.ndarray, paths: Sequence[np.ndarray], steps: np.ndarray, *, num_components: int
) -> dict:
    """Each path alone, from the joint Gram matrix [T, T] of all snapshots (no pass over the data).

    Args:
      paths: P index arrays into the T snapshots, each a path in its order.
      steps: [T] the training step of each snapshot (for the random-walk baseline).
      num_components: K.

    Returns:
      ``length`` [P] of the polygon through the path's snapshots; ``displacement`` [P] |last - first|;
      ``straightness`` [P] displacement / length (1 for a straight path, sampling-dependent);
      ``ratio`` [P, K] the path's own centred PCA ratios; ``random_walk`` [P, K] `random_walk_ratio` at
      its steps (both zero-padded to K).
    """
    K = num_components
    pad = lambda r: np.pad(r[:K], (0, max(0, K - r.size)))  # noqa: E731
    out = {"length": [], "displacement": [], "ratio": [], "random_walk": []}
    for p in paths:
        g = gram_matrix[np.ix_(p, p)]
        out["length"].append(path_length(g))
        out["displacement"].append(np.sqrt(max(g[0, 0] + g[-1, -1] - 2 * g[0, -1], 0.0)))
        out["ratio"].append(pad(pca_from_gram(g, centred=True).ratio))
        out["random_walk"].append(pad(random_walk_ratio(np.asarray(steps)[p])))
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    out["straightness"] = out["displacement"] / np.where(out["length"] > 0, out["length"], 1.0)
    return out


# --------------------------------------------------------------------------- distances


def path_length(g: np.ndarray) -> float:
    """Length of the polygon through consecutive snapshots, from their Gram matrix g [T, T] (float64):
    sum_t |theta_{t+1} - theta_t| with |a - b|^2 = g_aa + g_bb - 2 g_ab."""
    d = np.diag(g)
    return float(np.sum(np.sqrt(np.clip(d[1:] + d[:-1] - 2 * np.diag(g, 1), 0, None))))


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """[S, S] Euclidean distances |x_i - x_j| between the rows of x [S, D] (float64, by differences)."""
    x = np.asarray(x, np.float64)
    out = np.zeros((x.shape[0], x.shape[0]))
    for i in range(x.shape[0] - 1):
        out[i, i + 1 :] = np.linalg.norm(x[i + 1 :] - x[i], axis=1)
    return out + out.T


def spread(values) -> dict[str, float]:
    """mean, std (ddof 0), min, max and count of a set of numbers (NaNs when empty)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def distance_summary(
    finals: np.ndarray, starts: np.ndarray, *, inits: np.ndarray | None = None
) -> dict[str, Any]:
    """Distances between S solutions and from where they came (Lipton's table).

    Args:
      finals: [S, D] final solutions.
      starts: [S, D] (or [D], shared) where each run's training segment began.
      inits: [S, D] (or [D]) the initialisations, when they differ from the starts (clones).

    Returns:
      ``pairwise`` [S, S]; ``origin`` [S] = |theta_s|; ``start`` [S] = |theta_s - start_s|;
      ``init`` [S]; and `spread` dicts ``pairwise_stats`` (over the S(S-1)/2 pairs),
      ``origin_stats``, ``start_stats``, ``init_stats``.
    """
    finals = np.asarray(finals, np.float64)
    starts = np.broadcast_to(np.asarray(starts, np.float64), finals.shape)
    inits = starts if inits is None else np.broadcast_to(np.asarray(inits, np.float64), finals.shape)
    pw = pairwise_distances(finals)
    out = {
        "pairwise": pw,
        "origin": np.linalg.norm(finals, axis=1),
        "start": np.linalg.norm(finals - starts, axis=1),
        "init": np.linalg.norm(finals - inits, axis=1),
    }
    out["pairwise_stats"] = spread(pw[np.triu_indices(pw.shape[0], 1)])
    for key in ("origin", "start", "init"):
        out[f"{key}_stats"] = spread(out[key])
    return out


# --------------------------------------------------------------------------- loss on planes and lines


class SurfaceFns(NamedTuple):
    """Jitted evaluations of ``metric_fn(theta, batch) -> pytree of scalars`` at many points.

    plane(center [D], u1 [D], u2 [D], alphas [A], betas [B], batch) -> pytree of [A, B]:
        metrics at theta(a, b) = center + a u1 + b u2.
    line(theta_a [D], theta_b [D], ts [n], batch) -> pytree of [n]:
        metrics at (1 - t) theta_a + t theta_b.
    """

    plane: Callable
    line: Callable


def make_surface_fns(metric_fn: Callable[[Array, Any], Any], *, batch_size: int = 8) -> SurfaceFns:
    """Points are evaluated `batch_size` at a time with vmap (``lax.map(..., batch_size)``),
    so memory is batch_size parameter vectors and their activations on the evaluation batch;
    one compile per grid or line size."""

    def plane(center, u1, u2, alphas, betas, batch):
        A, B = alphas.shape[0], betas.shape[0]
        ab = jnp.stack(jnp.meshgrid(alphas, betas, indexing="ij"), -1).reshape(A * B, 2).astype(center.dtype)
        out = jax.lax.map(
            lambda p: metric_fn(center + p[0] * u1 + p[1] * u2, batch), ab, batch_size=min(batch_size, A * B)
        )
        return jax.tree_util.tree_map(lambda v: v.reshape(A, B, *v.shape[1:]), out)

    def line(theta_a, theta_b, ts, batch):
        ts = ts.astype(theta_a.dtype)
        delta = theta_b - theta_a
        return jax.lax.map(
            lambda t: metric_fn(theta_a + t * delta, batch), ts, batch_size=min(batch_size, ts.shape[0])
        )

    return SurfaceFns(jax.jit(plane), jax.jit(line))


def interpolation_ts(low: float, high: float, *, num: int) -> np.ndarray:
    """[n] sorted t values: `num` evenly from low to high, plus 0 and 1 (the endpoints) if missing."""
    if not low <= 0.0 < 1.0 <= high:
        raise ValueError(f"the interpolation range [{low}, {high}] must contain [0, 1]")
    ts = np.union1d(np.linspace(low, high, num), [0.0, 1.0])
    return ts[np.concatenate([[True], np.diff(ts) > 1e-12])]


def barrier(ts: np.ndarray, losses: np.ndarray) -> dict[str, float]:
    """Loss barrier on the segment t in [0, 1] of an interpolation (ts must contain 0 and 1).

    Returns:
      ``barrier``: max_t [L(t) - ((1 - t) L(0) + t L(1))] (Frankle et al. 2020: the bump over the
      straight line between the endpoint losses; 0 for a convex path);
      ``barrier_over_max``: max_t L(t) - max(L(0), L(1)) (the height above the higher end);
      ``t_peak``: where the first is attained.
    """
    ts, losses = np.asarray(ts, np.float64), np.asarray(losses, np.float64)
    i0, i1 = np.flatnonzero(np.isclose(ts, 0.0)), np.flatnonzero(np.isclose(ts, 1.0))
    if i0.size == 0 or i1.size == 0:
        raise ValueError("ts must contain 0 and 1")
    l0, l1 = losses[i0[0]], losses[i1[0]]
    inside = (ts >= -1e-12) & (ts <= 1 + 1e-12)
    bump = losses[inside] - ((1 - ts[inside]) * l0 + ts[inside] * l1)
    j = int(np.argmax(bump))
    return {
        "barrier": float(bump[j]),
        "barrier_over_max": float(losses[inside].max() - max(l0, l1)),
        "t_peak": float(ts[inside][j]),
    }


def grid_axes(scores: np.ndarray, *, num: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(alphas [num], betas [num]) covering the path's PC1-PC2 coordinates scores [T, >=2], widened by
    `margin` times each range on both sides."""
    axes = []
    for k in range(2):
        lo, hi = float(np.min(scores[:, k])), float(np.max(scores[:, k]))
        pad = margin * (hi - lo) if hi > lo else 1.0
        axes.append(np.linspace(lo - pad, hi + pad, num))
    return axes[0], axes[1]
