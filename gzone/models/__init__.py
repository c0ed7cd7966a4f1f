"""flax.linen models: the built-in architectures, any module of your own, initialisation and r_X.

Built-in architectures are named by a `ModelSpec` (`build`); `--widths` means, per kind:

  mlp            hidden widths (default 200, 200; empty: a linear softmax classifier)  `mlp.MLP`
  lenet300_100   hidden widths of LeNet-300-100 (default 300, 100)                     `mlp.MLP`
  cnn_fs         conv channels, blocks [3x3 conv -> 2x2 max-pool -> act] (16, 16)       `cnn.ConvNet`
  small_cnn      conv channels, blocks [3x3 conv -> act -> 2x2 max-pool] (32, 64, 64)   `cnn.ConvNet`
  lenet5         two 5x5 conv channel counts, then dense widths (6, 16, 120, 84)        `cnn.LeNet5`
  resnet20       stage widths of the CIFAR ResNet-20 with BatchNorm (16, 32, 64)        `resnet.ResNet`
  vit_tiny       embedding and MLP widths of a pre-LN ViT, 4 blocks of 4 heads, 4x4     `vit.ViT`
                 patches (64, 128)

``width_multiplier`` scales the widths (rounded, at least 1; for vit_tiny the embedding width is
rounded to a multiple of the 4 heads): resnet20 at 0.25 has stage widths 4, 8, 16. ``use_bias``
(mlp, lenet300_100, cnn_fs, small_cnn, lenet5): without biases and with relu these networks are
positively homogeneous in theta. Layers carry zero-padded names (``dense_00``, ``conv_00``) so
that the flat parameter order of `jax.flatten_util.ravel_pytree` (sorted keys) follows depth in
the mlp, lenet and cnn families (resnet20 and vit_tiny: sorted names, blocks first).

Your own module: any flax.linen Module mapping [N, *input_shape] to logits [N, C];
``load_factory("package.module:factory")`` imports ``factory`` (``factory(num_classes)`` returns
the module), `from_factory` calls it. Initialisation of every module (`init`): Xavier-normal
kernels, zero biases, unit norm scales, N(0, 1/n) for any other array; r_X = sqrt(E|theta|^2).
Model state (BatchNorm statistics) and how the loss is defined with it: `apply`.
"""

from __future__ import annotations

import dataclasses
import importlib
import weakref

import flax.linen as nn

from gzone.models.apply import (
    STATE_MODES,
    apply_fn,
    initial_state,
    param_shapes,
    state_collections,
    takes_train,
    variable_shapes,
)
from gzone.models.cnn import ConvNet, LeNet5, PatchConv
from gzone.models.init import (
    INIT_CONVENTIONS,
    fans,
    init_params,
    kernel_fans,
    layer_xavier_radii,
    units_radius,
    xavier_radius,
    xavier_std_tree,
)
from gzone.models.mlp import ACTIVATIONS, MLP
from gzone.models.resnet import ResNet
from gzone.models.vit import ViT

__all__ = [
    "ACTIVATIONS", "INIT_CONVENTIONS", "MODEL_KINDS", "STATE_MODES", "ConvNet", "LeNet5", "MLP", "ModelSpec",
    "PatchConv", "ResNet", "ViT", "apply_fn", "build", "default_widths", "describe", "factory_of", "fans",
    "from_factory", "init_params", "initial_state", "kernel_fans", "layer_xavier_radii", "load_factory",
    "param_shapes", "state_collections", "takes_train", "units_radius", "variable_shapes", "xavier_radius",
    "xavier_std_tree",
]

