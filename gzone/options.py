"""Option groups: the settings of every experiment, defined once, validated once.

Each group is a frozen, keyword-only dataclass whose fields carry their help text, allowed values
and bounds (`option`). An experiment's options compose groups by inheritance, e.g.

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ScanOptions(Radii, Points, Projection, Seeds, Precision):
        dims: tuple[int, ...] = option((10, 50), "Subspace dimensions d.", minimum=1)

so the Python API takes them as flat keyword arguments (``gzone.radius_scan(..., dims=[10, 50])``)
and the command line defines one flag per field (`experiments.config`). Construction validates
every field (`check`): a bad value raises `OptionError` naming the field, which the command line
turns into one line ``--name: ...``. Lists become tuples, so options hash and compare by value.

`settings(options)` is what a run folder must match on resume: every field marked
``setting=True`` (the default), after `resolved` replaced automatic choices by what was used.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Sequence

import jax

from gzone import flat, layer_metric, models, projections, seeds, subspace, train

KINDS = ("int", "float", "str", "bool", "ints", "floats", "strs")


class OptionError(ValueError):
    """A bad option value; ``name`` is the option (the flag ``--name`` on the command line)."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def option(
    default: Any,
    help: str,
    *,
    kind: str | None = None,
    choices: Sequence[str] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    setting: bool = True,
    flag: bool = True,
    empty: bool = False,
    replay: bool = True,
) -> Any:
    """A dataclass field with what validation and the command line need.

    Args:
      default: the default value (None: unset, allowed for every kind).
      help: one-line help (the flag's help).
      kind: one of KINDS; inferred from the default (or ``str`` with choices) when omitted.
      choices: allowed values (strings; for ``strs`` every element).
      minimum, maximum: bounds of numbers (every element for lists).
      setting: part of what a resumed run must match (False for how and where a run is shown; "changed":
        only when not at the default, so that an option added later leaves older run folders resumable).
      flag: defined as a command-line flag (False where the command line has its own form).
      empty: an empty list is allowed (lists only).
      replay: written to a run's flags.txt (False for flags that must not replay, like --overwrite).
    """
    if kind is None:
        kind = _infer_kind(default, choices)
    if kind not in KINDS:
        raise ValueError(f"option kind {kind!r} unknown; allowed: {', '.join(KINDS)}")
    meta = dict(
        help=help,
        kind=kind,
        choices=tuple(choices) if choices else None,
        minimum=minimum,
        maximum=maximum,
        setting=setting,
        flag=flag,
        empty=empty,
        replay=replay,
    )
    return dataclasses.field(default=default, metadata=meta)


def override(group: type, name: str, default: Any) -> Any:
    """Field `name` of `group` with another default (an experiment's own default, same help and checks)."""
    meta = dict(group.__dataclass_fields__[name].metadata)
    return dataclasses.field(default=default, metadata=meta)


def _infer_kind(default, choices) -> str:
    if choices is not None:
        return "strs" if isinstance(default, (tuple, list)) else "str"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, (tuple, list)) and default:
        first = default[0]
        return "ints" if isinstance(first, int) else "floats" if isinstance(first, float) else "strs"
    raise ValueError(f"cannot infer the kind of default {default!r}; give kind=")


def _coerce(name: str, kind: str, value: Any) -> Any:
    """value as the kind's Python type (lists as tuples); OptionError when it cannot be."""
    if value is None:
        return None
    scalar = {"int": int, "float": float, "str": str, "bool": bool}
    try:
        if kind in scalar:
            if kind == "bool" and not isinstance(value, (bool, int)):
                raise TypeError
            if kind == "int" and (
                isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
            ):
                raise TypeError
            out = scalar[kind](value)
            if kind == "float" and not math.isfinite(out):
                raise OptionError(name, f"must be finite, got {value!r}")
            return out
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError
        element = {"ints": "int", "floats": "float", "strs": "str"}[kind]
        return tuple(_coerce(name, element, v) for v in value)
    except OptionError:
        raise
    except (TypeError, ValueError):
        what = {"ints": "a list of integers", "floats": "a list of numbers", "strs": "a list of names"}.get(
            kind, f"a {kind}"
        )
        raise OptionError(name, f"expected {what}, got {value!r}") from None


