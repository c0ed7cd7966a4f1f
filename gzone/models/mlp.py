"""Fully connected networks: ``mlp`` (any hidden widths) and ``lenet300_100`` (784-300-100-10)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu}


class MLP(nn.Module):
    """Flatten, hidden Dense layers with the activation, Dense(C).

    Without biases (``use_bias=False``) and with relu the network is positively homogeneous of
    degree L = len(widths) + 1 in theta: scaling theta by alpha scales the logits by alpha^L.
    """

    widths: Sequence[int]
    num_classes: int
    activation: str = "relu"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.widths):
            x = act(nn.Dense(width, use_bias=self.use_bias, name=f"dense_{i:02d}")(x))
        return nn.Dense(self.num_classes, use_bias=self.use_bias, name=f"dense_{len(self.widths):02d}")(x)
