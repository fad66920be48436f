"""Layers the GAN networks share: spectrally normalized dense/conv/embedding
layers and batch normalization (optionally class-conditional) that normalizes
with its batch's statistics in training and with given ("standing") statistics
at sampling time.

Spectral normalization (Miyato et al., 2018) divides a weight by an estimate of
its largest singular value, sigma(W) ~ u^T W v, refined by one power iteration
per forward pass from the vector `u` kept in the model state (a
`SpectralState`, not a parameter: it is saved in checkpoints, never trained).
The weight is viewed as a matrix [fan_in, out] (a conv kernel flattened over
its spatial and input axes), as the paper does.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import conv as conv_lib
from gen_jax.models import initializers


class SpectralState(nnx.Variable):
  """The power-iteration vector of a spectrally normalized weight."""


def _per_feature(v: jax.Array, ndim: int) -> jax.Array:
  """A [C] vector shaped to broadcast over the last axis of an ndim array."""
  return v.reshape((1,) * (ndim - 1) + (-1,))


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x), eps))


def power_iteration(w_IO: jax.Array, u_O: jax.Array, num_iters: int = 1
                    ) -> tuple[jax.Array, jax.Array]:
  """Refines the top right-singular vector estimate `u` of `w` [I, O].

  Returns (sigma, u): sigma = v^T w u with v = normalize(w u), both vectors
  held constant for the gradient (the paper's estimator).
  """
  u = jax.lax.stop_gradient(u_O)
  w = jax.lax.stop_gradient(w_IO)
  for _ in range(num_iters):
    v = _l2_normalize(w @ u)
    u = _l2_normalize(w.T @ v)
  v = _l2_normalize(w @ u)
  sigma = v @ w_IO @ u
  return sigma, u


class SpectralNorm(nnx.Module):
  """Holds `u` for one weight; calling it returns the normalized weight and
  advances `u` by `num_iters` power iterations."""

  def __init__(self, num_outputs: int, *, num_iters: int = 1,
               rngs: nnx.Rngs):
    self.num_iters = num_iters
    self.u = SpectralState(_l2_normalize(
        jax.random.normal(rngs.params(), (num_outputs,))))

  def sigma(self, weight: jax.Array) -> jax.Array:
    """The current estimate of the largest singular value (no update)."""
    sigma, _ = power_iteration(weight.reshape(-1, weight.shape[-1]),
                               self.u[...], 0)
    return sigma

  def __call__(self, weight: jax.Array) -> jax.Array:
    sigma, u = power_iteration(weight.reshape(-1, weight.shape[-1]),
                               self.u[...], self.num_iters)
    self.u[...] = u
    return weight / sigma


class Dense(nnx.Module):
  """x @ W + b, W optionally spectrally normalized."""

  def __init__(self, in_features: int, out_features: int, *,
               spectral_norm: bool = False, use_bias: bool = True,
               dtype: str = "float32", rngs: nnx.Rngs):
    self.dtype = jnp.dtype(dtype)
    self.kernel = nnx.Param(nnx.initializers.lecun_normal()(
        rngs.params(), (in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
    self.sn = (SpectralNorm(out_features, rngs=rngs) if spectral_norm
               else None)

  def weight(self) -> jax.Array:
    w = self.kernel[...]
    return self.sn(w) if self.sn is not None else w

  def __call__(self, x: jax.Array) -> jax.Array:
    y = x.astype(self.dtype) @ self.weight().astype(self.dtype)
    if self.bias is not None:
      y = y + _per_feature(self.bias[...].astype(self.dtype), y.ndim)
    return y


class Conv(nnx.Module):
  """2-D convolution (NHWC, SAME padding), kernel optionally spectrally
  normalized."""

  def __init__(self, in_features: int, out_features: int,
               kernel_size: int = 3, stride: int = 1, *,
               spectral_norm: bool = False, use_bias: bool = True,
               dtype: str = "float32", rngs: nnx.Rngs):
    self.dtype = jnp.dtype(dtype)
    self.stride = stride
    self.kernel = nnx.Param(initializers.conv_kernel_init(
        rngs.params(), (kernel_size, kernel_size, in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
    self.sn = (SpectralNorm(out_features, rngs=rngs) if spectral_norm
               else None)

  def weight(self) -> jax.Array:
    w = self.kernel[...]
    return self.sn(w) if self.sn is not None else w

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    y = conv_lib.conv2d(x_BHWC.astype(self.dtype),
                        self.weight().astype(self.dtype),
                        (self.stride, self.stride), "SAME")
    if self.bias is not None:
      y = y + _per_feature(self.bias[...].astype(self.dtype), y.ndim)
    return y


class Embed(nnx.Module):
  """A class embedding table [K, D], optionally spectrally normalized (the
  projection discriminator's)."""

  def __init__(self, num_classes: int, features: int, *,
               spectral_norm: bool = False, rngs: nnx.Rngs):
    self.table = nnx.Param(jax.random.normal(
        rngs.params(), (num_classes, features)) / math.sqrt(features))
    self.sn = SpectralNorm(features, rngs=rngs) if spectral_norm else None

  def __call__(self, y_B: jax.Array) -> jax.Array:
    table = self.table[...]
    if self.sn is not None:
      table = self.sn(table)
    return table[y_B]


class BatchStats(nnx.Variable):
  """A per-feature statistic [C] of a `BatchNorm`'s input (its mean or
  variance), recorded from a batch or given to normalize with. It exists only
  on a sampling-time copy of a network, never in its state or checkpoints."""


class BatchNorm(nnx.Module):
  """Batch normalization with three modes (`self.mode`):

  - 'batch' (training, the default): normalizes with the statistics of the
    batch at hand. Statistics run over every axis but the last (across devices
    too when the batch is sharded: it is one global batch).
  - 'record': the same, and keeps the batch's mean and variance [C] as
    `BatchStats` variables `self.mean` and `self.var`.
  - 'fixed': normalizes with `self.mean` and `self.var` (set beforehand), so
    each example's output depends on that example alone.

  There are no running averages: GAN generators sample with an EMA of their
  weights, for which statistics gathered with the raw weights would be wrong.
  `record_batch_stats` and `use_batch_stats` drive the two sampling modes on a
  copy of a network. With `num_classes > 0` the scale and offset are per class
  (conditional batch norm, the class input of a conditional generator).
  """

  def __init__(self, features: int, num_classes: int = 0, *,
               eps: float = 1e-5, rngs: nnx.Rngs):
    del rngs
    self.eps = eps
    shape = (num_classes, features) if num_classes else (features,)
    self.scale = nnx.Param(jnp.ones(shape))
    self.offset = nnx.Param(jnp.zeros(shape))
    self.conditional = bool(num_classes)
    self.mode = "batch"

  def __call__(self, x: jax.Array, y_B: jax.Array | None = None) -> jax.Array:
    xf = x.astype(jnp.float32)
    if self.mode == "fixed":
      mean_C, var_C = self.mean[...], self.var[...]
    else:
      axes = tuple(range(x.ndim - 1))
      mean_C = jnp.mean(xf, axes)
      var_C = jnp.mean(jnp.square(xf - _per_feature(mean_C, x.ndim)), axes)
      if self.mode == "record":
        # nnx.data: the attributes hold Variables on this copy only.
        self.mean = nnx.data(BatchStats(mean_C))
        self.var = nnx.data(BatchStats(var_C))
      elif self.mode != "batch":
        raise ValueError(f"BatchNorm mode '{self.mode}' is not one of batch, "
                         "record, fixed.")
    h = ((xf - _per_feature(mean_C, x.ndim))
         * _per_feature(jax.lax.rsqrt(var_C + self.eps), x.ndim))
    scale, offset = self.scale[...], self.offset[...]
    if self.conditional:  # [B, C] -> [B, 1, ..., 1, C]
      shape = (-1,) + (1,) * (x.ndim - 2) + (scale.shape[-1],)
      scale, offset = scale[y_B].reshape(shape), offset[y_B].reshape(shape)
    else:
      scale, offset = _per_feature(scale, x.ndim), _per_feature(offset, x.ndim)
    return (h * scale + offset).astype(x.dtype)


BatchStatsDict = dict[str, tuple[jax.Array, jax.Array]]


def batch_norms(module: nnx.Module) -> dict[str, BatchNorm]:
  """Every `BatchNorm` in `module`, keyed by its path ('blocks/0/bn1')."""
  return {"/".join(map(str, path)): m for path, m in nnx.iter_modules(module)
          if isinstance(m, BatchNorm)}


def record_batch_stats(module: nnx.Module, *args) -> BatchStatsDict:
  """Runs `module(*args)` with batch statistics and returns each batch norm's
  (mean [C], variance [C]) of that batch, keyed as `batch_norms` keys them.

  Leaves `module`'s batch norms in 'record' mode: call it on a copy (e.g.
  `nnx.merge(..., copy=True)` inside a jitted function). A batch norm called
  more than once per pass records its last call.
  """
  norms = batch_norms(module)
  for bn in norms.values():
    bn.mode = "record"
  module(*args)
  return {name: (bn.mean[...], bn.var[...]) for name, bn in norms.items()}


def use_batch_stats(module: nnx.Module, stats: BatchStatsDict) -> None:
  """Makes every batch norm of `module` normalize with `stats[its path]`
  (mean [C], variance [C]) instead of its batch's statistics. Mutates
  `module`: call it on a copy."""
  norms = batch_norms(module)
  if set(norms) != set(stats):
    raise ValueError(f"statistics for {sorted(stats)}, but the module's batch "
                     f"norms are {sorted(norms)}.")
  for name, bn in norms.items():
    mean_C, var_C = stats[name]
    bn.mean = nnx.data(BatchStats(mean_C))
    bn.var = nnx.data(BatchStats(var_C))
    bn.mode = "fixed"


def depth_to_space(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  """[B, H, W, r*r*C] -> [B, r*H, r*W, C]."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * r, w * r, c // (r * r))


def upsample_nearest(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  return jnp.repeat(jnp.repeat(x_BHWC, r, axis=1), r, axis=2)


def avg_pool(x_BHWC: jax.Array, r: int = 2) -> jax.Array:
  b, h, w, c = x_BHWC.shape
  return x_BHWC.reshape(b, h // r, r, w // r, r, c).mean(axis=(2, 4))
