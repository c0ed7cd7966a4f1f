"""``vit_tiny``: a pre-LayerNorm vision transformer on patches (Dosovitskiy et al. 2021), sized for CPUs.

Images [N, H, W, c] are cut into non-overlapping p x p patches (1-D inputs [N, L]: segments of p),
each flattened and mapped by Dense(E) (``patch_embed``); a class token (``cls`` [1, 1, E]) is
prepended and position embeddings (``pos_embedding`` [1, T + 1, E]) added. Then ``depth`` blocks

    x <- x + MHA(LN(x)),   x <- x + MLP(LN(x)),   MLP = Dense(m) -> act -> Dense(E)

(pre-LN: the residual stream is never normalised), a final LayerNorm and Dense(C) on the class
token. Attention is flax's `MultiHeadDotProductAttention` (DenseGeneral kernels query / key /
value [E, heads, E / heads] and out [heads, E / heads, E]; `gzone.models.init.kernel_fans` gives
them their true fans). gzone's init (`gzone.models.init`): kernels Xavier, biases and LayerNorm
offsets 0, LayerNorm scales 1, ``cls`` and ``pos_embedding`` N(0, 1/E). No dropout.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gzone.models.mlp import ACTIVATIONS


def patches(x, p: int):
    """[N, H, W, c] -> [N, (H/p)(W/p), p p c]; [N, L] -> [N, L/p, p] (H, W, L divisible by p)."""
    if x.ndim == 2:
        n, length = x.shape
        if length % p:
            raise ValueError(f"sequence length {length} is not divisible by the patch size {p}")
        return x.reshape(n, length // p, p)
    n, h, w, c = x.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


class ViT(nn.Module):
    """Pre-LN transformer classifier on patches (module docstring)."""

    num_classes: int
    embed_dim: int = 64
    mlp_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    patch_size: int = 4
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation]
        tokens = nn.Dense(self.embed_dim, name="patch_embed")(patches(x, self.patch_size))
        n, t, e = tokens.shape
        cls = self.param("cls", nn.initializers.zeros, (1, 1, e))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, e)).astype(tokens.dtype), tokens], axis=1)
        x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, t + 1, e)).astype(x.dtype)
        for i in range(self.depth):
            y = nn.LayerNorm(name=f"block_{i:02d}_ln_00")(x)
            x = x + nn.MultiHeadDotProductAttention(self.num_heads, name=f"block_{i:02d}_attn")(y, y)
            y = nn.LayerNorm(name=f"block_{i:02d}_ln_01")(x)
            y = act(nn.Dense(self.mlp_dim, name=f"block_{i:02d}_mlp_00")(y))
            x = x + nn.Dense(e, name=f"block_{i:02d}_mlp_01")(y)
        x = nn.LayerNorm(name="ln_final")(x)
        return nn.Dense(self.num_classes, name="head")(x[:, 0])
