"""Bijectors of normalizing flows: invertible maps with exact log-Jacobians.

Convention: `forward` is the normalizing direction, data -> latent, and
returns (z, log|det dz/dx|) per example ([B]); `inverse` maps back, z -> x,
and returns (x, log|det dx/dz|), which is minus the forward log-det at the
matching point. Every bijector acts on the last (channel) axis of an array
[B, ..., C]: images [B, H, W, C] or vectors [B, C] (2-D toy densities); the
axes in between are spatial and share the bijector's parameters.

`data_init(x)` lets a layer set its parameters from the first batch it sees
(actnorm's data-dependent initialization); the others ignore it.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np


class Fixed(nnx.Variable):
  """A constant of a bijector (a permutation, signs): saved, never trained."""


def sum_except_batch(x: jax.Array) -> jax.Array:
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def _num_positions(x: jax.Array) -> int:
  """How many positions (pixels) share a per-channel parameter."""
  return math.prod(x.shape[1:-1])


def _per_channel(v: jax.Array, ndim: int) -> jax.Array:
  return v.reshape((1,) * (ndim - 1) + (-1,))


def _batch_logdet(value: jax.Array, x: jax.Array) -> jax.Array:
  """A log-det that does not depend on the example, as a [B] vector."""
  return jnp.broadcast_to(value, (x.shape[0],))


class Bijector(nnx.Module):
  """Interface: an invertible layer."""

  def forward(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def inverse(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    raise NotImplementedError

  def data_init(self, x: jax.Array) -> None:
    del x


class ActNorm(Bijector):
  """z = (x + bias) * exp(log_scale) per channel (Glow, Kingma & Dhariwal 2018).

  `data_init` sets bias and scale so that the first batch leaves the layer with
  zero mean and unit variance per channel.
  """

  def __init__(self, channels: int):
    self.bias = nnx.Param(jnp.zeros((channels,)))
    self.log_scale = nnx.Param(jnp.zeros((channels,)))

  def data_init(self, x):
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    std = jnp.sqrt(jnp.mean((x - mean) ** 2, axis=axes))
    self.bias[...] = -mean.reshape(-1)
    self.log_scale[...] = -jnp.log(std + 1e-6)

  def forward(self, x):
    z = (x + _per_channel(self.bias[...], x.ndim)) * _per_channel(
        jnp.exp(self.log_scale[...]), x.ndim)
    return z, _batch_logdet(_num_positions(x) * jnp.sum(self.log_scale[...]),
                            x)

  def inverse(self, z):
    x = z * _per_channel(jnp.exp(-self.log_scale[...]), z.ndim) - _per_channel(
        self.bias[...], z.ndim)
    return x, _batch_logdet(
        -_num_positions(z) * jnp.sum(self.log_scale[...]), z)


class Invertible1x1Conv(Bijector):
  """z = W x at every position, W = P L (U + diag(sign * exp(log_s))) (Glow's
  LU parameterization): P a fixed permutation, L unit lower-triangular, U
  strictly upper-triangular; log|det W| = sum(log_s). Starts as a random
  rotation."""

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    q, _ = jnp.linalg.qr(jax.random.normal(rngs.params(),
                                           (channels, channels)))
    p, lower, upper = jax.scipy.linalg.lu(q)
    s = jnp.diag(upper)
    self.perm = Fixed(p)
    self.sign_s = Fixed(jnp.sign(s))
    self.lower = nnx.Param(jnp.tril(lower, -1))
    self.upper = nnx.Param(jnp.triu(upper, 1))
    self.log_s = nnx.Param(jnp.log(jnp.abs(s)))

  def weight(self) -> jax.Array:
    c = self.log_s.shape[0]
    eye = jnp.eye(c)
    lower = jnp.tril(self.lower[...], -1) + eye
    upper = jnp.triu(self.upper[...], 1) + jnp.diag(
        self.sign_s[...] * jnp.exp(self.log_s[...]))
    return self.perm[...] @ lower @ upper

  def forward(self, x):
    z = jnp.einsum("...c,dc->...d", x, self.weight())
    return z, _batch_logdet(_num_positions(x) * jnp.sum(self.log_s[...]), x)

  def inverse(self, z):
    x = jnp.einsum("...c,dc->...d", z, jnp.linalg.inv(self.weight()))
    return x, _batch_logdet(-_num_positions(z) * jnp.sum(self.log_s[...]), z)


def checkerboard_mask(spatial: tuple[int, ...], channels: int, parity: int
                      ) -> np.ndarray:
  """1 where (sum of coordinates + parity) is even: over pixels for images
  (shape [H, W, 1]), over features for vectors (shape [C]). A numpy constant:
  masks fix the structure of a layer, not its parameters."""
  if not spatial:
    return ((np.arange(channels) + parity) % 2 == 0).astype(np.float32)
  grids = np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij")
  return ((sum(grids) + parity) % 2 == 0).astype(np.float32)[..., None]


def channel_mask(channels: int, parity: int) -> np.ndarray:
  """1 on the first half of the channels (parity 0) or the second (1)."""
  first = (np.arange(channels) < channels // 2).astype(np.float32)
  return first if parity == 0 else 1.0 - first


def coupling_io(mask: np.ndarray, channels: int) -> tuple[int, int]:
  """(input, output) channels of the conditioner an `AffineCoupling` with
  this mask needs."""
  if mask.ndim > 1:  # pixels: the masked input and the mask; all channels
    return channels + 1, 2 * channels
  kept = int(np.sum(mask))
  return kept, 2 * (channels - kept)


def _channels(idx: tuple[int, ...]) -> slice | list[int]:
  """An index over the last axis: a slice when contiguous (a channel half),
  so reads and writes are slices rather than gathers and scatters."""
  if idx == tuple(range(idx[0], idx[-1] + 1)):
    return slice(idx[0], idx[-1] + 1)
  return list(idx)


class AffineCoupling(Bijector):
  """Affine coupling (RealNVP, Dinh et al. 2017): the kept part x_k passes
  unchanged, the rest becomes x * exp(log_s(x_k)) + t(x_k).

  `mask` (from `checkerboard_mask` / `channel_mask`) is 1 on the kept part:
  - [H, W, 1], a checkerboard over pixels: the conditioner sees x * mask and
    the mask itself as an extra channel, and returns (raw log-scale, shift)
    for every channel, used where the mask is 0;
  - [C], a subset of the channels (or features of a vector): the conditioner
    sees the kept channels only and returns (raw log-scale, shift) for the
    others, as in RealNVP's channel-wise and Glow's couplings.
  `coupling_io` gives the conditioner's channel counts. Scales: 'tanh' gives
  log_s = exp(rescale) * tanh(raw) (RealNVP), 'sigmoid' gives
  log_s = log sigmoid(raw + 2) (Glow). A zero-initialized last layer makes the
  layer start as the identity ('sigmoid' as a fixed ~0.88 scale).
  """

  def __init__(self, mask: np.ndarray, conditioner: nnx.Module, channels: int,
               scale: str = "tanh"):
    if scale not in ("tanh", "sigmoid"):
      raise ValueError(f"scale must be 'tanh' or 'sigmoid', got '{scale}'.")
    mask = np.asarray(mask)
    self.pixel_mask = mask.ndim > 1
    self.mask = Fixed(jnp.asarray(mask))
    if self.pixel_mask:
      self.kept = self.free = None
      transformed = channels
    else:
      self.kept = tuple(int(i) for i in np.flatnonzero(mask > 0))
      self.free = tuple(int(i) for i in np.flatnonzero(mask == 0))
      transformed = len(self.free)
    self.conditioner = conditioner
    self.scale = scale
    self.rescale = (nnx.Param(jnp.zeros((transformed,))) if scale == "tanh"
                    else None)

  def _log_scale(self, raw):
    if self.scale == "tanh":
      return _per_channel(jnp.exp(self.rescale[...]), raw.ndim) * jnp.tanh(raw)
    return jax.nn.log_sigmoid(raw + 2.0)

  def _pixel_params(self, x):
    """Full-size (log_s, shift), zero on the kept pixels."""
    mask = self.mask[...]
    mask = mask.reshape((1,) * (x.ndim - mask.ndim) + mask.shape)
    h = jnp.concatenate(
        [x * mask, jnp.broadcast_to(mask, x.shape[:-1] + (1,))], axis=-1)
    raw, shift = jnp.split(self.conditioner(h), 2, axis=-1)
    free = 1.0 - mask
    return self._log_scale(raw) * free, shift * free

  def _channel_params(self, x):
    """(log_s, shift) of the transformed channels only."""
    raw, shift = jnp.split(self.conditioner(x[..., _channels(self.kept)]), 2, axis=-1)
    return self._log_scale(raw), shift

  def forward(self, x):
    if self.pixel_mask:
      log_s, shift = self._pixel_params(x)
      return x * jnp.exp(log_s) + shift, sum_except_batch(log_s)
    log_s, shift = self._channel_params(x)
    free = _channels(self.free)
    z_free = x[..., free] * jnp.exp(log_s) + shift
    return x.at[..., free].set(z_free), sum_except_batch(log_s)

  def inverse(self, z):
    if self.pixel_mask:
      log_s, shift = self._pixel_params(z)
      return (z - shift) * jnp.exp(-log_s), -sum_except_batch(log_s)
    log_s, shift = self._channel_params(z)
    free = _channels(self.free)
    x_free = (z[..., free] - shift) * jnp.exp(-log_s)
    return z.at[..., free].set(x_free), -sum_except_batch(log_s)


def squeeze(x_BHWC: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, 4C]: each 2x2 patch becomes channels."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x_BHWC: jax.Array) -> jax.Array:
  """The inverse of `squeeze`."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h, w, 2, 2, c // 4)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c // 4)


