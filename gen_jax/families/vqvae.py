"""VQ-VAE (van den Oord et al. 2017): the first stage of two-stage models.

Images in [-1, 1] are encoded to a grid of codes (`models/vqvae.py`) and
decoded back. Objective per batch: ||x - D(z_q)||^2 (the mean over pixels)
+ beta ||z_e - sg(z_q)||^2 (commitment) [+ ||sg(z_e) - z_q||^2 when the
codes are trained by gradient rather than by EMA]. A second model learns the
codes' distribution: a Transformer prior over the code grid (`vq_prior`) or
a diffusion / flow model over the continuous latents (`model.autoencoder`
of the denoising families); both load a trained run read-only
(`stage1.py`).

Reported: reconstruction MSE (pixels in [0, 1]) and PSNR, codebook usage
(the fraction of codes used on the held-out split) and perplexity
(exp of the entropy of the code frequencies: K if all codes were used
equally), and an upper bound on bits/dim with a uniform prior over the
codes: the decoder is a Gaussian of mean D(z_q) and one learned scale
(trained on stop-gradient residuals), on uniformly dequantized pixels, and
with a deterministic q(z|x) the ELBO is log p(x|z) + log p(z).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, likelihoods, register
from gen_jax.models import vqvae as vqvae_lib


def model_config(config) -> vqvae_lib.VQVAEConfig:
  """The network's config from a run's `config.model` (checked)."""
  m = config.model
  base.check_sizes(config, positive=("model.channels", "model.codebook_size",
                                     "model.code_dim"),
                   nonnegative=("model.num_res_blocks",
                                "model.restart_threshold"))
  base.check_fraction(config, "model.ema_decay")
  return vqvae_lib.VQVAEConfig(
      image_shape=base.check_images(config), channels=tuple(m.channels),
      num_res_blocks=m.num_res_blocks, codebook_size=m.codebook_size,
      code_dim=m.code_dim, ema=m.ema_codebook, ema_decay=m.ema_decay,
      restart_threshold=m.restart_threshold, dtype=config.train.dtype)


def to_model_space(image_BHWC: jax.Array) -> jax.Array:
  return image_BHWC.astype(jnp.float32) / 127.5 - 1.0


def dequantized(image_BHWC: jax.Array, key: jax.Array) -> jax.Array:
  """uint8 pixels k -> 2 (k + u) / 256 - 1, u ~ U[0, 1)."""
  u = jax.random.uniform(key, image_BHWC.shape)
  return 2.0 * (image_BHWC.astype(jnp.float32) + u) / 256.0 - 1.0


def reconstruction_nll(network, x_BHWC, recon_BHWC) -> jax.Array:
  """-log p(x | z) [B] in nats of the decoder's Gaussian for x in [-1, 1]."""
  log_scale = network.log_scale[...]
  nll = 0.5 * (likelihoods.LOG_2PI + 2 * log_scale
               + (x_BHWC - recon_BHWC)**2 * jnp.exp(-2 * log_scale))
  return jnp.sum(nll.reshape(nll.shape[0], -1), axis=-1)


def bits_per_dim(nll_m11_B: jax.Array, num_dims: int) -> jax.Array:
  """Nats of a density on [-1, 1]^D -> bits/dim of the 8-bit data: the
  density on [0, 1] is 2^D times larger, and a bin is 1/256 wide."""
  return (nll_m11_B / num_dims - math.log(2.0) + math.log(256.0)) / math.log(
      2.0)


