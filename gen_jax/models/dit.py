"""The Diffusion Transformer (DiT, Peebles & Xie 2023), in Flax NNX.

The image is cut into p x p patches, each a token (a linear embedding plus a
fixed 2-D sine-cosine position); Transformer blocks attend over all tokens and
are conditioned on the time (and class) embedding c by adaLN-Zero: every
block's LayerNorms carry no parameters of their own and are shifted and
scaled by a linear map of c, and each residual branch is multiplied by a
gate from c. The maps are zero at initialization, so every block starts as
the identity and the network's output starts at zero. A last adaLN layer and
a linear map give each token's p x p x C output, folded back into the image.

Images whose sides are not multiples of p are padded with zeros to the next
multiple; the padding's pixels are masked out of the patch embedding and
cropped from the output, so they never reach a real pixel.

The network predicts what the objective asks (eps, v, x_0 or EDM's F); the
paper's learned variance is left out (DDPM here keeps fixed variances). Its
layers share the language model's names (qkv, attn_out, fc, mlp_out), so
`transformer.partition_rules` shards it over 'fsdp' and 'model' alike.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import text_conditioning
from gen_jax.models.unet import timestep_embedding

_xavier = nnx.initializers.xavier_uniform()
_zeros = nnx.initializers.zeros


@dataclasses.dataclass(frozen=True)
class DiTConfig:
  image_shape: tuple[int, int, int] = (32, 32, 3)
  patch_size: int = 2
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  num_classes: int = 0  # > 0: class-conditional (plus a null class)
  # > 0: each block attends to a context [B, L, context_dim] (text) after
  # its self-attention (PixArt-alpha's cross-attention), context_heads heads.
  context_dim: int = 0
  context_heads: int = 4
  dtype: str = "float32"  # compute dtype; parameters stay float32

  @classmethod
  def named(cls, name: str, **overrides) -> "DiTConfig":
    """The paper's sizes: 'S' (33M parameters at p=2), 'B', 'L', 'XL'."""
    width, depth, heads = {"S": (384, 12, 6), "B": (768, 12, 12),
                           "L": (1024, 24, 16), "XL": (1152, 28, 16)}[name]
    return cls(width=width, depth=depth, num_heads=heads, **overrides)

  @property
  def grid(self) -> tuple[int, int]:
    """Tokens along each side (after padding to multiples of p)."""
    p = self.patch_size
    return -(-self.image_shape[0] // p), -(-self.image_shape[1] // p)


def sincos_2d(h: int, w: int, dim: int) -> np.ndarray:
  """Fixed 2-D position embedding [h*w, dim]: half the dimensions encode
  the row, half the column, each as sines and cosines of 1/10000^(2i/d)."""
  def one_axis(pos, d):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  emb = np.concatenate([one_axis(rows, dim // 2), one_axis(cols, dim // 2)],
                       axis=1)
  return emb.astype(np.float32)


def _modulate(x_BTD, shift_BD, scale_BD):
  return x_BTD * (1.0 + scale_BD[:, None]) + shift_BD[:, None]


class DiTBlock(nnx.Module):
  """x + gate * Attn(adaLN(x)); x + gate * MLP(adaLN(x))."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, dtype = cfg.width, jnp.dtype(cfg.dtype)
    linear = lambda i, o, init=_xavier: nnx.Linear(
        i, o, kernel_init=init, dtype=dtype, rngs=rngs)
    norm = lambda: nnx.LayerNorm(d, epsilon=1e-6, use_scale=False,
                                 use_bias=False, dtype=dtype, rngs=rngs)
    self.norm1, self.norm2 = norm(), norm()
    self.qkv = linear(d, 3 * d)
    self.attn_out = linear(d, d)
    hidden = int(d * cfg.mlp_ratio)
    self.fc = linear(d, hidden)
    self.mlp_out = linear(hidden, d)
    self.adaln = linear(d, 6 * d, _zeros)  # adaLN-Zero
    self.cross = (text_conditioning.CrossAttention(
        d, cfg.context_dim, cfg.context_heads, dtype, rngs=rngs)
                  if cfg.context_dim else None)

  def __call__(self, x_BTD, c_BD, context=None, context_mask=None):
    cfg = self.cfg
    b, t, d = x_BTD.shape
    shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(
        self.adaln(nnx.silu(c_BD)), 6, axis=-1)
    h = _modulate(self.norm1(x_BTD), shift1, scale1)
    heads = cfg.num_heads
    q, k, v = (part.reshape(b, t, heads, d // heads)
               for part in jnp.split(self.qkv(h), 3, axis=-1))
    a = jax.nn.dot_product_attention(q, k, v).reshape(b, t, d)
    x_BTD = x_BTD + gate1[:, None] * self.attn_out(a)
    if self.cross is not None:
      x_BTD = self.cross(x_BTD, context, context_mask)
    h = _modulate(self.norm2(x_BTD), shift2, scale2)
    h = self.mlp_out(jax.nn.gelu(self.fc(h), approximate=True))
    return x_BTD + gate2[:, None] * h


class DiT(nnx.Module):
  """(x [B, H, W, C], t [B], y [B]) -> [B, H, W, C] in float32."""

  def __init__(self, cfg: DiTConfig, *, rngs: nnx.Rngs):
    if cfg.width % cfg.num_heads or cfg.width % 4:
      raise ValueError(f"DiT width {cfg.width} must be a multiple of 4 and "
                       f"of num_heads {cfg.num_heads}.")
    self.cfg = cfg
    d, dtype, p = cfg.width, jnp.dtype(cfg.dtype), cfg.patch_size
    c = cfg.image_shape[-1]
    self.patch_embed = nnx.Linear(p * p * c, d, kernel_init=_xavier,
                                  dtype=dtype, rngs=rngs)
    normal = nnx.initializers.normal(0.02)
    self.time_mlp1 = nnx.Linear(256, d, kernel_init=normal, dtype=dtype,
                                rngs=rngs)
    self.time_mlp2 = nnx.Linear(d, d, kernel_init=normal, dtype=dtype,
                                rngs=rngs)
    self.class_emb = (nnx.Embed(cfg.num_classes + 1, d, embedding_init=normal,
                                rngs=rngs) if cfg.num_classes else None)
    self.blocks = nnx.List([DiTBlock(cfg, rngs=rngs)
                            for _ in range(cfg.depth)])
    self.norm_out = nnx.LayerNorm(d, epsilon=1e-6, use_scale=False,
                                  use_bias=False, dtype=dtype, rngs=rngs)
    self.adaln_out = nnx.Linear(d, 2 * d, kernel_init=_zeros, dtype=dtype,
                                rngs=rngs)
    self.linear_out = nnx.Linear(d, p * p * c, kernel_init=_zeros,
                                 dtype=dtype, rngs=rngs)

  def pixel_mask(self) -> np.ndarray:
    """[H', W', 1]: 1 on the image's pixels, 0 on the padding."""
    (gh, gw), p = self.cfg.grid, self.cfg.patch_size
    h, w, _ = self.cfg.image_shape
    mask = np.zeros((gh * p, gw * p, 1), np.float32)
    mask[:h, :w] = 1.0
    return mask

  def __call__(self, x_BHWC, t_B, y_B=None, dropout_key=None, context=None,
               context_mask=None):
    del dropout_key  # DiT trains without dropout
    (gh, gw), p = self.cfg.grid, self.cfg.patch_size
    h, w, _ = self.cfg.image_shape
    x = jnp.pad(x_BHWC, ((0, 0), (0, gh * p - h), (0, gw * p - w), (0, 0)))
    return self.padded(x, t_B, y_B, context, context_mask)[:, :h, :w]

  def padded(self, x_BHWC, t_B, y_B=None, context=None, context_mask=None):
    """The network on an image already padded to whole patches (whatever
    the padding holds) -> the padded output."""
    cfg = self.cfg
    (gh, gw), p = cfg.grid, cfg.patch_size
    b, c = x_BHWC.shape[0], x_BHWC.shape[-1]
    x = x_BHWC * self.pixel_mask()[None]
    tokens = x.reshape(b, gh, p, gw, p, c).transpose(0, 1, 3, 2, 4, 5)
    tokens = tokens.reshape(b, gh * gw, p * p * c)
    pos = sincos_2d(gh, gw, cfg.width)[None]  # a constant, not a parameter
    x = self.patch_embed(tokens) + pos.astype(jnp.dtype(cfg.dtype))
    cond = self.time_mlp2(nnx.silu(self.time_mlp1(
        timestep_embedding(t_B, 256))))
    if self.class_emb is not None:
      if y_B is None:
        y_B = jnp.full(t_B.shape, cfg.num_classes, jnp.int32)
      cond = cond + self.class_emb(y_B).astype(cond.dtype)
    for block in self.blocks:
      x = block(x, cond, context, context_mask)
    shift, scale = jnp.split(self.adaln_out(nnx.silu(cond)), 2, axis=-1)
    out = self.linear_out(_modulate(self.norm_out(x), shift, scale))
    out = out.reshape(b, gh, gw, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return out.reshape(b, gh * p, gw * p, c).astype(jnp.float32)
