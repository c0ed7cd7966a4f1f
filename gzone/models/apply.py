"""How gzone calls a flax module: its variables, its model state, and the pure forward function.

theta holds the ``'params'`` collection only. A module may hold other collections (flax's
BatchNorm keeps running averages in ``'batch_stats'``); they are the module's *state*, never
trained and never part of theta. The loss of theta on a batch is then defined by a stated mode
(`STATE_MODES`):

  batch   the statistics are computed from the batch the module is applied to (train-mode
          BatchNorm: ``module.apply(..., train=True, mutable=[...])``), and the running-average
          update that call returns is discarded. The loss on fixed examples is a deterministic
          function of theta (the statistics of those examples at theta, differentiated through).
  frozen  the stored statistics are used (``train=False``): those the module's initialiser gives
          (flax BatchNorm: running mean 0, running variance 1), whatever theta is.

A module with state must take a keyword ``train: bool`` in ``__call__`` (the flax convention:
``nn.BatchNorm(use_running_average=not train)``). A module that takes ``train`` but holds no
state is always called with ``train=False`` (deterministic: e.g. dropout off).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

STATE_MODES = ("batch", "frozen")


def takes_train(module: nn.Module) -> bool:
    """Whether the module's ``__call__`` has a ``train`` parameter."""
    try:
        return "train" in inspect.signature(type(module).__call__).parameters
    except (TypeError, ValueError):
        return False


def _kwargs(module: nn.Module, train: bool) -> dict:
    return {"train": train} if takes_train(module) else {}


def variable_shapes(module: nn.Module, input_shape: Sequence[int]) -> dict:
    """All collections of the module on a batch of one example, as jax.ShapeDtypeStruct (no FLOPs)."""
    x = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda: module.init(jax.random.key(0), x, **_kwargs(module, False)))


def param_shapes(module: nn.Module, input_shape: Sequence[int]) -> Any:
    """Pytree of jax.ShapeDtypeStruct for the module's params (no FLOPs, no randomness used)."""
    return variable_shapes(module, input_shape)["params"]


def state_collections(module: nn.Module, input_shape: Sequence[int]) -> tuple[str, ...]:
    """The module's collections other than ``'params'`` (its state), sorted."""
    return tuple(sorted(k for k in variable_shapes(module, input_shape) if k != "params"))


def initial_state(module: nn.Module, input_shape: Sequence[int], dtype=jnp.float32) -> dict:
    """The state collections at the values the module's initialiser gives them (floats cast to dtype).

    Raises:
      ValueError: the module has state but its ``__call__`` takes no ``train`` keyword.
    """
    names = state_collections(module, input_shape)
    if not names:
        return {}
    if not takes_train(module):
        raise ValueError(
            f"{type(module).__name__} holds collections {', '.join(names)} besides 'params': its __call__ "
            "must take train: bool (True: batch statistics, False: stored statistics), the flax convention"
        )
    x = jnp.zeros((1, *input_shape), jnp.float32)
    state = jax.jit(
        lambda: {k: v for k, v in module.init(jax.random.key(0), x, train=False).items() if k in names}
    )()
    cast = lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a  # noqa: E731
    return jax.tree_util.tree_map(cast, state)


def apply_fn(module: nn.Module, state: dict | None = None, mode: str = "batch") -> Callable:
    """(params, x) -> logits, the pure forward function of theta's parameters (see module docstring).

    Args:
      module: the flax module.
      state: its state collections (`initial_state`); None or empty for a module without state.
      mode: one of STATE_MODES (used only when there is state).

    The state arrays are closed over (compiled in as constants): they are small (BatchNorm keeps
    two numbers per channel), and in ``batch`` mode the running averages are not read at all.
    """
    if mode not in STATE_MODES:
        raise ValueError(f"model state mode {mode!r} unknown; allowed: {', '.join(STATE_MODES)}")
    if not state:
        kwargs = _kwargs(module, False)

        def fn(params, x):
            return module.apply({"params": params}, x, **kwargs)

        return fn
    mutable = list(state)
    if mode == "batch":

        def fn(params, x):
            out, _ = module.apply({"params": params, **state}, x, train=True, mutable=mutable)
            return out  # the running-average update is discarded

        return fn

    def fn(params, x):
        return module.apply({"params": params, **state}, x, train=False)

    return fn
