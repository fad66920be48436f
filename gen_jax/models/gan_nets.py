"""Generators and discriminators (critics) for the GAN family.

Three architectures, chosen by `GANNetConfig.arch`:

- 'dcgan' (Radford et al., 2016): a dense layer to a small feature map, then
  2x upsamplings with batch norm and ReLU to a tanh image; the discriminator
  mirrors it with stride-2 4x4 convs and LeakyReLU(0.2). Upsampling is a
  sub-pixel conv (3x3 conv to 4x the channels, then depth-to-space), which is
  as expressive as the paper's stride-2 transposed conv and much cheaper to
  differentiate on CPU.
- 'resnet': the ResNet generator and critic of the WGAN-GP CIFAR-10
  experiments (Gulrajani et al., 2017), also SNGAN's (Miyato et al., 2018):
  three up-sampling residual blocks (BN-ReLU-up-conv-BN-ReLU-conv, 1x1-conv
  shortcut) and a critic of one "optimized" down block, one down block and two
  plain blocks, ReLU, global sum pooling, dense. Images need a height and
  width that are multiples of 8 (the generator starts at H/8 x W/8). With
  `d_norm` 'batch' or 'layer', every critic block but the first normalizes
  before each of its ReLUs, as the WGAN-GP code's optional critic
  normalization does; `g_norm='none'` drops the generator's batch norms.
- 'mlp': fully connected nets for 2-D data (the mode-collapse benchmark):
  ReLU hidden layers, optional batch norm in the generator and maxout units in
  the discriminator.

Conditioning (`num_classes > 0`): conditional batch norm in the generator and
a projection discriminator (Miyato & Koyama, 2018),
D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.
Discriminator layers are spectrally normalized when `spectral_norm` is set.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import layers


@dataclasses.dataclass(frozen=True)
class GANNetConfig:
  arch: str = "dcgan"  # 'dcgan' | 'resnet' | 'mlp'
  data_shape: tuple[int, ...] = (28, 28, 1)  # image HWC, or (D,) for points
  latent_dim: int = 100
  # dcgan: generator channels from the first (smallest) feature map up; one 2x
  # upsampling per entry. resnet: the width of every block.
  g_channels: tuple[int, ...] = (128, 64)
  # dcgan: one stride-2 conv per entry. resnet: the width of every block.
  d_channels: tuple[int, ...] = (64, 128)
  g_hidden: tuple[int, ...] = (128, 128)  # mlp
  d_hidden: tuple[int, ...] = (128, 128)  # mlp
  maxout: int = 1  # mlp discriminator: pieces per maxout unit (1 = ReLU)
  g_norm: str = "batch"  # 'batch' | 'none'
  d_norm: str = "none"  # 'batch' | 'layer' | 'none'
  spectral_norm: bool = False  # discriminator weights
  num_classes: int = 0
  dtype: str = "float32"


G_NORMS = ("batch", "none")
D_NORMS = ("batch", "layer", "none")


def _check(cfg: GANNetConfig) -> None:
  """Raises a one-line ValueError naming the first unsupported setting."""
  if cfg.arch not in ("dcgan", "resnet", "mlp"):
    raise ValueError(f"arch '{cfg.arch}' is not one of dcgan, resnet, mlp.")
  if cfg.arch == "mlp" and len(cfg.data_shape) != 1:
    raise ValueError(f"arch 'mlp' takes vector data, not {cfg.data_shape}.")
  if cfg.arch != "mlp" and len(cfg.data_shape) != 3:
    raise ValueError(f"arch '{cfg.arch}' takes images, not {cfg.data_shape}.")
  if cfg.g_norm not in G_NORMS:
    raise ValueError(f"g_norm '{cfg.g_norm}' is not one of "
                     f"{', '.join(G_NORMS)}.")
  if cfg.d_norm not in D_NORMS:
    raise ValueError(f"d_norm '{cfg.d_norm}' is not one of "
                     f"{', '.join(D_NORMS)}.")
  if cfg.arch == "mlp" and cfg.d_norm != "none":
    raise ValueError(f"d_norm '{cfg.d_norm}': the 'mlp' discriminator has no "
                     "normalization layers; use 'none'.")
  if cfg.arch == "resnet":
    h, w = cfg.data_shape[:2]
    if h % 8 or w % 8:
      raise ValueError(
          f"arch 'resnet' needs an image height and width that are multiples "
          f"of 8 (8, 16, 24, 32, ...: three 2x upsamplings from H/8 x W/8), "
          f"not {h}x{w}.")


class _Norm(nnx.Module):
  """The discriminator's per-layer normalization ('batch' | 'layer' | 'none')."""

  def __init__(self, kind: str, features: int, *, rngs: nnx.Rngs):
    self.kind = kind
    if kind == "batch":
      self.norm = layers.BatchNorm(features, rngs=rngs)
    elif kind == "layer":  # over H, W, C: no mixing across examples (GP-safe)
      self.norm = nnx.LayerNorm(features, reduction_axes=(-3, -2, -1),
                                feature_axes=-1, rngs=rngs)
    elif kind == "none":
      self.norm = None
    else:
      raise ValueError(f"norm '{kind}' is not one of batch, layer, none.")

  def __call__(self, x):
    return x if self.norm is None else self.norm(x)


