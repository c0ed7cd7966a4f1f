"""A problem: a flax module and its examples at a dtype, checked once, with a fingerprint of each.

    problem = gzone.problem.build(module, input_shape=(40,), dtype="float32")
    x, y = problem.examples(x, y)            # validated device arrays
    problem.fm, problem.r_x, problem.num_classes, problem.describe()

Any flax.linen module that maps a batch [N, *input_shape] to logits [N, C] works. gzone
initialises it as it initialises its own models (`models.init_params`: Xavier-normal kernels,
zero biases, unit norm scales), so r_X and the point conventions are defined for any module. A
module with state (BatchNorm statistics) takes ``train: bool`` and enters the loss by a stated
mode (`models.apply`); the loss kind and temperature are the problem's too (`flat`). The settings
a run folder records (and a resume must match) include `Problem.identity` (the module's class,
its fields, parameter shapes, state collections and mode, the loss kind, the factory that built
it) and `fingerprint` of the examples actually used.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gzone import flat, models, options
from gzone import train as train_lib

Array = jax.Array
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A model seen through its flat parameters, at one dtype.

    Attributes:
      module: the flax module.
      fm: its `flat.FlatModel` (apply, unravel, D, segments).
      input_shape: the shape of one example.
      num_classes: C, the number of logits.
      r_x: the expected Xavier radius (`models.xavier_radius`).
      dtype: the float dtype of parameters and inputs (a jnp dtype).
      state: the module's state collections (empty for none).
    """

    module: nn.Module
    fm: flat.FlatModel
    input_shape: tuple[int, ...]
    num_classes: int
    r_x: float
    dtype: Any
    state: tuple[str, ...] = ()

    @property
    def D(self) -> int:
        return self.fm.D

    @property
    def dtype_name(self) -> str:
        return jnp.dtype(self.dtype).name

    def sample_fn(self, convention: str = "xavier") -> Callable[[Array], Array]:
        """key -> flat init sample theta [D] (`models.INIT_CONVENTIONS`)."""
        return flat.sample_fn(self.module, self.input_shape, convention, self.dtype)

    def examples(self, x, y, *, what: str = "examples") -> tuple[Array, Array]:
        """(x, y) checked against the model and cast: x [N, *input_shape] finite, y [N] integers in [0, C).

        Raises:
          ValueError: naming `what` and the problem.
        """
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or x.shape[1:] != self.input_shape:
            raise ValueError(
                f"{what}: inputs of shape {x.shape} do not match the model's input shape {self.input_shape}"
            )
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise ValueError(f"{what}: inputs must be finite numbers")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"{what}: labels must be 1-D with one label per input, got shape {y.shape} for "
                f"{x.shape[0]} inputs"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{what}: labels must be integers (class indices), got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(
                f"{what}: labels must be in [0, {self.num_classes}) for a model with {self.num_classes} "
                "logits, "
                f"got [{y.min()}, {y.max()}]"
            )
        if x.shape[0] == 0:
            raise ValueError(f"{what}: no examples")
        return jnp.asarray(x, self.dtype), jnp.asarray(y, jnp.int32)

    def training_data(self, train, test) -> train_lib.Data:
        """The trainer's `train.Data` from (x_train, y_train) and (x_test, y_test), checked by `examples`."""
        pairs = []
        for what, pair in (("training examples", train), ("test examples", test)):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(
                    f"{what}: expected a pair (x, y) of inputs and labels, got {type(pair).__name__}"
                )
            pairs.extend(self.examples(*pair, what=what))
        return train_lib.Data(*pairs)

    def describe(self) -> dict:
        """A JSON-able summary for config.json's derived values."""
        return {
            "model": models.describe(self.module),
            "D": self.fm.D,
            "r_x": self.r_x,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype_name,
            "layers": [{"name": s.name, "size": s.size} for s in self.fm.segments],
            "loss": self.fm.loss,
            "temperature": 1.0 if self.fm.temperature is None else float(self.fm.temperature),
            "model_state": {"collections": list(self.state), "mode": self.fm.state},
        }

    def identity(self) -> dict:
        """What identifies the model in a run's settings: class, fields, parameter shapes, the state
        collections and their mode (None without state), the loss kind and the factory path (None for a
        module not built by `models.from_factory`)."""
        module = type(self.module)
        return {
            "class": f"{module.__module__}.{module.__qualname__}",
            "fields": models.describe(self.module),
            "parameters": [[s.name, list(s.shape)] for s in self.fm.segments],
            "state": {"collections": list(self.state), "mode": self.fm.state} if self.state else None,
            "loss": self.fm.loss,
            "factory": models.factory_of(self.module),
        }


