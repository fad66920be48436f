"""The U-Net denoiser of DDPM (Ho et al. 2020), in Flax NNX.

Levels of residual blocks at falling resolutions (channel multipliers per
level), self-attention at chosen resolutions, skip connections from every
block on the way down to the way up, a sinusoidal time embedding injected into
every residual block, and an optional class embedding (with one extra "null"
class for classifier-free guidance). `UNetConfig.ddpm_cifar10()` is the paper's
35.7M-parameter CIFAR-10 network.

Dropout takes an explicit key (`dropout_key=None` means deterministic), so the
network stays a pure function of (params, inputs, key).
"""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import conv as conv_lib
from gen_jax.models import text_conditioning
from gen_jax.models.initializers import conv_kernel_init


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  image_shape: tuple[int, int, int] = (32, 32, 3)
  channels: int = 128  # base width; level i has channels * channel_mults[i]
  channel_mults: tuple[int, ...] = (1, 2, 2, 2)
  num_res_blocks: int = 2  # per level on the way down (one more on the way up)
  # Heights (after patching) of the levels that attend, down and up alike.
  attention_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.1
  num_groups: int = 32  # GroupNorm groups
  num_classes: int = 0  # > 0: class-conditional (plus a null class)
  out_channels: int = 0  # 0: same as the image
  # > 1: the network runs on p x p pixel patches folded into channels
  # (space-to-depth) and unfolds its output: p^2 less activation memory.
  patch_size: int = 1
  # > 0: every attention block is followed by cross-attention to a context
  # [B, L, context_dim] (text features), with context_heads heads.
  context_dim: int = 0
  context_heads: int = 4
  dtype: str = "float32"  # compute dtype; parameters stay float32

  @classmethod
  def ddpm_cifar10(cls, **overrides) -> "UNetConfig":
    """The DDPM CIFAR-10 network (35.7M parameters)."""
    return cls(**{"image_shape": (32, 32, 3), "channels": 128,
                  "channel_mults": (1, 2, 2, 2), "num_res_blocks": 2,
                  "attention_resolutions": (16,), "dropout": 0.1,
                  **overrides})


