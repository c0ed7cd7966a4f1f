"""The Python API on a module defined here: gzone.radius_scan's records against exact algebra, results
that plot and save without recomputing, nothing on disk unless asked, and README.md's example as is."""

from __future__ import annotations

import os
import re
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gzone
from gzone import flat, plots, projections, seeds, subspace
from gzone.runs import records, schema

REPO = Path(__file__).resolve().parents[1]


class TinyTanhNet(nn.Module):
    """Not a built-in model: 2 tanh layers without biases on 6 features, 3 classes."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(5, use_bias=False, name="first")(x))
        return nn.Dense(3, use_bias=False, name="last")(x)


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0)


@pytest.fixture(scope="module")
def scan(examples, tmp_path_factory):
    cwd = os.getcwd()
    empty = tmp_path_factory.mktemp("cwd")
    os.chdir(empty)
    try:
        result = gzone.radius_scan(
            TinyTanhNet(),
            *examples,
            r_over_rx=[0.5, 1.0, 2.0],
            dims=[3, 7],
            num_seeds=2,
            seed=4,
            projection="dense",
            log=None,
        )
    finally:
        os.chdir(cwd)
    assert os.listdir(empty) == []  # nothing written unless asked
    return result


def test_scan_of_a_module_defined_here_matches_jax_hessian(scan, examples):
    x, y = examples
    assert scan.D == 6 * 5 + 5 * 3 and scan.axes["frac_pos"] == ["radius", "d", "seed"]
    assert scan.r_x == pytest.approx(
        np.sqrt(30 * 2 / 11 + 15 * 2 / 8)
    )  # Xavier: sum n 2 / (fan_in + fan_out)
    np.testing.assert_allclose(scan.arrays["radii"], scan.r_x * np.array([0.5, 1.0, 2.0]), rtol=1e-12)
    assert scan.arrays["frac_pos"].shape == (3, 2, 2) and scan.arrays["eigvals_d7"].shape == (3, 2, 7)
    module = TinyTanhNet()
    fm = flat.flat_model(module, (6,))
    keys = seeds.SeedKeys.from_seed(4)
    loss = flat.loss_fn(fm, jnp.asarray(x), jnp.asarray(y))

    @jax.jit
    def reference(k_init, radius):  # one program for both points (op by op: ~130 compiles)
        theta = subspace.point_at_radius(
            k_init,
            radius,
            convention="xavier_rescaled",
            sample_fn=flat.sample_fn(module, (6,)),
            D=fm.D,
            r_x=scan.r_x,
        )
        return loss(theta), jax.hessian(loss)(theta)

    make = jax.jit(projections.make, static_argnums=0, static_argnames=("D", "d", "dtype"))
    for ri, di, s in ((0, 0, 1), (2, 1, 0)):
        d = scan.dims[di]
        value, H = reference(keys.init_keys(2)[s], jnp.float32(scan.arrays["radii"][ri]))
        P = np.asarray(make("dense", keys.proj_keys(d, 2)[s], D=fm.D, d=d).matrix, np.float64)
        eig = np.linalg.eigvalsh(P.T @ np.asarray(H, np.float64) @ P)
        got = scan.arrays[f"eigvals_d{d}"][ri, s]
        np.testing.assert_allclose(got, eig, rtol=1e-3, atol=1e-4 * np.abs(eig).max())
        assert scan.arrays["frac_pos"][ri, di, s] == pytest.approx(np.mean(eig > 0), rel=1e-6)
        assert scan.arrays["loss"][ri, di, s] == pytest.approx(float(value), rel=1e-6)
        assert scan.arrays["radius"][ri, di, s] == pytest.approx(scan.arrays["radii"][ri], rel=1e-5)


def test_result_table_plot_and_save(scan, tmp_path):
    table = scan.table()
    assert "frac+" in table and "share of |P e_j|^2" in table and len(table.splitlines()) == 3 + 2 + 2
    figures = scan.plot(str(tmp_path / "figures"))
    assert sorted(os.path.basename(f) for f in figures) == ["goldilocks.png", "loss_accuracy.png"]
    path = scan.save(str(tmp_path / "run"))
    loaded = schema.read(path)
    assert loaded.settings == records.to_jsonable(scan.settings)
    for key, value in scan.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[key], value)
    assert len(records.read_jsonl(path)) == 6 and plots.draw(path)  # units and figures from the saved records
    assert [row["metric"] for row in scan.zone()][:2] == ["frac_pos", "trace_over_frob"]


def test_a_run_dir_records_and_resumes(scan, examples, tmp_path):
    path = str(tmp_path / "scan")
    kwargs = dict(r_over_rx=[0.5, 1.0, 2.0], dims=[3, 7], num_seeds=2, seed=4, projection="dense")
    lines = []
    first = gzone.radius_scan(TinyTanhNet(), *examples, run_dir=path, log=lines.append, **kwargs)
    assert first.path == path and lines[0] == f"new run: {path}  (0/6 units done)"
    for key, value in scan.arrays.items():
        np.testing.assert_array_equal(first.arrays[key], value)
    lines.clear()
    again = gzone.radius_scan(TinyTanhNet(), *examples, run_dir=path, log=lines.append, **kwargs)
    assert lines[0] == f"resuming: {path}  (6/6 units done)" and len(lines) == 2  # nothing recomputed
    np.testing.assert_array_equal(again.arrays["eigvals_d7"], scan.arrays["eigvals_d7"])
    x, y = examples
    with pytest.raises(
        records.RunDirError, match="other settings.*data"
    ):  # other examples: another fingerprint
        gzone.radius_scan(TinyTanhNet(), x[:20], y[:20], run_dir=path, log=None, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dims=[3]), "exactly one of"),
        (dict(r_over_rx=[1.0], dims=[3], projection="fancy"), "projection: 'fancy' unknown"),
        (dict(r_over_rx=[1.0], dims=[100]), "dims: d=100 exceeds"),
        (dict(r_over_rx=[1.0], dims=[3], num_seeds=0), "num_seeds: must be >= 1"),
        (dict(r_over_rx=[1.0], dims=[3], no_such_option=1), "no_such_option"),
    ],
)
def test_bad_options_raise_naming_the_option(examples, kwargs, match):
    with pytest.raises((gzone.OptionError, TypeError), match=match):
        gzone.radius_scan(TinyTanhNet(), *examples, log=None, **kwargs)


def test_bad_examples_raise_one_clear_error(examples):
    x, y = examples
    for bad_x, bad_y, match in (
        (x, y.astype(np.float32), "integers"),
        (x, y[:, None], "1-D"),
        (x, y + 5, r"\[0, 3\)"),
        (x[:, 0], y, "cannot be applied"),
        (np.where(x > 2, np.nan, x), y, "finite"),
    ):
        with pytest.raises(ValueError, match=match):
            gzone.radius_scan(TinyTanhNet(), bad_x, bad_y, r_over_rx=[1.0], dims=[3], log=None)
    with pytest.raises(TypeError, match="flax.linen Module"):
        gzone.radius_scan(lambda v: v, x, y, r_over_rx=[1.0], dims=[3], log=None)


def test_the_readme_python_example_runs_as_is(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## From Python") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.arrays["frac_pos"].shape == (5, 2, 3)
    assert sorted(os.listdir(tmp_path / "figures")) == ["goldilocks.png", "loss_accuracy.png"]
    assert schema.read(str(tmp_path / "runs" / "net_scan")).experiment == "radius_scan"