class Squeeze(Bijector):
  """Space-to-depth by 2 (a permutation: log-det 0)."""

  def forward(self, x):
    return squeeze(x), jnp.zeros((x.shape[0],))

  def inverse(self, z):
    return unsqueeze(z), jnp.zeros((z.shape[0],))


class Logit(Bijector):
  """x in (0, 1) -> logit(alpha + (1 - 2 alpha) x) (RealNVP's preprocessing).

  alpha keeps the logit finite at the edges of [0, 1]; its Jacobian,
  (1 - 2 alpha) / (p (1 - p)) per dimension, is part of the likelihood.
  """

  def __init__(self, alpha: float):
    self.alpha = alpha

  def forward(self, x):
    p = self.alpha + (1.0 - 2.0 * self.alpha) * x
    z = jnp.log(p) - jnp.log1p(-p)
    logdet = math.log(1.0 - 2.0 * self.alpha) - jnp.log(p) - jnp.log1p(-p)
    return z, sum_except_batch(logdet)

  def inverse(self, z):
    p = jax.nn.sigmoid(z)
    x = (p - self.alpha) / (1.0 - 2.0 * self.alpha)
    logdet = jnp.log(p) + jnp.log1p(-p) - math.log(1.0 - 2.0 * self.alpha)
    return x, sum_except_batch(logdet)


