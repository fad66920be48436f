"""Convolutional encoder and decoder for VAEs on small images."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import conv as conv_lib


@dataclasses.dataclass(frozen=True)
class ConvVAEConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)
  latent_dim: int = 32
  channels: tuple[int, ...] = (32, 64)  # one stride-2 conv per entry
  hidden_dim: int = 512
  num_classes: int = 0  # > 0: encoder and decoder are conditioned on labels
  outputs_per_pixel: int = 1  # 1: Bernoulli logits; 2: Gaussian mean, log-scale
  dtype: str = "float32"  # compute dtype; parameters stay float32


def depth_to_space(h_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, r*r*C] -> [B, r*H, r*W, C]."""
  b, h, w, c = h_BHWC.shape
  h_BHWC = h_BHWC.reshape(b, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5)
  return h_BHWC.reshape(b, h * r, w * r, c // (r * r))


class Encoder(nnx.Module):
  """q(z | x [, y]): image -> (mean, log-variance) of a diagonal Gaussian."""

  def __init__(self, cfg: ConvVAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.dtype)
    c_in = cfg.image_shape[-1]
    self.convs = nnx.List()
    for c_out in cfg.channels:
      self.convs.append(conv_lib.Conv(c_in, c_out, (3, 3), strides=2,
                                      dtype=dtype, rngs=rngs))
      c_in = c_out
    h, w = cfg.image_shape[0], cfg.image_shape[1]
    for _ in cfg.channels:
      h, w = -(-h // 2), -(-w // 2)
    flat = h * w * c_in + cfg.num_classes
    self.hidden = nnx.Linear(flat, cfg.hidden_dim, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(cfg.hidden_dim + cfg.num_classes,
                          2 * cfg.latent_dim, dtype=dtype, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, y_onehot_BK: jax.Array | None = None
               ) -> tuple[jax.Array, jax.Array]:
    h = x_BHWC
    for conv in self.convs:
      h = nnx.silu(conv(h))
    h = h.reshape(h.shape[0], -1)
    if self.cfg.num_classes:
      h = jnp.concatenate([h, y_onehot_BK.astype(h.dtype)], -1)
    h = nnx.silu(self.hidden(h))
    if self.cfg.num_classes:
      h = jnp.concatenate([h, y_onehot_BK.astype(h.dtype)], -1)
    mean_BD, logvar_BD = jnp.split(self.out(h).astype(jnp.float32), 2, -1)
    return mean_BD, logvar_BD


class Decoder(nnx.Module):
  """p(x | z [, y]): latent -> per-pixel distribution parameters."""

  def __init__(self, cfg: ConvVAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.dtype)
    h, w, c = cfg.image_shape
    for _ in cfg.channels:
      h, w = -(-h // 2), -(-w // 2)
    self.start = (h, w, cfg.channels[-1])
    self.hidden = nnx.Linear(cfg.latent_dim + cfg.num_classes, cfg.hidden_dim,
                             dtype=dtype, rngs=rngs)
    self.proj = nnx.Linear(cfg.hidden_dim + cfg.num_classes,
                           h * w * cfg.channels[-1], dtype=dtype, rngs=rngs)
    # Upsampling by sub-pixel convolution (conv to 4x channels, then
    # depth-to-space): as expressive as a stride-2 transposed conv and far
    # cheaper to differentiate on CPU. Channels mirror the encoder's, halving
    # once more at full resolution.
    self.upconvs = nnx.List()
    c_in = cfg.channels[-1]
    outs = list(reversed(cfg.channels))[1:] + [max(cfg.channels[0] // 2, 1)]
    for c_out in outs:
      self.upconvs.append(conv_lib.Conv(c_in, 4 * c_out, (3, 3), dtype=dtype,
                                        rngs=rngs))
      c_in = c_out
    self.out = conv_lib.Conv(c_in, c * cfg.outputs_per_pixel, (3, 3),
                             dtype=dtype, rngs=rngs)

  def __call__(self, z_BD: jax.Array, y_onehot_BK: jax.Array | None = None
               ) -> jax.Array:
    h = z_BD
    if self.cfg.num_classes:
      h = jnp.concatenate([h, y_onehot_BK.astype(h.dtype)], -1)
    h = nnx.silu(self.hidden(h))
    if self.cfg.num_classes:  # the label again, so the decoder cannot lose it
      h = jnp.concatenate([h, y_onehot_BK.astype(h.dtype)], -1)
    h = nnx.silu(self.proj(h)).reshape(h.shape[0], *self.start)
    for upconv in self.upconvs:
      h = nnx.silu(depth_to_space(upconv(h)))
    height, width, _ = self.cfg.image_shape
    h = h[:, :height, :width]  # undo the round-up of odd sizes
    return self.out(h).astype(jnp.float32)  # [B, H, W, C * outputs_per_pixel]


class ConvVAE(nnx.Module):
  def __init__(self, cfg: ConvVAEConfig, *, rngs: nnx.Rngs):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)
