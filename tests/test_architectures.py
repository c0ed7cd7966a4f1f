"""The built-in architectures (lenet300_100, lenet5, resnet20, vit_tiny), the init rules of any module
(norm scales, embeddings, attention fans), your own module from a factory, and every new model through a
tiny radius scan and a few training steps."""

from __future__ import annotations

import math
import textwrap

import flax.linen as nn
import jax
import numpy as np
import pytest

import gzone
from experiments import config
from gzone import flat, models


def _spec(kind, multiplier=1.0, **kw):
    return models.ModelSpec(kind, models.default_widths(kind), width_multiplier=multiplier, **kw)


def test_standard_sizes_and_parameter_counts():
    lenet300 = flat.flat_model(models.build(_spec("lenet300_100"), 10), (28, 28, 1))
    assert lenet300.D == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    lenet5 = models.build(_spec("lenet5"), 10)
    assert flat.flat_model(lenet5, (32, 32, 3)).D == 62_006  # 5x5 VALID convs 6, 16; dense 120, 84
    nobias = models.build(_spec("lenet5", use_bias=False), 10)
    assert flat.flat_model(nobias, (32, 32, 3)).D == 62_006 - (6 + 16 + 120 + 84 + 10)
    # resnet20: 19 3x3 convs (stem + 9 blocks x 2) without biases, 19 BatchNorms, Dense(C); option A
    # shortcuts have no parameters. Width multiplier 0.25: stage widths 4, 8, 16.
    spec = _spec("resnet20", 0.25)
    assert spec.scaled_widths == (4, 8, 16)
    convs = [(3, 4)] + [(4, 4)] * 6 + [(4, 8), (8, 8)] + [(8, 8)] * 4 + [(8, 16), (16, 16)] + [(16, 16)] * 4
    bn = [4] * 7 + [8] * 6 + [16] * 6
    resnet = flat.flat_model(models.build(spec, 10), (32, 32, 3))
    assert resnet.D == sum(9 * a * b for a, b in convs) + 2 * sum(bn) + 16 * 10 + 10
    assert sum(s.name.endswith("/kernel") for s in resnet.segments) == 20  # 6n + 2 weight layers
    vit = models.build(_spec("vit_tiny"), 10)
    assert (vit.embed_dim, vit.mlp_dim, vit.num_heads, vit.depth) == (64, 128, 4, 4)
    assert _spec("vit_tiny", 0.3).scaled_widths == (20, 38)  # embedding rounded to a multiple of 4 heads


class InitNet(nn.Module):
    """Dense, LayerNorm, flax attention (DenseGeneral kernels), an embedding-like parameter."""

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos", nn.initializers.zeros, (1, 3, 4))
        x = nn.Dense(12, name="embed")(x).reshape(x.shape[0], 3, 4) + pos
        x = nn.LayerNorm(name="ln")(x)
        x = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6, name="attn")(x, x)
        return nn.Dense(5, name="head")(x.reshape(x.shape[0], -1))


def test_init_rules_of_any_module_and_the_attention_fans():
    module, shape = InitNet(), (7,)
    fans = models.kernel_fans(module, shape)
    assert fans["attn/query/kernel"] == (4, 6) and fans["attn/out/kernel"] == (6, 4)  # [4, 2, 3], [2, 3, 4]
    assert fans["embed/kernel"] == (7, 12) and fans["head/kernel"] == (12, 5)
    params = jax.jit(lambda k: models.init_params(k, module, shape))(jax.random.key(0))  # one compile
    np.testing.assert_array_equal(params["ln"]["scale"], 1.0)
    np.testing.assert_array_equal(params["ln"]["bias"], 0.0)
    np.testing.assert_array_equal(params["attn"]["query"]["bias"], 0.0)
    vit = models.ViT(num_classes=3, embed_dim=32, mlp_dim=8, depth=1, num_heads=4, patch_size=2)
    big = jax.jit(lambda k: models.init_params(k, vit, (16, 16, 1)))(jax.random.key(1))
    pos = np.asarray(big["pos_embedding"])  # [1, 65, 32]: N(0, 1/32)
    assert abs(pos.std() * math.sqrt(32) - 1) < 5 / math.sqrt(2 * pos.size)
    q = np.asarray(big["block_00_attn"]["query"]["kernel"])  # [32, 4, 8]: fans 32 and 32
    assert abs(q.std() / math.sqrt(2 / 64) - 1) < 5 / math.sqrt(2 * q.size)
    # r_X^2 = sum_kernels n 2/(fan_in + fan_out) + (scale entries) + sum_other n / n_last
    by_hand = (84 * 2 / 19 + 3 * 24 * 2 / 10 + 24 * 2 / 10 + 60 * 2 / 17) + 4 + 12 / 4
    assert models.xavier_radius(module, shape) ** 2 == pytest.approx(by_hand, rel=1e-12)
    radii = models.layer_xavier_radii(module, shape)
    assert radii["ln"] == pytest.approx(2.0) and sum(r**2 for r in radii.values()) == pytest.approx(by_hand)