MODEL_KINDS = ("mlp", "cnn_fs", "small_cnn", "lenet300_100", "lenet5", "resnet20", "vit_tiny")
BIAS_KINDS = ("mlp", "cnn_fs", "small_cnn", "lenet300_100", "lenet5")  # the kinds with a use_bias switch
VIT_HEADS = 4
_DEFAULT_WIDTHS = {
    "mlp": (200, 200),
    "cnn_fs": (16, 16),
    "small_cnn": (32, 64, 64),
    "lenet300_100": (300, 100),
    "lenet5": (6, 16, 120, 84),
    "resnet20": (16, 32, 64),
    "vit_tiny": (64, 128),
}
_WIDTH_COUNTS = {"lenet5": (2, None), "resnet20": (1, None), "vit_tiny": (2, 2)}  # (min, max) of len(widths)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What network to build.

    Attributes:
      kind: one of MODEL_KINDS.
      widths: the kind's widths (module docstring), before ``width_multiplier``.
      activation: one of ACTIVATIONS.
      use_bias: biases in every layer (kinds in BIAS_KINDS; the others have their own layout).
      width_multiplier: scales every width.
    """

    kind: str = "mlp"
    widths: tuple[int, ...] = (200, 200)
    activation: str = "relu"
    use_bias: bool = True
    width_multiplier: float = 1.0

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind {self.kind!r} unknown; allowed: {', '.join(MODEL_KINDS)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} unknown; allowed: {', '.join(ACTIVATIONS)}")
        if any(int(w) <= 0 for w in self.widths):
            raise ValueError(f"widths must be positive, got {self.widths}")
        if self.kind not in ("mlp", "lenet300_100") and not self.widths:
            raise ValueError(f"{self.kind} needs at least one width")
        low, high = _WIDTH_COUNTS.get(self.kind, (0, None))
        if len(self.widths) < low or (high is not None and len(self.widths) > high):
            raise ValueError(
                f"{self.kind} takes {low}{'' if high == low else '+' if high is None else f'-{high}'} widths "
                f"(module docstring of gzone.models), got {len(self.widths)}"
            )
        if not self.use_bias and self.kind not in BIAS_KINDS:
            raise ValueError(f"use_bias=False applies to {', '.join(BIAS_KINDS)}, not {self.kind}")
        if not self.width_multiplier > 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier}")

    @property
    def scaled_widths(self) -> tuple[int, ...]:
        """The widths times ``width_multiplier``, rounded (vit_tiny's embedding to a multiple of 4)."""
        out = tuple(max(1, round(w * self.width_multiplier)) for w in self.widths)
        if self.kind == "vit_tiny":
            out = (max(VIT_HEADS, VIT_HEADS * round(out[0] / VIT_HEADS)), *out[1:])
        return out

    @property
    def name(self) -> str:
        bias = "" if self.use_bias else "/nobias"
        return f"{self.kind}[{'-'.join(str(w) for w in self.scaled_widths)}]/{self.activation}{bias}"


def build(spec: ModelSpec, num_classes: int) -> nn.Module:
    """The flax module for a spec."""
    w, act, bias = spec.scaled_widths, spec.activation, spec.use_bias
    if spec.kind in ("mlp", "lenet300_100"):
        return MLP(widths=w, num_classes=num_classes, activation=act, use_bias=bias)
    if spec.kind in ("cnn_fs", "small_cnn"):
        order = "pool_act" if spec.kind == "cnn_fs" else "act_pool"
        return ConvNet(channels=w, num_classes=num_classes, activation=act, order=order, use_bias=bias)
    if spec.kind == "lenet5":
        return LeNet5(channels=w[:2], hidden=w[2:], num_classes=num_classes, activation=act, use_bias=bias)
    if spec.kind == "resnet20":
        return ResNet(widths=w, num_classes=num_classes, blocks=3, activation=act)
    return ViT(num_classes=num_classes, embed_dim=w[0], mlp_dim=w[1], num_heads=VIT_HEADS, activation=act)


def default_widths(kind: str) -> tuple[int, ...]:
    """The standard widths of each model kind (module docstring)."""
    return _DEFAULT_WIDTHS[kind]


# --------------------------------------------------------------------------- your own module

_FACTORIES: dict[int, tuple[weakref.ref, str]] = {}


def load_factory(path: str):
    """The callable ``factory`` named by ``package.module:factory`` (imported from sys.path / PYTHONPATH).

    Raises:
      ValueError: one line naming the problem (no colon, the module cannot be imported, no such
        attribute, not callable).
    """
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"{path!r} is not package.module:factory (nor a built-in name: {', '.join(MODEL_KINDS)})"
        )
    try:
        mod = importlib.import_module(module_name)
    except Exception as err:  # any error of the user's module, in one line
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"cannot import {module_name!r} for {path!r} ({type(err).__name__}: {first}); is its folder on "
            "PYTHONPATH?"
        ) from None
    target = mod
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{path} is a {type(target).__name__}, not callable: factory(num_classes) -> Module")
    return target


def from_factory(path: str, num_classes: int) -> nn.Module:
    """``factory(num_classes)`` of `load_factory(path)`, checked to be a flax.linen Module.

    The module remembers the path (`factory_of`), which the run's settings record.
    """
    factory = load_factory(path)
    try:
        module = factory(num_classes)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(f"{path}({num_classes}) failed: {type(err).__name__}: {first}") from None
    if not isinstance(module, nn.Module):
        raise ValueError(f"{path}({num_classes}) returned a {type(module).__name__}, not a flax.linen Module")
    _FACTORIES[id(module)] = (weakref.ref(module), str(path))
    return module


def factory_of(module: nn.Module) -> str | None:
    """The ``package.module:factory`` path that built `module` (`from_factory`), or None."""
    entry = _FACTORIES.get(id(module))
    return entry[1] if entry is not None and entry[0]() is module else None


def describe(module: nn.Module) -> str:
    """One line naming a module and its fields, e.g.
    ``MLP(widths=(100, 100), num_classes=10, activation='relu', use_bias=True)``."""
    fields = [f for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    return (
        f"{type(module).__name__}(" + ", ".join(f"{f.name}={getattr(module, f.name)!r}" for f in fields) + ")"
    )
