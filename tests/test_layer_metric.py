"""gzone.layer_metric: per-layer metric variants on a tiny MLP, unit columns, the layer split."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gzone import flat, layer_metric, models, projections

N_IN, WIDTHS, C, d = 12, (9, 7), 5, 6  # MLP 12-9-7-5: three layers with different fans


@pytest.fixture(scope="module")
def model():
    module = models.build(models.ModelSpec("mlp", WIDTHS), C)
    return module, flat.flat_model(module, (N_IN,))


def _expected_unnormalised(module, fm, name):
    """Per-segment eta before normalisation, from models' own Xavier radii and stds."""
    radii = models.layer_xavier_radii(module, (N_IN,))
    stds = models.xavier_std_tree(models.param_shapes(module, (N_IN,)))
    out = []
    for s in fm.segments:
        R, sigma = radii[s.layer], stds[s.layer]["kernel"]  # biases take the kernel's value
        out.append(
            {
                "none": 1.0,
                "inv_layer_radius": 1 / R,
                "layer_radius": R,
                "inv_std": 1 / sigma,
                "std": sigma,
                "sqrt_layer_radius": math.sqrt(R),
            }[name]
        )
    return np.asarray(out)


@pytest.mark.parametrize("name", layer_metric.METRICS)
def test_segment_scales_are_the_named_xavier_quantities(model, name):
    module, fm = model
    scales = layer_metric.segment_scales(fm, name)
    expected = _expected_unnormalised(module, fm, name)
    ratio = scales / expected
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # proportional, one constant
    sizes = np.array([s.size for s in fm.segments])
    assert np.sum(sizes * scales**2) == pytest.approx(fm.D, rel=1e-12)  # mean eta^2 = 1
    eta = np.asarray(layer_metric.row_scale(fm, name, jnp.float32))
    assert eta.shape == (fm.D,)
    for s, v in zip(fm.segments, scales):
        np.testing.assert_allclose(eta[s.start : s.start + s.size], v, rtol=1e-6)
    if name != "none":  # the three layers really get different values
        assert len(np.unique(np.round(scales, 10))) == 3


def test_segment_scales_in_numbers(model):
    # Layer kernels: 12x9, 9x7, 7x5; sigma^2 = 2/21, 2/16, 2/12; R^2 = 108*2/21, 63/8, 35/6.
    _, fm = model
    s = {seg.name: v for seg, v in zip(fm.segments, layer_metric.segment_scales(fm, "std"))}
    assert s["dense_01/kernel"] / s["dense_00/kernel"] == pytest.approx(math.sqrt(21 / 16))
    assert s["dense_02/bias"] / s["dense_00/kernel"] == pytest.approx(math.sqrt(21 / 12))
    r = {seg.name: v for seg, v in zip(fm.segments, layer_metric.segment_scales(fm, "inv_layer_radius"))}
    assert r["dense_00/kernel"] / r["dense_02/kernel"] == pytest.approx(math.sqrt((35 / 6) / (108 * 2 / 21)))


def test_unknown_metric_is_rejected(model):
    _, fm = model
    with pytest.raises(ValueError, match="projection metric 'nope'"):
        layer_metric.segment_scales(fm, "nope")
    with pytest.raises(ValueError, match="projection metric"):
        layer_metric.make_projection_fn(fm, d=2, kind="sparse", metric="nope")


COMBOS = [
    (k, m, r) for k in ("sparse", "dense") for m in ("none", "inv_std", "layer_radius") for r in (False, True)
]
COMBOS += [("fastfood", "inv_std", True)]  # the generic (lax.map) column norms of Scaled


@pytest.fixture(scope="module")
def projected(model):
    """(kind, metric, renormalise) -> (scaled P, its dense [D, d], dense base P), float64."""
    _, fm = model

    @jax.jit
    def build(key):  # all combinations in one compile
        out = {}
        for kind, metric, renorm in COMBOS:
            base = projections.make(kind, key, D=fm.D, d=d, dtype=jnp.float64)
            P = layer_metric.apply(base, fm, metric=metric, renormalise=renorm)
            out[kind, metric, renorm] = (P, projections.todense(P), projections.todense(base))
        return out

    with jax.enable_x64(True):
        built = build(jax.random.key(3))
        return {c: (P, np.asarray(m), np.asarray(b)) for c, (P, m, b) in built.items()}


@pytest.mark.parametrize("kind, metric", sorted({(k, m) for k, m, _ in COMBOS}))
def test_apply_scales_rows_and_renormalises_columns(model, projected, kind, metric):
    _, fm = model
    eta = np.repeat(layer_metric.segment_scales(fm, metric), [s.size for s in fm.segments])
    P, unit, M = projected[kind, metric, True]
    scaled = eta[:, None] * M
    if (kind, metric, False) in projected:
        np.testing.assert_allclose(projected[kind, metric, False][1], scaled, rtol=1e-12, atol=1e-15)
    assert isinstance(P, projections.Scaled)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(unit, scaled / np.linalg.norm(scaled, axis=0), rtol=1e-12, atol=1e-15)
    with jax.enable_x64(True):
        np.testing.assert_allclose(projections.column_sq_norms(P), 1.0, rtol=1e-12)
    if metric != "none":  # without renormalisation the metric moves the column lengths off 1
        assert np.max(np.abs(np.linalg.norm(scaled, axis=0) - 1)) > 1e-3


def test_none_without_renormalisation_is_the_projection_itself(projected):
    P, _, M = projected["sparse", "none", False]
    assert isinstance(P, projections.Sparse)


def test_column_segment_fractions_match_numpy(model, projected):
    _, fm = model
    P, M, _ = projected["sparse", "inv_std", False]
    with jax.enable_x64(True):
        got = np.asarray(layer_metric.column_segment_fractions(P, fm))
        mean = np.asarray(layer_metric.segment_fractions(P, fm))
    seg = flat.segment_index(fm)
    sq = M**2
    expected = (
        np.stack([sq[seg == i].sum(axis=0) for i in range(len(fm.segments))], axis=1)
        / sq.sum(axis=0)[:, None]
    )
    assert got.shape == (d, len(fm.segments))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(mean, expected.mean(axis=0), rtol=1e-10, atol=1e-15)
    # inv_std weighs the wide first layer up: its share beats its share of D.
    first = [i for i, s in enumerate(fm.segments) if s.name == "dense_00/kernel"][0]
    assert mean[first] > fm.segments[first].size / fm.D


def test_seed_fractions_are_each_seeds_projection(model, projected):
    _, fm = model
    keys = jnp.stack([jax.random.key(3), jax.random.key(4)])  # key 3 drew the fixture's projections
    got = layer_metric.seed_fractions(keys, fm, d=d, kind="sparse", metric="inv_std", renormalise=False)
    M = projected["sparse", "inv_std", False][1]
    seg = flat.segment_index(fm)
    per_column = np.stack([(M**2)[seg == i].sum(axis=0) for i in range(len(fm.segments))], axis=1)
    np.testing.assert_allclose(got[0], np.mean(per_column / (M**2).sum(axis=0)[:, None], axis=0), rtol=1e-5)
    assert got.shape == (2, len(fm.segments)) and not np.allclose(got[0], got[1])
