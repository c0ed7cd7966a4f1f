"""gzone.analysis.emergent: outlier rules on planted spectra, balanced examples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone.analysis import emergent
from gzone.curvature import spectra


def _planted(rng, spikes, *, n=200, bulk_scale=1.0):
    """A symmetric matrix with the given spike eigenvalues above a Marchenko-Pastur bulk (edge ~ 2.9
    bulk_scale)."""
    w = rng.normal(size=(n, 2 * n))
    bulk = np.sort(np.linalg.eigvalsh(w @ w.T / (2 * n)))[::-1] * bulk_scale
    eigs = np.concatenate([np.asarray(spikes, float), bulk[len(spikes) :]])
    q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    return (q * eigs) @ q.T, np.sort(eigs)[::-1]


@jax.jit
def _top_ritz(a, key):
    return spectra.extreme_eigs(key, lambda v: a @ v, dim=a.shape[0], k=20, order=60, which="top")[0]


@pytest.mark.parametrize("m", [0, 1, 3, 10])
def test_count_outliers_finds_planted_spikes(m, x64):
    """Spikes from 9 to 40 (ratios between them <= 1.2) above a bulk with edge ~2.9: both rules find m,
    from the exact top-20 eigenvalues and from Lanczos Ritz values."""
    rng = np.random.default_rng(m)
    spikes = np.geomspace(40.0, 9.0, m) if m else []
    a, eigs = _planted(rng, spikes)
    ritz = np.asarray(_top_ritz(jnp.asarray(a), jax.random.key(m)))
    np.testing.assert_allclose(ritz[:m], eigs[:m], rtol=1e-6)  # outliers converge
    for values in (eigs[:20], ritz):
        for rule in emergent.OUTLIER_RULES:
            assert emergent.count_outliers(values, min_ratio=1.5, rule=rule) == m, (rule, values[: m + 3])


def test_count_outliers_rules_differ_on_hierarchical_spikes(x64):
    """A dominant eigenvalue (a gap of 10 inside the outliers, 3.3 below them) over a bulk reaching 0.1
    (ratios up to 2.8 deep in it, not searched): `last` counts all 5, `largest` (Ahn-Horenstein) stops
    after the first; shuffled input, non-finite input, the searched range."""
    spikes = [100.0, 10.0, 9.5, 9.0, 8.5]
    bulk = np.linspace(2.6, 0.1, 15)
    values = np.concatenate([spikes, bulk])
    assert emergent.count_outliers(values, rule="last") == 5
    assert emergent.count_outliers(values, rule="largest") == 1
    assert emergent.count_outliers(np.random.default_rng(0).permutation(values)) == 5
    assert emergent.count_outliers(values, min_ratio=4.0) == 1  # only the gap of 10 counts
    assert emergent.count_outliers(values, min_ratio=20.0) == 0
    assert emergent.count_outliers([1.0, np.nan, 0.5]) == 0
    assert emergent.count_outliers([5.0, 1.0, -1.0, -2.0]) == 1  # ratios over positive values only
    assert emergent.count_outliers([5.0, 4.0, 3.9, 1.0]) == 0  # the gap at j = 3 > k // 2 is not searched
    assert emergent.count_outliers([5.0, 4.0, 3.9, 1.0, 0.9, 0.8]) == 3
    np.testing.assert_allclose(emergent.outlier_ratios([4.0, 1.0, 2.0]), [2.0, 2.0])
    with pytest.raises(ValueError):
        emergent.count_outliers(values, rule="median")
    with pytest.raises(ValueError):
        emergent.count_outliers(values, min_ratio=1.0)


def test_balanced_examples():
    y = np.asarray([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2])
    index = emergent.balanced_examples(jax.random.key(0), y, per_class=3, num_classes=3)
    assert index.shape == (9,) and len(set(index.tolist())) == 9
    np.testing.assert_array_equal(y[index], np.repeat([0, 1, 2], 3))
    again = emergent.balanced_examples(jax.random.key(0), y, per_class=3, num_classes=3)
    np.testing.assert_array_equal(index, again)
    with pytest.raises(ValueError, match="class 1 has 3 examples"):
        emergent.balanced_examples(jax.random.key(0), y, per_class=4, num_classes=3)


def test_log_spaced_checkpoints():
    assert emergent.log_spaced(10, 0).tolist() == list(range(1, 11)) == emergent.log_spaced(10, 20).tolist()
    assert emergent.log_spaced(10, 1).tolist() == [10]
    np.testing.assert_array_equal(emergent.log_spaced(10_000, 5), [1, 10, 100, 1000, 10_000])
    for n, num in ((24, 7), (1000, 5), (8, 7), (3, 2)):  # crowded at the start: pushed apart, ending at n
        idx = emergent.log_spaced(n, num)
        assert idx.size == num and idx[0] == 1 and idx[-1] == n and np.all(np.diff(idx) > 0), (n, num, idx)
    assert emergent.log_spaced(8, 7).tolist() == [1, 2, 3, 4, 5, 6, 8]
