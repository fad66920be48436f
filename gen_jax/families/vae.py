"""Variational autoencoders: VAE, beta-VAE and label-conditional VAE.

Objective (per example, in nats): rec + beta * KL(q(z|x) || N(0, I)), with
rec = -log p(x|z) at one reparameterized sample and the KL in closed form.
Reported: the ELBO (always with beta = 1), its two terms, and the importance-
weighted bound of Burda et al. (2015), log p(x) >= E[log mean_k w_k], whose
negation is the NLL estimate papers report.

Likelihoods: 'bernoulli' on dynamically binarized pixels (a fresh binarization
per step, the literature's protocol; the held-out split is binarized once with
a fixed key), or 'gaussian' on uniformly dequantized pixels (x + u) / 256, for
which bits/dim of the 8-bit data is also reported.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, likelihoods, register
from gen_jax.models import conv_vae

MIN_LOG_SCALE = -7.0


def pixel_gaussian_log_prob(x_BHWC: jax.Array, out_BHWC2: jax.Array
                            ) -> jax.Array:
  """Diagonal Gaussian over pixels; the decoder gives (mean, log-scale)."""
  mean, log_scale = jnp.split(out_BHWC2, 2, axis=-1)
  log_scale = jnp.maximum(log_scale, MIN_LOG_SCALE)
  ll = -0.5 * (likelihoods.LOG_2PI + 2 * log_scale + (x_BHWC - mean)**2
               * jnp.exp(-2 * log_scale))
  return jnp.sum(ll.reshape(ll.shape[0], -1), axis=-1)


@register("vae")
class VAE(base.OneNetwork):
  """VAE family; `model.num_classes > 0` makes it a conditional VAE."""

  def __init__(self, config, tokenizer=None):
    m = config.model
    self.likelihood = m.likelihood
    if self.likelihood not in ("bernoulli", "gaussian"):
      raise UserError(f"--config.model.likelihood: '{self.likelihood}' is not "
                      "one of bernoulli, gaussian.")
    base.check_sizes(
        config, positive=("model.latent_dim", "model.channels",
                          "model.hidden_dim", "eval.num_importance_samples",
                          "eval.periodic_importance_samples"),
        nonnegative=("model.num_classes",))
    base.check_images(config)
    self.beta = m.beta
    self.model_cfg = conv_vae.ConvVAEConfig(
        image_shape=tuple(config.data.image_shape),
        latent_dim=m.latent_dim,
        channels=tuple(m.channels),
        hidden_dim=m.hidden_dim,
        num_classes=m.num_classes,
        outputs_per_pixel=1 if self.likelihood == "bernoulli" else 2,
        dtype=config.train.dtype,
    )
    super().__init__(config, tokenizer)
    self.num_pixels = int(np.prod(config.data.image_shape))
    self.num_classes = m.num_classes
    self._sample_jit = jax.jit(self._sample, static_argnums=2)
    self._reconstruct_jit = jax.jit(self._reconstruct)
    self._interpolate_jit = jax.jit(self._interpolate)

  def build_network(self, rngs):
    return conv_vae.ConvVAE(self.model_cfg, rngs=rngs)

  def _onehot(self, batch):
    if not self.model_cfg.num_classes:
      return None
    return jax.nn.one_hot(batch["label"], self.model_cfg.num_classes)

  def preprocess(self, image_BHWC: jax.Array, key: jax.Array) -> jax.Array:
    """uint8 pixels -> the data the likelihood models (binary or dequantized)."""
    x = image_BHWC.astype(jnp.float32)
    if self.likelihood == "bernoulli":
      return jax.random.bernoulli(key, x / 255.0).astype(jnp.float32)
    return (x + jax.random.uniform(key, x.shape)) / 256.0

  def log_likelihood(self, x_BHWC, out_BHWC):
    if self.likelihood == "bernoulli":
      return likelihoods.bernoulli_log_prob(x_BHWC, out_BHWC)
    return pixel_gaussian_log_prob(x_BHWC, out_BHWC)

  def mean_image(self, out_BHWC):
    if self.likelihood == "bernoulli":
      return jax.nn.sigmoid(out_BHWC)
    return jnp.clip(jnp.split(out_BHWC, 2, axis=-1)[0], 0.0, 1.0)

  # --- objective -----------------------------------------------------------

  def elbo_terms(self, model, x_BHWC, y_BK, key):
    """Per-example reconstruction NLL and KL (nats), one posterior sample."""
    mean, logvar = model.encoder(x_BHWC, y_BK)
    eps = jax.random.normal(key, mean.shape)
    z = mean + jnp.exp(0.5 * logvar) * eps
    rec_B = -self.log_likelihood(x_BHWC, model.decoder(z, y_BK))
    kl_B = likelihoods.gaussian_kl(mean, logvar)
    return rec_B, kl_B

  def loss(self, network, batch, key):
    data_key, z_key = jax.random.split(key)
    x = self.preprocess(batch["image"], data_key)
    rec, kl = self.elbo_terms(network, x, self._onehot(batch), z_key)
    return jnp.mean(rec + self.beta * kl), {
        "rec": jnp.mean(rec), "kl": jnp.mean(kl), "elbo": -jnp.mean(rec + kl)}

  # --- evaluation ----------------------------------------------------------

  def iwae_log_likelihood(self, model, x_BHWC, y_BK, key, num_samples: int,
                          chunk: int) -> jax.Array:
    """log (1/k) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z|x) -> [B] (nats)."""
    mean, logvar = model.encoder(x_BHWC, y_BK)
    std = jnp.exp(0.5 * logvar)
    b = x_BHWC.shape[0]

    def one_chunk(_, chunk_key):
      eps = jax.random.normal(chunk_key, (chunk,) + mean.shape)  # [K, B, D]
      z = mean[None] + std[None] * eps
      # [K, B]
      log_q = likelihoods.gaussian_log_prob(z, mean[None], logvar[None])
      log_prior = likelihoods.standard_normal_log_prob(z)
      zf = z.reshape(chunk * b, -1)
      yf = None if y_BK is None else jnp.tile(y_BK, (chunk, 1))
      xf = jnp.tile(x_BHWC, (chunk, 1, 1, 1))
      log_px = self.log_likelihood(xf, model.decoder(zf, yf)).reshape(chunk, b)
      log_w = log_px + log_prior - log_q
      return None, jax.nn.logsumexp(log_w, axis=0)  # [B]

    keys = jax.random.split(key, num_samples // chunk)
    _, per_chunk = jax.lax.scan(one_chunk, None, keys)  # [num_chunks, B]
    return jax.nn.logsumexp(per_chunk, axis=0) - math.log(num_samples)

  def _iwae_chunk(self, k: int, batch_size: int) -> int:
    budget = max(1, 4096 // batch_size)  # decoder passes per scan step
    return max(d for d in range(1, min(k, budget) + 1) if k % d == 0)

  def eval_step(self, state, batch, key, final=False):
    data_key, elbo_key, iwae_key = jax.random.split(key, 3)
    model = self.inference_network(state)
    x = self.preprocess(batch["image"], data_key)
    y = self._onehot(batch)
    rec, kl = self.elbo_terms(model, x, y, elbo_key)
    k = self._score_samples(final)
    iwae = self.iwae_log_likelihood(model, x, y, iwae_key, k,
                                    self._iwae_chunk(k, x.shape[0]))
    sums = {
        "elbo": base.masked_sum(-(rec + kl), batch),
        "rec": base.masked_sum(rec, batch),
        "kl": base.masked_sum(kl, batch),
        f"iwae_nll_k{k}": base.masked_sum(-iwae, batch),
        "count": base.count(batch),
    }
    return sums

  def score(self, state, batch, key, final=False):
    data_key, iwae_key = jax.random.split(key)
    model = self.inference_network(state)
    x = self.preprocess(batch["image"], data_key)
    y = self._onehot(batch)
    k = self._score_samples(final)
    nll = -self.iwae_log_likelihood(model, x, y, iwae_key, k,
                                    self._iwae_chunk(k, x.shape[0]))
    if self.likelihood == "gaussian":  # density on [0, 1] -> 8-bit pixels
      nll = nll + likelihoods.dequantization_nats(self.num_pixels)
    mean, _ = model.encoder(x, y)
    recon = self.mean_image(model.decoder(mean, y))
    error = jnp.mean((recon - batch["image"].astype(jnp.float32) / 255.0)**2,
                     axis=(1, 2, 3))
    return {"nll": nll, "dims": jnp.full(nll.shape, float(self.num_pixels)),
            "reconstruction_error": error}

  def _score_samples(self, final: bool) -> int:
    return (self.config.eval.num_importance_samples if final
            else self.config.eval.periodic_importance_samples)

  def score_notes(self, final=False):
    data = ("the 8-bit image (uniform dequantization)"
            if self.likelihood == "gaussian"
            else "the image binarized with the scoring key")
    return {"nll": f"upper bound: the importance-weighted bound (IWAE, k="
                   f"{self._score_samples(final)}) on -log p of {data}",
            "reconstruction_error": "mean squared error, pixels in [0, 1], "
                                    "of the decoder's mean at the posterior "
                                    "mean"}

  def summarize_eval(self, totals):
    out = super().summarize_eval(totals)
    if self.likelihood == "gaussian":
      # Continuous density on [0, 1] -> discrete 8-bit data: + D log 256.
      for name in [n for n in out if n.startswith("iwae_nll")]:
        out[name.replace("iwae_nll", "bits_per_dim")] = (
            out[name] / self.num_pixels + math.log(256)) / math.log(2)
    return out

  # --- sampling and pictures ----------------------------------------------

  def sample(self, state, key, num, labels=None, sharding=None, progress=None):
    """Mean images of p(x|z), z ~ N(0, I) -> [num, H, W, C] in [0, 1]."""
    del sharding, progress  # one small compiled call
    labels = base.class_labels(num, self.num_classes, labels)
    return self._sample_jit(state, key, num, labels)

  def _sample(self, state, key, num: int, labels=None):
    model = self.inference_network(state)
    z = jax.random.normal(key, (num, self.model_cfg.latent_dim))
    y = (None if labels is None
         else jax.nn.one_hot(labels, self.model_cfg.num_classes))
    return self.mean_image(model.decoder(z, y))

  def _reconstruct(self, state, batch, key):
    model = self.inference_network(state)
    x = self.preprocess(batch["image"], key)
    y = self._onehot(batch)
    mean, _ = model.encoder(x, y)
    return x, self.mean_image(model.decoder(mean, y)), mean

  def _interpolate(self, state, batch, key, steps: int = 10):
    model = self.inference_network(state)
    x = self.preprocess(batch["image"], key)
    y = self._onehot(batch)
    mean, _ = model.encoder(x, y)
    n = mean.shape[0] // 2
    a, b = mean[:n], mean[n:2 * n]
    t = jnp.linspace(0.0, 1.0, steps)[None, :, None]
    z = (a[:, None] * (1 - t) + b[:, None] * t).reshape(n * steps, -1)
    ys = None if y is None else jnp.repeat(y[:n], steps, axis=0)
    return self.mean_image(model.decoder(z, ys))

  def visualize(self, state, batch, key):
    sample_key, rec_key = jax.random.split(key)
    out = {"samples": self.sample_grid(state, sample_key)}
    m = min(16, batch["image"].shape[0])
    small = {k: v[:m] for k, v in batch.items()}
    x, recon, _ = self._reconstruct_jit(state, small, rec_key)
    pairs = np.stack([np.asarray(x), np.asarray(recon)], 1).reshape(
        2 * m, *x.shape[1:])
    out["reconstructions"] = grids.make_grid(pairs, 8)  # input, recon, ...
    if m >= 2:
      inter = self._interpolate_jit(state, small, rec_key)
      out["interpolation"] = grids.make_grid(np.asarray(inter), 10)
    return out