@register("vqvae")
class VQVAE(base.OneNetwork):
  """VQ-VAE with EMA or gradient codes and dead-code restarts."""

  def __init__(self, config, tokenizer=None):
    self.model_cfg = model_config(config)
    if config.model.commitment_cost < 0:
      raise UserError(f"--config.model.commitment_cost="
                      f"{config.model.commitment_cost}: must be >= 0.")
    if config.model.restart_threshold > 0 and not config.model.ema_codebook:
      raise UserError("--config.model.restart_threshold > 0 restarts EMA "
                      "codes: it needs --config.model.ema_codebook=True (or "
                      "restart_threshold=0).")
    super().__init__(config, tokenizer)
    self.num_dims = int(np.prod(config.data.image_shape))
    self._reconstruct_jit = jax.jit(self._reconstruct)

  def build_network(self, rngs):
    return vqvae_lib.VQVAE(self.model_cfg, rngs=rngs)

  def forward(self, network, x_BHWC, key=None, training=False):
    """-> (reconstruction, code indices, the quantizer's losses)."""
    z_e = network.encoder(x_BHWC)
    z_q, idx, losses = network.quantizer(z_e, key, training=training)
    return network.decoder(z_q), idx, losses

  def loss(self, network, batch, key):
    x = to_model_space(batch["image"])
    recon, idx, vq = self.forward(network, x, key, training=True)
    mse = jnp.mean((recon - x)**2)
    loss = mse + self.config.model.commitment_cost * vq["commitment"]
    if not self.model_cfg.ema:
      loss = loss + vq["codebook"]
    # The decoder's scale, fitted to the residuals without moving them.
    scale_nll = reconstruction_nll(network, x, jax.lax.stop_gradient(recon))
    loss = loss + jnp.mean(scale_nll) / self.num_dims
    counts = jnp.bincount(idx.reshape(-1), length=self.model_cfg.codebook_size)
    return loss, {"mse": mse / 4.0, "commitment": vq["commitment"],
                  "codebook": vq["codebook"],
                  "perplexity": _perplexity(counts)}

  def measure(self, network, batch, key):
    """Per example: (MSE in [0, 1] pixel units, -log p (nats) of the
    dequantized image in [-1, 1] with a uniform prior over the codes),
    the codes [B, h w] and the quantizer's losses."""
    x = to_model_space(batch["image"])
    recon, idx, vq = self.forward(network, x)
    mse_B = jnp.mean(((recon - x) / 2.0)**2, axis=(1, 2, 3))  # [0, 1] units
    xq = dequantized(batch["image"], key)
    z_q = network.quantizer.lookup(network.encode(xq))
    nll = reconstruction_nll(network, xq, network.decoder(z_q))
    codes = idx.reshape(idx.shape[0], -1)
    nll = nll + codes.shape[1] * math.log(self.model_cfg.codebook_size)
    return mse_B, nll, codes, vq

  def eval_step(self, state, batch, key, final=False):
    del final  # nothing is estimated
    mse_B, nll, codes, vq = self.measure(self.inference_network(state),
                                         batch, key)
    psnr_B = -10.0 * jnp.log10(jnp.maximum(mse_B, 1e-10))
    mask = batch.get("mask", jnp.ones(codes.shape[:1]))
    counts = jnp.zeros(self.model_cfg.codebook_size).at[codes].add(
        jnp.broadcast_to(mask[:, None], codes.shape))
    return {"mse": base.masked_sum(mse_B, batch),
            "psnr": base.masked_sum(psnr_B, batch),
            "commitment": base.masked_sum(
                jnp.full(mask.shape, vq["commitment"]), batch),
            "bits_per_dim_uniform_prior": base.masked_sum(
                bits_per_dim(nll, self.num_dims), batch),
            "code_counts": counts, "count": base.count(batch)}

  def score(self, state, batch, key, final=False):
    del final  # nothing is estimated
    mse_B, nll, _, _ = self.measure(self.inference_network(state), batch, key)
    nll_8bit = bits_per_dim(nll, self.num_dims) * (self.num_dims
                                                   * likelihoods.LOG2)
    return {"nll": nll_8bit, "dims": jnp.full(nll.shape, float(self.num_dims)),
            "reconstruction_error": mse_B}

  def score_notes(self, final=False):
    return {"nll": "upper bound: -log p of the 8-bit image (uniform "
                   "dequantization, one draw) with a uniform prior over the "
                   "codes",
            "reconstruction_error": "mean squared error, pixels in [0, 1]"}

  def summarize_eval(self, totals):
    totals = dict(totals)
    counts = np.asarray(totals.pop("code_counts"))
    out = super().summarize_eval(totals)
    out["codebook_usage"] = float(np.mean(counts > 0))
    out["perplexity"] = float(_perplexity(counts))
    return out

  def _reconstruct(self, state, batch):
    network = self.inference_network(state)
    x = to_model_space(batch["image"])
    recon, idx, _ = self.forward(network, x)
    return (x + 1) / 2, jnp.clip((recon + 1) / 2, 0.0, 1.0), idx

  def visualize(self, state, batch, key):
    """Inputs and reconstructions side by side (a VQ-VAE alone has no
    sampler: its prior is the second stage)."""
    del key
    m = min(32, batch["image"].shape[0])
    x, recon, _ = self._reconstruct_jit(state, {"image": batch["image"][:m]})
    pairs = np.stack([np.asarray(x), np.asarray(recon)], 1).reshape(
        2 * m, *x.shape[1:])
    return {"reconstructions": grids.make_grid(pairs, 8)}


def _perplexity(counts_K) -> jax.Array:
  """exp(entropy) of the code frequencies."""
  p = counts_K / jnp.maximum(jnp.sum(counts_K), 1)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)),
                                    0.0)))
