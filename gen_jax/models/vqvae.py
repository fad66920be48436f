"""VQ-VAE (van den Oord et al. 2017): a convolutional encoder, a codebook of
K vectors that every encoder output snaps to, and a decoder, in Flax NNX.

The quantizer passes gradients straight through (z_e + sg(z_q - z_e)) and
returns the paper's two auxiliary losses: the codebook loss
||sg(z_e) - z_q||^2 (which moves the codes when they are trained by
gradient) and the commitment loss ||z_e - sg(z_q)||^2 (which keeps the
encoder near its codes). With `ema=True` the codes are instead the
exponential moving averages of the encoder outputs assigned to them (the
paper's appendix A.1, with Laplace smoothing of the counts); they are then
not parameters but `Codebook` variables, updated in the training forward
pass. Dead-code restarts (Dhariwal et al. 2020, Jukebox), with EMA codes: a
code whose average use falls below `restart_threshold` assignments per step
is moved to a random encoder output of the batch.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import conv as conv_lib
from gen_jax.models import layers


@dataclasses.dataclass(frozen=True)
class VQVAEConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)
  channels: tuple[int, ...] = (32, 64)  # one stride-2 convolution per entry
  num_res_blocks: int = 2  # at the lowest resolution, encoder and decoder
  codebook_size: int = 64  # K
  code_dim: int = 16  # D
  ema: bool = True  # codes by EMA of their assignments, not by gradient
  ema_decay: float = 0.99  # gamma
  restart_threshold: float = 1.0  # assignments per step; 0: no restarts
  dtype: str = "float32"  # compute dtype; parameters stay float32

  @property
  def latent_shape(self) -> tuple[int, int, int]:
    h, w, _ = self.image_shape
    for _ in self.channels:
      h, w = -(-h // 2), -(-w // 2)
    return h, w, self.code_dim


class Codebook(nnx.Variable):
  """The codebook and its running statistics when codes are EMA-updated
  (and the use counts of the restarts): state, not parameters."""


class VectorQuantizer(nnx.Module):
  """z_e [..., D] -> the nearest of K codes, with straight-through
  gradients (see the module docstring)."""

  def __init__(self, cfg: VQVAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    k, d = cfg.codebook_size, cfg.code_dim
    init = jax.random.uniform(rngs.params(), (k, d), minval=-1.0 / k,
                              maxval=1.0 / k)
    if cfg.ema:
      self.codebook = Codebook(init)
      self.ema_counts = Codebook(jnp.ones((k,)))  # N_k
      self.ema_sums = Codebook(init)  # m_k = codebook_k * N_k
    else:
      self.codebook = nnx.Param(init)
    self.usage = Codebook(jnp.ones((k,)))  # assignments per step, EMA

  def indices(self, z_ND: jax.Array) -> jax.Array:
    """The nearest code of each row [N] (squared Euclidean distance)."""
    e_KD = self.codebook[...]
    dist_NK = (jnp.sum(z_ND**2, -1, keepdims=True) - 2 * z_ND @ e_KD.T
               + jnp.sum(e_KD**2, -1)[None])
    return jnp.argmin(dist_NK, axis=-1).astype(jnp.int32)

  def lookup(self, idx: jax.Array) -> jax.Array:
    """Code indices [...] -> code vectors [..., D]."""
    return self.codebook[...][idx]

  def __call__(self, z_BHWD: jax.Array, key: jax.Array | None = None,
               training: bool = False):
    """-> (straight-through z_q, indices [B, H, W], {'codebook',
    'commitment'} losses (means over elements)).

    With `training`, EMA codes and use counts are updated in place from
    this batch (the batch's statistics are global over the devices) and dead
    codes restarted from `key`.
    """
    z = z_BHWD.astype(jnp.float32)
    flat = z.reshape(-1, z.shape[-1])
    idx = self.indices(flat)
    z_q = self.lookup(idx).reshape(z.shape)
    losses = {"codebook": jnp.mean((jax.lax.stop_gradient(z) - z_q)**2),
              "commitment": jnp.mean((z - jax.lax.stop_gradient(z_q))**2)}
    if training:
      self.update(jax.lax.stop_gradient(flat), idx, key)
    z_st = z + jax.lax.stop_gradient(z_q - z)
    return z_st, idx.reshape(z.shape[:-1]), losses

  def update(self, z_ND: jax.Array, idx_N: jax.Array,
             key: jax.Array | None) -> None:
    """The EMA codebook step (when `ema`) and the dead-code restarts."""
    cfg = self.cfg
    k = cfg.codebook_size
    onehot_NK = jax.nn.one_hot(idx_N, k, dtype=jnp.float32)
    counts_K = jnp.sum(onehot_NK, 0)
    g = cfg.ema_decay
    self.usage[...] = g * self.usage[...] + (1 - g) * counts_K
    if cfg.ema:
      n_K = g * self.ema_counts[...] + (1 - g) * counts_K
      m_KD = g * self.ema_sums[...] + (1 - g) * onehot_NK.T @ z_ND
      total = jnp.sum(n_K)
      eps = 1e-5  # Laplace smoothing, so an unused code never divides by 0
      smoothed_K = (n_K + eps) / (total + k * eps) * total
      self.ema_counts[...] = n_K
      self.ema_sums[...] = m_KD
      self.codebook[...] = m_KD / smoothed_K[:, None]
    if cfg.ema and cfg.restart_threshold > 0 and key is not None:
      self.restart(z_ND, key)

  def restart(self, z_ND: jax.Array, key: jax.Array) -> None:
    """Moves each code used less than `restart_threshold` times per step
    (on average) to a random encoder output of the batch, with the use of
    an average code, so it has time to be chosen."""
    cfg = self.cfg
    k, n = cfg.codebook_size, z_ND.shape[0]
    dead_K = self.usage[...] < cfg.restart_threshold
    picks = z_ND[jax.random.randint(key, (k,), 0, n)]
    self.codebook[...] = jnp.where(dead_K[:, None], picks, self.codebook[...])
    self.usage[...] = jnp.where(dead_K, n / k, self.usage[...])
    self.ema_counts[...] = jnp.where(dead_K, 1.0, self.ema_counts[...])
    self.ema_sums[...] = jnp.where(dead_K[:, None], picks, self.ema_sums[...])


class ResBlock(nnx.Module):
  """x + conv1x1(relu(conv3x3(relu(x)))), the paper's residual block."""

  def __init__(self, channels: int, dtype, *, rngs: nnx.Rngs):
    self.conv1 = conv_lib.Conv(channels, channels, (3, 3), dtype=dtype,
                               rngs=rngs)
    self.conv2 = conv_lib.Conv(channels, channels, (1, 1), dtype=dtype,
                               rngs=rngs)

  def __call__(self, x):
    return x + self.conv2(nnx.relu(self.conv1(nnx.relu(x))))


class Encoder(nnx.Module):
  """[B, H, W, C] in [-1, 1] -> z_e [B, H', W', D] (stride 2 per entry of
  `channels`, then residual blocks, then a 1x1 projection to D)."""

  def __init__(self, cfg: VQVAEConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    c_in = cfg.image_shape[-1]
    self.downs = nnx.List()
    for c_out in cfg.channels:
      self.downs.append(conv_lib.Conv(c_in, c_out, (4, 4), strides=2,
                                      dtype=dtype, rngs=rngs))
      c_in = c_out
    self.blocks = nnx.List([ResBlock(c_in, dtype, rngs=rngs)
                            for _ in range(cfg.num_res_blocks)])
    self.out = conv_lib.Conv(c_in, cfg.code_dim, (1, 1), dtype=dtype,
                             rngs=rngs)

  def __call__(self, x_BHWC):
    h = x_BHWC
    for i, down in enumerate(self.downs):
      h = down(h)
      h = nnx.relu(h) if i < len(self.downs) - 1 else h
    for block in self.blocks:
      h = block(h)
    return self.out(nnx.relu(h)).astype(jnp.float32)


class Decoder(nnx.Module):
  """z_q [B, H', W', D] -> the image's mean [B, H, W, C] in [-1, 1]
  (residual blocks, then sub-pixel upsampling mirroring the encoder)."""

  def __init__(self, cfg: VQVAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.dtype)
    c = cfg.channels[-1]
    self.inp = conv_lib.Conv(cfg.code_dim, c, (3, 3), dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([ResBlock(c, dtype, rngs=rngs)
                            for _ in range(cfg.num_res_blocks)])
    self.ups = nnx.List()
    outs = list(reversed(cfg.channels))[1:] + [cfg.channels[0]]
    for c_out in outs:
      self.ups.append(conv_lib.Conv(c, 4 * c_out, (3, 3), dtype=dtype,
                                    rngs=rngs))
      c = c_out
    self.out = conv_lib.Conv(c, cfg.image_shape[-1], (3, 3), dtype=dtype,
                             rngs=rngs)

  def __call__(self, z_BHWD):
    h = self.inp(z_BHWD)
    for block in self.blocks:
      h = block(h)
    h = nnx.relu(h)
    for up in self.ups:
      h = nnx.relu(layers.depth_to_space(up(h)))
    height, width, _ = self.cfg.image_shape
    return self.out(h[:, :height, :width]).astype(jnp.float32)


class VQVAE(nnx.Module):
  """Encoder, quantizer, decoder, and the log-scale of the decoder's
  Gaussian (for the likelihood bound; trained on stop-gradient residuals,
  so it never changes what the decoder learns)."""

  def __init__(self, cfg: VQVAEConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.quantizer = VectorQuantizer(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)
    self.log_scale = nnx.Param(jnp.zeros(()))

  def encode(self, x_BHWC: jax.Array) -> jax.Array:
    """Images in [-1, 1] -> code indices [B, H', W']."""
    z = self.encoder(x_BHWC)
    return self.quantizer.indices(z.reshape(-1, z.shape[-1])).reshape(
        z.shape[:-1])

  def decode_indices(self, idx_BHW: jax.Array) -> jax.Array:
    return self.decoder(self.quantizer.lookup(idx_BHW))

  def decode_latents(self, z_BHWD: jax.Array) -> jax.Array:
    """Continuous latents -> images, through the quantizer (as latent
    diffusion's VQ-regularized autoencoders decode)."""
    z_q, _, _ = self.quantizer(z_BHWD)
    return self.decoder(z_q)
