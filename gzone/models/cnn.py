"""Convolutional networks: ``cnn_fs`` (Fort & Scherlis), ``small_cnn`` (Larsen et al.), ``lenet5``.

Convolutions are `PatchConv` (image patches times a matrix) by default: same parameters as
`flax.linen.Conv`, faster inside loops on XLA:CPU (see its docstring).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gzone.models.mlp import ACTIVATIONS


class PatchConv(nn.Module):
    """Convolution as image patches times a matrix (im2col), any stride, 'SAME' or 'VALID' padding.

    Parameters are those of `flax.linen.Conv` (``kernel`` [*window, c_in, c_out], ``bias``
    [c_out] when ``use_bias``), so layouts, fans and r_X are unchanged. Why not `nn.Conv`: on
    XLA:CPU the kernel gradient of a convolution inside a loop (`lax.scan`/`lax.map`: training
    steps, mapped seeds, Hessian columns) measured ~20x slower than outside it, while a
    patches-times-matrix product keeps its speed there. Memory: the patches are prod(window)
    times the input activations.
    """

    features: int
    window: Sequence[int]
    strides: Sequence[int] | None = None
    padding: str = "SAME"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.window, c_in, self.features))
        spatial = "HW"[: len(self.window)] if len(self.window) <= 2 else None
        dims = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
        strides = tuple(self.strides) if self.strides is not None else (1,) * len(self.window)
        patches = jax.lax.conv_general_dilated_patches(
            x, tuple(self.window), strides, self.padding, dimension_numbers=dims
        )  # [N, *spatial, c_in * prod(window)], channel-major
        order = (len(self.window), *range(len(self.window)), len(self.window) + 1)
        matrix = jnp.transpose(kernel, order).reshape(-1, self.features)
        out = patches @ matrix.astype(patches.dtype)
        if not self.use_bias:
            return out
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return out + bias.astype(patches.dtype).reshape((1,) * (patches.ndim - 1) + (-1,))


def _images(x):
    """[N, L] sequences as [N, L, 1] (1-D convolutions); images unchanged."""
    return x[..., None] if x.ndim == 2 else x


class ConvNet(nn.Module):
    """Conv blocks then one Dense layer.

    ``order='pool_act'`` gives conv -> max-pool -> activation (Fort & Scherlis);
    ``order='act_pool'`` gives conv -> activation -> max-pool (SmallCNN).
    1-D inputs [N, L] are treated as [N, L, 1] sequences (1-D convolutions). Convolutions are
    `PatchConv` ('patches', the default) or `flax.linen.Conv` ('xla'); same parameters.
    """

    channels: Sequence[int]
    num_classes: int
    activation: str = "relu"
    order: str = "pool_act"
    conv_impl: str = "patches"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        x = _images(x)
        spatial = x.ndim - 2
        window = (3,) * spatial
        pool = (2,) * spatial
        for i, channels in enumerate(self.channels):
            if self.conv_impl == "xla":
                x = nn.Conv(channels, window, padding="SAME", use_bias=self.use_bias, name=f"conv_{i:02d}")(x)
            else:
                x = PatchConv(channels, window, use_bias=self.use_bias, name=f"conv_{i:02d}")(x)
            if self.order == "pool_act":
                x = act(nn.max_pool(x, pool, strides=pool))
            else:
                x = nn.max_pool(act(x), pool, strides=pool)
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes, use_bias=self.use_bias, name="dense_00")(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998, the modern form): [5x5 'VALID' conv -> activation -> 2x2 max-pool]
    for each of ``channels`` (6, 16), then Dense ``hidden`` (120, 84) with the activation, Dense(C).

    On CIFAR-10 (32x32x3): 28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16 = 400 -> 120 -> 84 -> 10,
    D = 62,006 with biases. Without biases and with relu it is positively homogeneous of degree
    L = len(channels) + len(hidden) + 1 (max-pooling commutes with positive scaling).
    """

    channels: Sequence[int]
    hidden: Sequence[int]
    num_classes: int
    activation: str = "relu"
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        x = _images(x)
        spatial = x.ndim - 2
        pool = (2,) * spatial
        for i, channels in enumerate(self.channels):
            conv = PatchConv(
                channels, (5,) * spatial, padding="VALID", use_bias=self.use_bias, name=f"conv_{i:02d}"
            )
            x = nn.max_pool(act(conv(x)), pool, strides=pool)
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = act(nn.Dense(width, use_bias=self.use_bias, name=f"dense_{i:02d}")(x))
        return nn.Dense(self.num_classes, use_bias=self.use_bias, name=f"dense_{len(self.hidden):02d}")(x)