def timestep_embedding(t_B: jax.Array, dim: int,
                       max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of (possibly fractional) timesteps -> [B, dim]."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
                  / (half - 1))
  args = t_B.astype(jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


def space_to_depth(x_BHWC: jax.Array, p: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/p, W/p, p*p*C]."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(x_BHWC: jax.Array, p: int) -> jax.Array:
  """[B, H, W, p*p*C] -> [B, p*H, p*W, C] (the inverse of space_to_depth)."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h, w, p, p, c // (p * p)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * p, w * p, c // (p * p))


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class ResBlock(nnx.Module):
  """GroupNorm-SiLU-conv, + time (and class) embedding, GroupNorm-SiLU-dropout-
  conv (zero-initialized, so each block starts as the identity), + skip."""

  def __init__(self, c_in: int, c_out: int, emb_dim: int, cfg: UNetConfig, *,
               rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    self.dropout = cfg.dropout
    self.norm1 = nnx.GroupNorm(c_in, num_groups=min(cfg.num_groups, c_in),
                               epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.conv1 = conv_lib.Conv(c_in, c_out, (3, 3), dtype=dtype,
                               kernel_init=conv_kernel_init, rngs=rngs)
    self.emb = nnx.Linear(emb_dim, c_out, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.GroupNorm(c_out, num_groups=min(cfg.num_groups, c_out),
                               epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.conv2 = conv_lib.Conv(c_out, c_out, (3, 3), dtype=dtype,
                               kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.skip = (conv_lib.Conv(c_in, c_out, (1, 1), dtype=dtype,
                                kernel_init=conv_kernel_init, rngs=rngs)
                 if c_in != c_out else None)

  def __call__(self, x_BHWC, emb_BE, dropout_key=None):
    h = self.conv1(nnx.silu(self.norm1(x_BHWC)))
    h = h + self.emb(nnx.silu(emb_BE))[:, None, None, :]
    h = nnx.silu(self.norm2(h))
    h = self.conv2(_dropout(h, self.dropout, dropout_key))
    skip = x_BHWC if self.skip is None else self.skip(x_BHWC)
    return skip + h


class AttentionBlock(nnx.Module):
  """Single-head self-attention over the pixels, residual, zero-init output."""

  def __init__(self, channels: int, cfg: UNetConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    self.norm = nnx.GroupNorm(channels, num_groups=min(cfg.num_groups, channels),
                              epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.qkv = nnx.Linear(channels, 3 * channels, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(channels, channels, dtype=dtype,
                          kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, x_BHWC):
    b, h, w, c = x_BHWC.shape
    qkv = self.qkv(self.norm(x_BHWC)).reshape(b, h * w, 3 * c)
    q_BLC, k_BLC, v_BLC = jnp.split(qkv, 3, axis=-1)
    logits_BLL = jnp.einsum("blc,bmc->blm", q_BLC, k_BLC) / math.sqrt(c)
    weights = jax.nn.softmax(logits_BLL.astype(jnp.float32), axis=-1)
    out_BLC = jnp.einsum("blm,bmc->blc", weights.astype(v_BLC.dtype), v_BLC)
    return x_BHWC + self.out(out_BLC).reshape(b, h, w, c)


class Downsample(nnx.Module):
  """Stride-2 3x3 convolution ('SAME': 28 -> 14 -> 7)."""

  def __init__(self, channels: int, cfg: UNetConfig, *, rngs: nnx.Rngs):
    self.conv = conv_lib.Conv(channels, channels, (3, 3), strides=2,
                              dtype=jnp.dtype(cfg.dtype),
                              kernel_init=conv_kernel_init, rngs=rngs)

  def __call__(self, x_BHWC):
    return self.conv(x_BHWC)


class Upsample(nnx.Module):
  """Nearest-neighbour x2 to the skip's size, then a 3x3 convolution."""

  def __init__(self, channels: int, cfg: UNetConfig, *, rngs: nnx.Rngs):
    self.conv = conv_lib.Conv(channels, channels, (3, 3),
                              dtype=jnp.dtype(cfg.dtype),
                              kernel_init=conv_kernel_init, rngs=rngs)

  def __call__(self, x_BHWC, size: tuple[int, int]):
    x = jnp.repeat(jnp.repeat(x_BHWC, 2, axis=1), 2, axis=2)
    return self.conv(x[:, :size[0], :size[1]])


class UNet(nnx.Module):
  """eps_theta(x_t, t [, y]) (or v): [B, H, W, C] -> [B, H, W, out]."""

  def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.dtype)
    ch = cfg.channels
    emb_dim = 4 * ch
    self.time_mlp1 = nnx.Linear(ch, emb_dim, dtype=dtype, rngs=rngs)
    self.time_mlp2 = nnx.Linear(emb_dim, emb_dim, dtype=dtype, rngs=rngs)
    self.class_emb = (nnx.Embed(cfg.num_classes + 1, emb_dim, rngs=rngs)
                      if cfg.num_classes else None)
    p = cfg.patch_size
    if cfg.image_shape[0] % p or cfg.image_shape[1] % p:
      raise ValueError(f"patch_size {p} does not divide the image "
                       f"{cfg.image_shape[:2]}.")
    c_img = cfg.image_shape[-1] * p * p
    self.conv_in = conv_lib.Conv(c_img, ch, (3, 3), dtype=dtype,
                                 kernel_init=conv_kernel_init, rngs=rngs)

    # Down: blocks and where they sit, so the up path can mirror the skips
    # and the attention (odd sizes round up on the way down, 7 -> 4, so the
    # up path reuses these sizes rather than doubling).
    size = cfg.image_shape[0] // p
    level_sizes = []  # the resolution (height) of each level
    skip_channels = [ch]
    self.down = nnx.List()
    self.down_attn = nnx.List()
    self.down_cross = nnx.List()
    self.downsample = nnx.List()
    c = ch
    for level, mult in enumerate(cfg.channel_mults):
      level_sizes.append(size)
      for _ in range(cfg.num_res_blocks):
        self.down.append(ResBlock(c, ch * mult, emb_dim, cfg, rngs=rngs))
        c = ch * mult
        self.down_attn.append(AttentionBlock(c, cfg, rngs=rngs)
                              if size in cfg.attention_resolutions else None)
        self.down_cross.append(self._cross(c, rngs) if self.down_attn[-1]
                               is not None else None)
        skip_channels.append(c)
      if level != len(cfg.channel_mults) - 1:
        self.downsample.append(Downsample(c, cfg, rngs=rngs))
        size = -(-size // 2)
        skip_channels.append(c)

    self.mid1 = ResBlock(c, c, emb_dim, cfg, rngs=rngs)
    self.mid_attn = AttentionBlock(c, cfg, rngs=rngs)
    self.mid_cross = self._cross(c, rngs)
    self.mid2 = ResBlock(c, c, emb_dim, cfg, rngs=rngs)

    self.up = nnx.List()
    self.up_attn = nnx.List()
    self.up_cross = nnx.List()
    self.upsample = nnx.List()
    for level, mult in reversed(list(enumerate(cfg.channel_mults))):
      for _ in range(cfg.num_res_blocks + 1):
        self.up.append(ResBlock(c + skip_channels.pop(), ch * mult, emb_dim,
                                cfg, rngs=rngs))
        c = ch * mult
        self.up_attn.append(
            AttentionBlock(c, cfg, rngs=rngs)
            if level_sizes[level] in cfg.attention_resolutions else None)
        self.up_cross.append(self._cross(c, rngs) if self.up_attn[-1]
                             is not None else None)
      if level != 0:
        self.upsample.append(Upsample(c, cfg, rngs=rngs))
    self.norm_out = nnx.GroupNorm(c, num_groups=min(cfg.num_groups, c),
                                  epsilon=1e-6, dtype=dtype, rngs=rngs)
    out = (cfg.out_channels or cfg.image_shape[-1]) * p * p
    self.conv_out = conv_lib.Conv(c, out, (3, 3), dtype=dtype,
                                  kernel_init=nnx.initializers.zeros, rngs=rngs)

  def _cross(self, channels: int, rngs: nnx.Rngs):
    cfg = self.cfg
    if not cfg.context_dim:
      return None
    return text_conditioning.CrossAttention(
        channels, cfg.context_dim, cfg.context_heads, jnp.dtype(cfg.dtype),
        rngs=rngs)

  @staticmethod
  def _attend(block, h_BHWC, context, mask):
    if block is None:
      return h_BHWC
    b, h, w, c = h_BHWC.shape
    return block(h_BHWC.reshape(b, h * w, c), context, mask).reshape(
        b, h, w, c)

  def __call__(self, x_BHWC: jax.Array, t_B: jax.Array,
               y_B: jax.Array | None = None,
               dropout_key: jax.Array | None = None,
               context: jax.Array | None = None,
               context_mask: jax.Array | None = None) -> jax.Array:
    """Args: noisy images, timesteps, class ids (num_classes = null class),
    and with `context_dim` the context [B, L, context_dim] and its mask
    [B, L] (False: padding).

    Returns:
      The network output in float32, same spatial shape as the input.
    """
    cfg = self.cfg
    keys = iter(jax.random.split(dropout_key, len(self.down) + len(self.up) + 2)
                if dropout_key is not None else [None] * (
                    len(self.down) + len(self.up) + 2))
    emb = timestep_embedding(t_B, cfg.channels)
    emb = self.time_mlp2(nnx.silu(self.time_mlp1(emb)))
    if self.class_emb is not None:
      if y_B is None:
        y_B = jnp.full(t_B.shape, cfg.num_classes, jnp.int32)
      emb = emb + self.class_emb(y_B).astype(emb.dtype)

    if cfg.patch_size > 1:
      x_BHWC = space_to_depth(x_BHWC, cfg.patch_size)
    h = self.conv_in(x_BHWC)
    skips = [h]
    i = 0
    for level in range(len(cfg.channel_mults)):
      for _ in range(cfg.num_res_blocks):
        h = self.down[i](h, emb, next(keys))
        if self.down_attn[i] is not None:
          h = self.down_attn[i](h)
          h = self._attend(self.down_cross[i], h, context, context_mask)
        skips.append(h)
        i += 1
      if level != len(cfg.channel_mults) - 1:
        h = self.downsample[level](h)
        skips.append(h)

    h = self.mid1(h, emb, next(keys))
    h = self.mid_attn(h)
    h = self._attend(self.mid_cross, h, context, context_mask)
    h = self.mid2(h, emb, next(keys))

    i = 0
    for up_index, level in enumerate(reversed(range(len(cfg.channel_mults)))):
      for _ in range(cfg.num_res_blocks + 1):
        h = self.up[i](jnp.concatenate([h, skips.pop()], axis=-1), emb,
                       next(keys))
        if self.up_attn[i] is not None:
          h = self.up_attn[i](h)
          h = self._attend(self.up_cross[i], h, context, context_mask)
        i += 1
      if level != 0:
        target = skips[-1].shape[1:3]
        h = self.upsample[up_index](h, target)
    h = self.conv_out(nnx.silu(self.norm_out(h)))
    if cfg.patch_size > 1:
      h = depth_to_space(h, cfg.patch_size)
    return h.astype(jnp.float32)