FACTORY_MODULE = '''
import flax.linen as nn

class Net(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(8)(x.reshape(x.shape[0], -1))))

def make(num_classes):
    return Net(num_classes)

not_callable = 3

def not_a_module(num_classes):
    return "a string"

def broken(num_classes):
    raise RuntimeError("boom")
'''


@pytest.fixture
def factory_folder(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(FACTORY_MODULE))
    (tmp_path / "bad_import.py").write_text("import no_such_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_factory_import_from_a_module_in_a_temp_folder(factory_folder):
    module = models.from_factory("my_nets:make", 4)
    assert type(module).__name__ == "Net" and module.num_classes == 4
    assert models.factory_of(module) == "my_nets:make" and models.factory_of(models.MLP((3,), 2)) is None
    prob = gzone.problem.build(module, input_shape=(5,))
    assert prob.identity()["factory"] == "my_nets:make" and prob.identity()["class"] == "my_nets.Net"
    built = config.Model(model="my_nets:make").build(4)
    assert type(built).__name__ == "Net" and config.Model(model="my_nets:make").label == "make"
    bad = {
        "my_nets": "not package.module:factory",
        "no_such_module_abc:make": "cannot import 'no_such_module_abc'",
        "bad_import:make": "ModuleNotFoundError",
        "my_nets:missing": "has no attribute 'missing'",
        "my_nets:not_callable": "not callable",
        "my_nets:not_a_module": "not a flax.linen Module",
        "my_nets:broken": "RuntimeError: boom",
    }
    for path, expected in bad.items():
        with pytest.raises(ValueError, match=expected) as err:
            models.from_factory(path, 4)
        assert "\n" not in str(err.value)
    with pytest.raises(config.UsageError, match="--model: .*not callable"):
        config.make(config.Model, {"model": "my_nets:not_callable"})
    with pytest.raises(config.UsageError, match="--model: .*RuntimeError"):
        config.Model(model="my_nets:broken").build(4)
    with pytest.raises(config.UsageError, match="--widths: applies to built-in models"):
        config.make(config.Model, {"model": "my_nets:make", "widths": (3,)})
    with pytest.raises(config.UsageError, match="--use_bias"):
        config.make(config.Model, {"model": "resnet20", "use_bias": False})


def _data(shape, n=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    return x, (np.abs(x.reshape(n, -1)).argmax(-1) % classes).astype(np.int32)


SMALL = {  # each new architecture at a width and input size that compiles in seconds
    "lenet300_100": (_spec("lenet300_100", 0.02, use_bias=False), (6, 6, 1)),
    "lenet5": (_spec("lenet5", 0.5), (16, 16, 3)),
    "resnet20": (_spec("resnet20", 0.125), (8, 8, 3)),
    "vit_tiny": (_spec("vit_tiny", 0.125, activation="gelu"), (8, 8, 3)),
}


@pytest.mark.parametrize("kind", ["lenet5", *(pytest.param(k, marks=pytest.mark.slow) for k in SMALL
                                              if k != "lenet5")])
def test_every_new_model_through_a_tiny_radius_scan_and_a_few_training_steps(kind):
    spec, shape = SMALL[kind]
    module = models.build(spec, 3)
    x, y = _data(shape)
    gn = kind in ("resnet20", "vit_tiny")  # the Gauss-Newton split of the non-homogeneous nets (slow tests)
    scan = gzone.radius_scan(module, x[:8], y[:8], r_over_rx=[1.0], dims=[2], num_seeds=1, gn_split=gn,
                             log=None)
    assert np.isfinite(scan.arrays["eigvals_d2"]).all()
    assert not gn or np.isfinite(scan.arrays["gn_eigvals_d2"]).all()
    np.testing.assert_allclose(scan.arrays["radius"], scan.r_x, rtol=1e-5)
    fit = gzone.train_subspace(module, (x, y), (x[:8], y[:8]), r_over_rx=[1.0], dims=[4],
                               modes=["hyperplane"], num_seeds=1, epochs=1, batch_size=4, lr=0.05, log=None)
    curve = fit.arrays["train_loss"][0, 0, 0, 0]  # [epoch, record]: 4 steps in one record block
    assert np.isfinite(curve).all() and curve.shape == (1, 1)


def test_a_factory_on_the_command_line(factory_folder, tmp_path):
    from experiments import radius_scan

    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    argv = [f"--flagfile={repo}/experiments/flagfiles/smoke.flags", f"--workdir={tmp_path}", "--noplots",
            "--model=my_nets:make", "--widths=", "--dims=4", "--log10_r2_over_rx2=0,0,1", "--num_seeds=1"]
    path = radius_scan.run(radius_scan.config_from_argv(argv), log=lambda s: None, progress=None)
    settings = gzone.runs.records.read_config(path)["settings"]
    assert settings["model"]["factory"] == "my_nets:make" and settings["model"]["class"] == "my_nets.Net"
    assert settings["loss"] == "cross_entropy" and settings["model"]["state"] is None