def build(
    module: Any,
    *,
    input_shape,
    dtype: str = "float32",
    loss: str = "cross_entropy",
    model_state: str = "batch",
    temperature: float = 1.0,
) -> Problem:
    """The `Problem` of a flax module on inputs of `input_shape`.

    Args:
      module: the flax module; input_shape: the shape of one example; dtype: float32 or float64.
      loss: the loss kind (`flat.LOSSES`); model_state: how state enters it (`models.STATE_MODES`);
      temperature: T > 0, the loss sees logits / T (1: untouched).

    Raises:
      TypeError: `module` is not a flax.linen Module.
      ValueError: its output is not logits [N, C] with C >= 2, it has no parameters, or it has
        state but no ``train`` keyword.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"model must be a flax.linen Module, got {type(module).__name__}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} unknown; allowed: {', '.join(DTYPES)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    input_shape = tuple(int(s) for s in input_shape)
    jdtype = DTYPES[dtype]
    if model_state not in models.STATE_MODES:
        raise ValueError(f"model state {model_state!r} unknown; allowed: {', '.join(models.STATE_MODES)}")

    def fail(err):  # a user's module can fail in any way; say which module and why
        return ValueError(
            f"{type(module).__name__} cannot be applied to inputs of shape {input_shape}: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        )

    try:
        variables = models.variable_shapes(module, input_shape)
    except Exception as err:
        raise fail(err) from err
    state = {k: v for k, v in variables.items() if k != "params"}
    if state and not models.takes_train(module):
        models.initial_state(module, input_shape)  # raises the one-line error
    try:
        out = jax.eval_shape(
            lambda p, s, x: models.apply_fn(module, s, model_state)(p, x),
            variables.get("params", {}),
            state,
            jax.ShapeDtypeStruct((2, *input_shape), jnp.float32),
        )
    except Exception as err:
        raise fail(err) from err
    if not hasattr(out, "shape") or len(out.shape) != 2 or out.shape[0] != 2 or out.shape[1] < 2:
        raise ValueError(
            f"{type(module).__name__} must return logits [N, C] with C >= 2, got {getattr(out, 'shape', out)}"
        )
    fm = flat.flat_model(
        module, input_shape, jdtype, loss=loss, model_state=model_state, temperature=float(temperature)
    )
    if fm.D == 0:
        raise ValueError(f"{type(module).__name__} has no parameters")
    return Problem(
        module,
        fm,
        input_shape,
        int(out.shape[1]),
        models.xavier_radius(module, input_shape),
        jdtype,
        tuple(sorted(state)),
    )


def run_study(run: Callable, opts: Any, *, model: Any, train, test, run_dir=None, log=None):
    """A study on a flax module and (x, y) pairs: ``run(problem, data, opts, run_dir=, log=)``.

    Within `options.x64` of ``opts.dtype``: the `Problem` of `model` (inputs shaped like one example
    of ``train``, the study's dtype and `opts.problem_kwargs()`), the pairs checked by
    `Problem.training_data`, then the study's own `run` on them.

    Args:
      run: the study's run(prob, data, opts, *, run_dir, log).
      opts: the study's options (built and checked).
      model: a flax.linen Module mapping [N, *input_shape] to logits [N, C].
      train: (x_train [N, *input_shape], y_train [N]); test: (x_test [M, *input_shape], y_test [M]).
      run_dir, log: passed on to `run`.

    Returns:
      What `run` returns.
    """
    with options.x64(opts.dtype):
        prob = build(model, input_shape=np.shape(train[0])[1:], dtype=opts.dtype, **opts.problem_kwargs())
        return run(prob, prob.training_data(train, test), opts, run_dir=run_dir, log=log)


def fingerprint(*arrays) -> str:
    """sha256 (hex, first 16 characters) of the arrays' dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def data_settings(data: train_lib.Data) -> dict:
    """What identifies a training run's data (`train.Data`) in its settings: counts and a `fingerprint`."""
    return {
        "n_train": int(data.x_train.shape[0]),
        "n_test": int(data.x_test.shape[0]),
        "fingerprint": fingerprint(*data),
    }
