"""Log-densities, KL divergences and unit conversions the families share.

One argument order everywhere: the value first, then the distribution's
parameters (`log_prob(x, *params)`, as scipy's `logpdf`). Functions named
`*_log_prob` sum over every axis but the batch axis (or over the last axis
where said); `normal_kl` and `discretized_gaussian_log_likelihood` are
elementwise. All in nats.
"""

import math

import jax
import jax.numpy as jnp

LOG2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(values_B: jax.Array) -> jax.Array:
  return jnp.sum(values_B.reshape(values_B.shape[0], -1), axis=-1)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, logvar: jax.Array
                      ) -> jax.Array:
  """log N(x; mean, exp(logvar)) summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + (x - mean)**2 * jnp.exp(-logvar),
                        axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
  """log N(z; 0, I) summed over the last axis."""
  return -0.5 * jnp.sum(z**2 + LOG_2PI, axis=-1)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)) summed over the last axis."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def normal_kl(mean1: jax.Array, logvar1: jax.Array, mean2: jax.Array,
              logvar2: jax.Array) -> jax.Array:
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log Bernoulli(x; sigmoid(logits)) summed per example -> [B]."""
  xf = x.astype(jnp.float32)
  ll = xf * jax.nn.log_sigmoid(logits) + (1.0 - xf) * jax.nn.log_sigmoid(
      -logits)
  return _sum_per_example(ll)


def categorical_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
  """log softmax(logits)[x] summed per example -> [B]; `logits` has one more
  (last) axis than the integer values `x`."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  ll = jnp.take_along_axis(logp, x[..., None], axis=-1)[..., 0]
  return _sum_per_example(ll)


def discretized_gaussian_log_likelihood(x: jax.Array, mean: jax.Array,
                                        log_scale: jax.Array) -> jax.Array:
  """log P(x) of 8-bit data in [-1, 1] (bins of width 2/255; the edge bins
  extend to +-infinity) under N(mean, exp(log_scale)^2), elementwise."""
  centered = x - mean
  inv_std = jnp.exp(-log_scale)
  upper = inv_std * (centered + 1.0 / 255.0)
  lower = inv_std * (centered - 1.0 / 255.0)
  log_cdf_upper = jax.scipy.stats.norm.logcdf(upper)
  log_sf_lower = jax.scipy.stats.norm.logcdf(-lower)
  # log(Phi(upper) - Phi(lower)), computed on the side of the tail that keeps
  # precision: both in the upper tail -> via survival functions.
  mid = jnp.where(
      lower > 0,
      log_sf_lower + jnp.log1p(-jnp.exp(jnp.minimum(
          jax.scipy.stats.norm.logcdf(-upper) - log_sf_lower, -1e-12))),
      log_cdf_upper + jnp.log1p(-jnp.exp(jnp.minimum(
          jax.scipy.stats.norm.logcdf(lower) - log_cdf_upper, -1e-12))))
  return jnp.where(x < -0.999, log_cdf_upper,
                   jnp.where(x > 0.999, log_sf_lower, mid))


def bits_per_dim(nll_nats: jax.Array, num_dims: int) -> jax.Array:
  """Negative log-likelihood per example (nats) -> bits per dimension."""
  return nll_nats / (num_dims * LOG2)


def dequantization_nats(num_dims: int, levels: int = 256) -> float:
  """D log(levels): turns a density of v = (x + u) / levels on [0, 1]^D into
  a bound on the log-probability of the discrete image x."""
  return num_dims * math.log(levels)
