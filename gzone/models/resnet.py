"""``resnet20``: the CIFAR ResNet of He et al. (2016, section 4.2), with BatchNorm and a width multiplier.

A 3x3 convolution (w_1 channels) -> BatchNorm -> activation, then three stages of n = 3 basic
blocks with w_1, w_2, w_3 channels (16, 32, 64 in the paper; `ResNet.widths`), the first block of
stages 2 and 3 striding by 2, then global average pooling and Dense(C): 6n + 2 = 20 weight layers.
A basic block: conv3x3 -> BN -> act -> conv3x3 -> BN, plus the shortcut, then act. The shortcut
is the paper's option A for CIFAR (parameter-free: the input subsampled by the stride and its
channels zero-padded), so the only parameters are conv kernels (no conv biases: BatchNorm
follows every conv), BatchNorm scales and offsets, and the last layer's kernel and bias.

BatchNorm keeps its running averages in the ``'batch_stats'`` collection (the model's state, not
part of theta); ``__call__(x, train)`` follows the flax convention (`gzone.models.apply` says how
gzone calls it: batch statistics by default). 1-D inputs [N, L] are treated as [N, L, 1].
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from gzone.models.cnn import PatchConv, _images
from gzone.models.mlp import ACTIVATIONS


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> act -> conv3x3 -> BN, plus the option-A shortcut, then act."""

    features: int
    stride: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, train: bool):
        act = ACTIVATIONS[self.activation]
        spatial = x.ndim - 2
        window, strides = (3,) * spatial, (self.stride,) * spatial
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, name=name)  # noqa: E731
        y = PatchConv(self.features, window, strides=strides, use_bias=False, name="conv_00")(x)
        y = act(norm("bn_00")(y))
        y = PatchConv(self.features, window, use_bias=False, name="conv_01")(y)
        y = norm("bn_01")(y)
        shortcut = x
        if self.stride != 1:
            shortcut = shortcut[(slice(None), *(slice(None, None, self.stride),) * spatial)]
        if shortcut.shape[-1] != self.features:
            pad = self.features - shortcut.shape[-1]
            shortcut = jnp.pad(shortcut, [(0, 0)] * (x.ndim - 1) + [(pad // 2, pad - pad // 2)])
        return act(y + shortcut)


class ResNet(nn.Module):
    """The CIFAR ResNet with ``blocks`` basic blocks per stage (3: resnet20) and stage ``widths``."""

    widths: Sequence[int]
    num_classes: int
    blocks: int = 3
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = ACTIVATIONS[self.activation]
        x = _images(x)
        spatial = x.ndim - 2
        x = PatchConv(self.widths[0], (3,) * spatial, use_bias=False, name="conv_00")(x)
        x = act(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn_00")(x))
        k = 0
        for stage, width in enumerate(self.widths):
            for b in range(self.blocks):
                stride = 2 if stage > 0 and b == 0 else 1
                x = BasicBlock(width, stride, self.activation, name=f"block_{k:02d}")(x, train)
                k += 1
        x = jnp.mean(x, axis=tuple(range(1, 1 + spatial)))
        return nn.Dense(self.num_classes, name="dense_00")(x)