class Shift(Bijector):
  """x -> x + offset (Glow centres [0, 1] data with offset -0.5); log-det 0."""

  def __init__(self, offset: float):
    self.offset = offset

  def forward(self, x):
    return x + self.offset, jnp.zeros((x.shape[0],))

  def inverse(self, z):
    return z - self.offset, jnp.zeros((z.shape[0],))


class GaussianSplitPrior(Bijector):
  """Glow's factored-out half with a learned prior N(mean(h), exp(log_std(h))),
  written as a bijector on the factored half z given the kept half h:
  z -> (z - mean(h)) * exp(-log_std(h)), so every latent it leaves is N(0, I).

  Acts on the channel concatenation [h, z] and changes only z.
  """

  def __init__(self, conditioner: nnx.Module, channels: int):
    self.conditioner = conditioner  # h [.., C - C//2] -> [.., 2 * (C//2)]
    self.keep = channels - channels // 2

  def _mean_log_std(self, h):
    mean, log_std = jnp.split(self.conditioner(h), 2, axis=-1)
    return mean, log_std

  def forward(self, x):
    h, z = x[..., :self.keep], x[..., self.keep:]
    mean, log_std = self._mean_log_std(h)
    z = (z - mean) * jnp.exp(-log_std)
    return jnp.concatenate([h, z], -1), -sum_except_batch(log_std)

  def inverse(self, z):
    h, e = z[..., :self.keep], z[..., self.keep:]
    mean, log_std = self._mean_log_std(h)
    x = e * jnp.exp(log_std) + mean
    return jnp.concatenate([h, x], -1), sum_except_batch(log_std)


class Chain(Bijector):
  """Bijectors applied in order (forward) and in reverse order (inverse)."""

  def __init__(self, layers: list[Bijector]):
    self.layers = nnx.List(layers)

  def forward(self, x, init: bool = False):
    logdet = jnp.zeros((x.shape[0],))
    for layer in self.layers:
      if init:
        layer.data_init(x)
      x, ld = layer.forward(x)
      logdet = logdet + ld
    return x, logdet

  def inverse(self, z):
    logdet = jnp.zeros((z.shape[0],))
    for layer in reversed(list(self.layers)):
      z, ld = layer.inverse(z)
      logdet = logdet + ld
    return z, logdet

  def data_init(self, x):
    self.forward(x, init=True)