# --- generators -------------------------------------------------------------


def _g_norm(cfg: GANNetConfig, features: int, rngs: nnx.Rngs
            ) -> layers.BatchNorm | None:
  """A generator batch norm, or None with g_norm='none'."""
  if cfg.g_norm == "batch":
    return layers.BatchNorm(features, cfg.num_classes, rngs=rngs)
  return None


def _apply(norm: layers.BatchNorm | None, x, y_B):
  return x if norm is None else norm(x, y_B)


class DCGANGenerator(nnx.Module):

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    h, w, c_out = cfg.data_shape
    n_up = len(cfg.g_channels)
    if h % 2**n_up or w % 2**n_up:
      raise ValueError(f"image {h}x{w} is not divisible by 2^{n_up} "
                       f"(one upsampling per g_channels entry).")
    self.start = (h // 2**n_up, w // 2**n_up, cfg.g_channels[0])
    # A bias just before batch norm is redundant (its gradient is rounding
    # noise, which Adam would amplify): layers feeding a norm have none.
    bn = cfg.g_norm == "batch"
    self.dense = layers.Dense(cfg.latent_dim, h * w // 4**n_up *
                              cfg.g_channels[0], use_bias=not bn,
                              dtype=cfg.dtype, rngs=rngs)
    self.norm0 = _g_norm(cfg, cfg.g_channels[0], rngs)
    outs = list(cfg.g_channels[1:]) + [c_out]
    self.ups = nnx.List()
    self.norms = nnx.List()
    c_in = cfg.g_channels[0]
    for i, c in enumerate(outs):
      last = i == len(outs) - 1
      self.ups.append(layers.Conv(c_in, 4 * c, 3, use_bias=last or not bn,
                                  dtype=cfg.dtype, rngs=rngs))
      if not last:
        self.norms.append(_g_norm(cfg, c, rngs))
      c_in = c

  def __call__(self, z_BL, y_B=None):
    h = self.dense(z_BL).reshape((z_BL.shape[0],) + self.start)
    h = nnx.relu(_apply(self.norm0, h, y_B))
    for i, up in enumerate(self.ups):
      h = layers.depth_to_space(up(h))
      if i < len(self.norms):
        h = nnx.relu(_apply(self.norms[i], h, y_B))
    return jnp.tanh(h.astype(jnp.float32))


class _ResBlockUp(nnx.Module):
  """BN-ReLU-up2-conv3-BN-ReLU-conv3, shortcut up2-conv1 (without the BNs
  when g_norm='none'). With batch norm every conv feeds one (the next, or the
  next block's, through the residual sum), so none has a bias."""

  def __init__(self, c_in, c_out, cfg: GANNetConfig, *, rngs):
    bias, dt = cfg.g_norm != "batch", cfg.dtype
    self.bn1 = _g_norm(cfg, c_in, rngs)
    self.conv1 = layers.Conv(c_in, c_out, 3, use_bias=bias, dtype=dt,
                             rngs=rngs)
    self.bn2 = _g_norm(cfg, c_out, rngs)
    self.conv2 = layers.Conv(c_out, c_out, 3, use_bias=bias, dtype=dt,
                             rngs=rngs)
    self.skip = layers.Conv(c_in, c_out, 1, use_bias=bias, dtype=dt,
                            rngs=rngs)

  def __call__(self, x, y_B=None):
    h = layers.upsample_nearest(nnx.relu(_apply(self.bn1, x, y_B)))
    h = self.conv2(nnx.relu(_apply(self.bn2, self.conv1(h), y_B)))
    return h + self.skip(layers.upsample_nearest(x))


class ResNetGenerator(nnx.Module):

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    h, w, c_out = cfg.data_shape
    if h % 8 or w % 8:
      raise ValueError(f"arch 'resnet' needs an image height and width that "
                       f"are multiples of 8, not {h}x{w}.")
    ch = cfg.g_channels[0]
    self.start = (h // 8, w // 8, ch)
    self.dense = layers.Dense(cfg.latent_dim, h * w // 64 * ch,
                              use_bias=cfg.g_norm != "batch", dtype=cfg.dtype,
                              rngs=rngs)
    self.blocks = nnx.List([_ResBlockUp(ch, ch, cfg, rngs=rngs)
                            for _ in range(3)])
    self.bn = _g_norm(cfg, ch, rngs)
    self.out = layers.Conv(ch, c_out, 3, dtype=cfg.dtype, rngs=rngs)

  def __call__(self, z_BL, y_B=None):
    h = self.dense(z_BL).reshape((z_BL.shape[0],) + self.start)
    for block in self.blocks:
      h = block(h, y_B)
    h = self.out(nnx.relu(_apply(self.bn, h, y_B)))
    return jnp.tanh(h.astype(jnp.float32))


class MLPGenerator(nnx.Module):

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    self.dense = nnx.List()
    self.norms = nnx.List()
    d_in = cfg.latent_dim
    bn = cfg.g_norm == "batch"
    for d in cfg.g_hidden:
      self.dense.append(layers.Dense(d_in, d, use_bias=not bn,
                                     dtype=cfg.dtype, rngs=rngs))
      self.norms.append(layers.BatchNorm(d, cfg.num_classes, rngs=rngs)
                        if cfg.g_norm == "batch" else None)
      d_in = d
    self.out = layers.Dense(d_in, cfg.data_shape[0], dtype=cfg.dtype,
                            rngs=rngs)

  def __call__(self, z_BL, y_B=None):
    h = z_BL
    for dense, norm in zip(self.dense, self.norms):
      h = dense(h)
      h = nnx.relu(norm(h, y_B) if norm is not None else h)
    return self.out(h).astype(jnp.float32)


# --- discriminators ---------------------------------------------------------


class _Projection(nnx.Module):
  """psi(phi) + <embed(y), phi>: the output layer of a (conditional) critic."""

  def __init__(self, features, cfg: GANNetConfig, *, rngs):
    self.linear = layers.Dense(features, 1, spectral_norm=cfg.spectral_norm,
                               rngs=rngs)
    self.embed = (layers.Embed(cfg.num_classes, features,
                               spectral_norm=cfg.spectral_norm, rngs=rngs)
                  if cfg.num_classes else None)

  def __call__(self, phi_BF, y_B=None):
    phi = phi_BF.astype(jnp.float32)
    out = self.linear(phi)[:, 0]
    if self.embed is not None:
      out = out + jnp.sum(self.embed(y_B) * phi, axis=-1)
    return out


class DCGANDiscriminator(nnx.Module):

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    h, w, c_in = cfg.data_shape
    self.convs = nnx.List()
    self.norms = nnx.List()
    for i, c in enumerate(cfg.d_channels):
      norm = "none" if i == 0 else cfg.d_norm  # none on the first (DCGAN)
      self.convs.append(layers.Conv(c_in, c, 4, 2, use_bias=norm != "batch",
                                    spectral_norm=cfg.spectral_norm,
                                    dtype=cfg.dtype, rngs=rngs))
      self.norms.append(_Norm(norm, c, rngs=rngs))
      c_in = c
      h, w = -(-h // 2), -(-w // 2)
    self.head = _Projection(h * w * c_in, cfg, rngs=rngs)

  def __call__(self, x_BHWC, y_B=None):
    h = x_BHWC
    for conv, norm in zip(self.convs, self.norms):
      h = nnx.leaky_relu(norm(conv(h)), 0.2)
    return self.head(h.reshape(h.shape[0], -1), y_B)


class _ResBlockDown(nnx.Module):
  """[norm-ReLU]-conv3-[norm]-ReLU-conv3[-pool], shortcut [conv1-pool]
  (identity if the block neither pools nor changes width). `first`: the
  "optimized" first block (no leading ReLU; pool before the shortcut's 1x1
  conv). Norms (`cfg.d_norm`) are in every block but the first; `bias_out`:
  whether conv2 and the shortcut conv have a bias (not when the block's output
  feeds the next block's batch norm)."""

  def __init__(self, c_in, c_out, down, first, cfg: GANNetConfig, *, rngs,
               bias_out=True):
    sn, dt = cfg.spectral_norm, cfg.dtype
    norm = "none" if first else cfg.d_norm
    self.down, self.first = down, first
    self.norm1 = _Norm(norm, c_in, rngs=rngs)
    self.conv1 = layers.Conv(c_in, c_out, 3, spectral_norm=sn,
                             use_bias=norm != "batch", dtype=dt, rngs=rngs)
    self.norm2 = _Norm(norm, c_out, rngs=rngs)
    self.conv2 = layers.Conv(c_out, c_out, 3, spectral_norm=sn,
                             use_bias=bias_out, dtype=dt, rngs=rngs)
    self.skip = (layers.Conv(c_in, c_out, 1, spectral_norm=sn,
                             use_bias=bias_out, dtype=dt, rngs=rngs)
                 if down or c_in != c_out else None)

  def __call__(self, x):
    h = x if self.first else nnx.relu(self.norm1(x))
    h = self.conv2(nnx.relu(self.norm2(self.conv1(h))))
    if self.down:
      h = layers.avg_pool(h)
    s = x
    if self.first:
      s = self.skip(layers.avg_pool(s))
    elif self.skip is not None:
      s = self.skip(s)
      s = layers.avg_pool(s) if self.down else s
    return h + s


class ResNetDiscriminator(nnx.Module):

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    c_in = cfg.data_shape[-1]
    ch = cfg.d_channels[0]
    # Blocks 1-3 start with a norm: with batch norm, the convs feeding them
    # need no bias.
    feeds_bn = cfg.d_norm == "batch"
    self.blocks = nnx.List([
        _ResBlockDown(c_in, ch, True, True, cfg, rngs=rngs,
                      bias_out=not feeds_bn),
        _ResBlockDown(ch, ch, True, False, cfg, rngs=rngs,
                      bias_out=not feeds_bn),
        _ResBlockDown(ch, ch, False, False, cfg, rngs=rngs,
                      bias_out=not feeds_bn),
        _ResBlockDown(ch, ch, False, False, cfg, rngs=rngs),
    ])
    self.head = _Projection(ch, cfg, rngs=rngs)

  def __call__(self, x_BHWC, y_B=None):
    h = x_BHWC
    for block in self.blocks:
      h = block(h)
    return self.head(jnp.sum(nnx.relu(h), axis=(1, 2)), y_B)


class MLPDiscriminator(nnx.Module):

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    self.maxout = cfg.maxout
    self.dense = nnx.List()
    d_in = cfg.data_shape[0]
    for d in cfg.d_hidden:
      self.dense.append(layers.Dense(d_in, d * cfg.maxout,
                                     spectral_norm=cfg.spectral_norm,
                                     dtype=cfg.dtype, rngs=rngs))
      d_in = d
    self.head = _Projection(d_in, cfg, rngs=rngs)

  def __call__(self, x_BD, y_B=None):
    h = x_BD
    for dense in self.dense:
      h = dense(h)
      if self.maxout > 1:
        h = jnp.max(h.reshape(h.shape[0], -1, self.maxout), axis=-1)
      else:
        h = nnx.relu(h)
    return self.head(h, y_B)


_GENERATORS = {"dcgan": DCGANGenerator, "resnet": ResNetGenerator,
               "mlp": MLPGenerator}
_DISCRIMINATORS = {"dcgan": DCGANDiscriminator, "resnet": ResNetDiscriminator,
                   "mlp": MLPDiscriminator}


class GAN(nnx.Module):
  """The generator and the discriminator, as one module for building and
  checkpointing; the family updates `generator` and `discriminator` apart."""

  def __init__(self, cfg: GANNetConfig, *, rngs: nnx.Rngs):
    _check(cfg)
    self.generator = _GENERATORS[cfg.arch](cfg, rngs=rngs)
    self.discriminator = _DISCRIMINATORS[cfg.arch](cfg, rngs=rngs)


def num_params(module: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