def check(options: Any) -> None:
    """Coerces and validates every field of an options dataclass in place (choices, bounds)."""
    for f in dataclasses.fields(options):
        meta = f.metadata
        if "kind" not in meta:
            continue
        value = _coerce(f.name, meta["kind"], getattr(options, f.name))
        object.__setattr__(options, f.name, value)
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        if meta["kind"] in ("ints", "floats", "strs") and not values:
            if meta.get("empty"):
                continue
            raise OptionError(f.name, "must not be empty")
        if meta["choices"] and any(v not in meta["choices"] for v in values):
            bad = next(v for v in values if v not in meta["choices"])
            raise OptionError(f.name, f"{bad!r} unknown; allowed: {', '.join(meta['choices'])}")
        if meta["minimum"] is not None and min(values) < meta["minimum"]:
            raise OptionError(f.name, f"must be >= {meta['minimum']:g}, got {_show(value)}")
        if meta["maximum"] is not None and max(values) > meta["maximum"]:
            raise OptionError(f.name, f"must be <= {meta['maximum']:g}, got {_show(value)}")


def _show(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def settings(options: Any) -> dict:
    """The fields of `options` that a resumed run must match (``setting``: True, or "changed" and not the
    default), as a dict."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
            if f.metadata.get("setting", True) is True
            or (f.metadata.get("setting") == "changed" and getattr(options, f.name) != f.default)}


class Group:
    """Base of the option groups: validates on construction (`check`, then each group's `_check`)."""

    def __post_init__(self):
        check(self)
        for cls in reversed(type(self).__mro__):
            own = cls.__dict__.get("_check")
            if own is not None:
                own(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- the shared groups


@dataclasses.dataclass(frozen=True, kw_only=True)
class Precision(Group):
    dtype: str = option(
        "float32", "Floating point type; float64 turns on jax_enable_x64.", choices=("float32", "float64")
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Objective(Group):
    """What the loss of theta is: its kind, the softmax temperature and, for a model with state
    (BatchNorm statistics), how the state enters it (`gzone.flat`, `gzone.models.apply`)."""

    loss: str = option(
        "cross_entropy",
        "Loss of the logits: softmax cross-entropy, or mse: mean squared error against one-hot targets "
        "(mean over examples and classes).",
        choices=flat.LOSSES,
    )
    temperature: float = option(1.0, "Softmax temperature T: the loss sees logits / T.")
    model_state: str = option(
        "batch",
        "How a model's state (BatchNorm statistics) enters the loss: batch: computed from the examples the "
        "loss is evaluated on (train-mode BatchNorm, the running-average update discarded); frozen: the "
        "stored statistics at their init values (mean 0, variance 1). Ignored by models without state.",
        choices=models.STATE_MODES,
    )

    def _check(self):
        if not self.temperature > 0:
            raise OptionError("temperature", f"must be > 0, got {self.temperature}")

    def problem_kwargs(self) -> dict:
        """The `problem.build` arguments of the objective."""
        return {"loss": self.loss, "temperature": self.temperature, "model_state": self.model_state}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seeds(Group):
    num_seeds: int = option(3, "Seeds S: independent points, subspaces and batch orders.", minimum=1)
    seed: int = option(0, "Root seed of the run (one jax.random.key, split into named streams).")
    seed_mode: str = option(
        "auto",
        "Seeds as vmap or lax.map (auto: by backend and workload, BENCHMARKS.md).",
        choices=("auto", *seeds.SEED_MODES),
    )
    shard_seeds: bool = option(
        True,
        "Shard the seed axis over this process's devices when there are several "
        "(a mesh named 'seeds'; results do not depend on it).",
        setting=False,
    )

    @property
    def devices(self) -> list | None:
        """The local devices the seed axis is sharded over (None: one device, no mesh)."""
        return seeds.local_devices_if_several(self.shard_seeds)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Points(Group):
    convention: str = option(
        "xavier_rescaled", "How the point at radius r is drawn.", choices=subspace.POINT_CONVENTIONS
    )
    init: str = option(
        "xavier", "Init sample used by --convention=scaled_init.", choices=models.INIT_CONVENTIONS
    )

    @property
    def sample_init(self) -> str:
        """The init sample the convention scales: Xavier for xavier_rescaled, else --init."""
        return "xavier" if self.convention == "xavier_rescaled" else self.init


@dataclasses.dataclass(frozen=True, kw_only=True)
class Projection(Group):
    projection: str = option("sparse", "Random subspace kind.", choices=projections.KINDS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metric(Group):
    projection_metric: str = option(
        "none",
        "Per-layer metric P -> diag(eta) P (Fort & Scherlis), eta per parameter array from its layer's "
        "Xavier init: 1/R, R or sqrt(R) with R the layer's Xavier radius; 1/sigma or sigma with sigma the "
        "per-parameter "
        "Xavier std. Biases take their layer's kernel value; mean eta^2 = 1 over theta.",
        choices=layer_metric.METRICS,
    )
    metric_renormalise: bool = option(False, "Rescale every column of diag(eta) P to unit length.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Radii(Group):
    """Where points are placed: exactly one of r/r_X values, log10(r^2/r_X^2) values, absolute radii.

    An experiment whose radii are optional (measured only in one of its parts) sets the class
    attribute ``radii_required = False``: then none of the three is allowed too (`resolve` gives
    no radii) and the experiment checks when it needs them.
    """

    radii_required: ClassVar[bool] = True

    r_over_rx: tuple[float, ...] | None = option(
        None, "Radii in units of r_X.", kind="floats", minimum=0, flag=False
    )
    log10_r2_over_rx2: tuple[float, ...] | None = option(
        None, "Radii as log10(r^2/r_X^2).", kind="floats", flag=False
    )
    radii: tuple[float, ...] | None = option(
        None, "Absolute radii |theta|.", kind="floats", minimum=0, flag=False
    )

    def _check(self):
        given = [n for n in ("r_over_rx", "log10_r2_over_rx2", "radii") if getattr(self, n) is not None]
        if len(given) > 1 or (not given and self.radii_required):
            raise OptionError("r_over_rx", "give exactly one of r_over_rx=, log10_r2_over_rx2= or radii=")
        for n in ("r_over_rx", "radii"):
            if getattr(self, n) is not None and min(getattr(self, n)) <= 0:
                raise OptionError(n, f"radii must be positive, got {_show(getattr(self, n))}")

    @property
    def has_radii(self) -> bool:
        return any(getattr(self, n) is not None for n in ("r_over_rx", "log10_r2_over_rx2", "radii"))

    def resolve(self, r_x: float, dtype=None):
        """(radii [R], log10(r^2/r_X^2) [R]) as float64 numpy arrays (R = 0 when none were given).

        Raises:
          OptionError: with `dtype`, a radius the dtype cannot hold (overflow to inf, or below its
            smallest normal number), so no run is started with radii it would silently change.
        """
        import numpy as np

        if not self.has_radii:
            return np.zeros(0), np.zeros(0)
        if self.log10_r2_over_rx2 is not None:
            rel = np.asarray(self.log10_r2_over_rx2, np.float64)
            with np.errstate(over="ignore"):
                radii = r_x * 10.0 ** (rel / 2.0)
        else:
            radii = (
                np.asarray(self.radii, np.float64)
                if self.radii is not None
                else r_x * np.asarray(self.r_over_rx, np.float64)
            )
            rel = 2.0 * np.log10(radii / r_x)
        if dtype is not None:
            info = np.finfo(dtype)
            name = next(
                n for n in ("r_over_rx", "log10_r2_over_rx2", "radii") if getattr(self, n) is not None
            )
            if not np.all(np.isfinite(radii)) or radii.max() > info.max:
                raise OptionError(
                    name,
                    f"radius {radii.max():.3g} is beyond what {info.dtype} holds "
                    f"({float(info.max):.3g}); use smaller radii or dtype float64",
                )
            if radii.min() < info.smallest_normal:
                raise OptionError(
                    name,
                    f"radius {radii.min():.3g} is below {info.dtype}'s smallest normal number "
                    f"({float(info.smallest_normal):.3g}); use larger radii or dtype float64",
                )
        return radii, rel


@dataclasses.dataclass(frozen=True, kw_only=True)
class Training(Group):
    optimizer: str = option("adam", "optax optimizer.", choices=train.OPTIMIZERS)
    lr: float = option(1e-3, "Learning rate.")
    batch_size: int = option(
        128, "Examples per step (the last partial batch of an epoch is dropped).", minimum=1
    )
    epochs: int = option(5, "Training epochs.", minimum=1)
    record_every: int = option(
        50, "Record train loss/accuracy/radius every this many steps (within each epoch).", minimum=1
    )
    epochs_per_call: int = option(
        1,
        "Epochs per compiled call; a checkpoint is written after each call (resume granularity).",
        minimum=1,
        setting=False,
    )

    def _check(self):
        if not self.lr > 0:
            raise OptionError("lr", f"must be > 0, got {self.lr}")

    def train_spec(self, n_train: int, **changes) -> train.TrainSpec:
        """The trainer's static settings for n_train examples (steps per epoch = n_train // batch_size)."""
        if changes.get("batch_size", self.batch_size) > n_train:
            raise OptionError("batch_size", f"{self.batch_size} exceeds the {n_train} training examples")
        given = {"optimizer": self.optimizer, "lr": self.lr, "batch_size": self.batch_size,
                 "record_every": self.record_every}
        return train.spec_for(n_train, **{**given, **changes})


def resolve_seed_mode(mode: str, workload: str) -> str:
    """``auto`` -> `seeds.default_seed_mode` for the workload on this backend; else the mode itself."""
    return seeds.default_seed_mode(workload=workload) if mode == "auto" else mode


def x64(dtype: str):
    """A context enabling float64 for a run in ``dtype`` (a no-op for float32 or when already on)."""
    import contextlib

    if dtype == "float64" and not jax.config.jax_enable_x64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()
