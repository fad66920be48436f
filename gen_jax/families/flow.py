"""Normalizing flows: exact log-likelihood by the change of variables.

log p(x) = log N(f(x); 0, I) + log|det df/dx|, with f the flow (RealNVP, Glow,
or a coupling flow for 2-D vectors; gen_jax/models/flows.py).

Images (uint8) are dequantized uniformly, v = (x + u) / 256 with u ~ U[0, 1)^D,
and the flow models the density of v on [0, 1]^D, preprocessing included
(logit or centring: its Jacobian is part of f). Since the 256^D cells of v
each hold one 8-bit image, E_u[log p(v)] - D log 256 is a lower bound on the
log-probability of the discrete image: the reported NLL (nats) and bits/dim =
NLL / (D ln 2) are that bound, the number the papers report and the same
footing as the diffusion family's vlb_bits_per_dim. Vectors (the 2-D toy
densities) are continuous: their NLL is in nats per point.

Sampling draws z ~ N(0, T^2 I) at temperature T (`sample.temperature`; Glow's
pictures use T = 0.7) and inverts the flow.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, likelihoods, register
from gen_jax.models import flows

_ARCHS = ("realnvp", "glow", "coupling_mlp")
_SAMPLE_CHUNK = 256  # images per compiled sampling call


@register("flow")
class Flow(base.OneNetwork):
  """RealNVP / Glow on images, a coupling flow on 2-D points."""

  def __init__(self, config, tokenizer=None):
    m = config.model
    checks = {"arch": _ARCHS, "coupling_scale": ("tanh", "sigmoid"),
              "preprocess": ("logit", "center", "none")}
    for key, valid in checks.items():
      if m[key] not in valid:
        raise UserError(f"--config.model.{key}: '{m[key]}' is not one of "
                        f"{', '.join(valid)}.")
    if config.train.dtype != "float32":
      # Log-determinants summed over thousands of dimensions need float32:
      # bfloat16's 8-bit mantissa would put errors of whole nats in the NLL.
      raise UserError(f"--config.train.dtype={config.train.dtype}: the flow "
                      "family computes in float32 only.")
    shape = tuple(config.data.image_shape)
    if len(shape) not in (1, 3):
      raise UserError(f"--config.data.image_shape={shape}: the flow family "
                      "models images [H, W, C] or vectors [D].")
    self.is_image = len(shape) == 3
    if self.is_image == (m.arch == "coupling_mlp"):
      raise UserError(f"--config.model.arch={m.arch} does not fit data of "
                      f"shape {shape}: realnvp/glow take images [H, W, C], "
                      "coupling_mlp takes vectors [D].")
    for key in ("steps_per_level", "num_levels", "hidden"):
      if m[key] < 1:
        raise UserError(f"--config.model.{key}={m[key]}: must be >= 1.")
    if m.num_blocks < 0:
      raise UserError(f"--config.model.num_blocks={m.num_blocks}: must be "
                      ">= 0.")
    if m.preprocess == "logit" and not 0 < m.logit_alpha < 0.5:
      raise UserError(f"--config.model.logit_alpha: must be in (0, 0.5), got "
                      f"{m.logit_alpha}.")
    self.flow_cfg = flows.FlowConfig(
        arch=m.arch, data_shape=shape, num_levels=m.num_levels,
        steps_per_level=m.steps_per_level, hidden=m.hidden,
        num_blocks=m.num_blocks, coupling_scale=m.coupling_scale,
        preprocess=m.preprocess if self.is_image else "none",
        logit_alpha=m.logit_alpha)
    squeezes = self.flow_cfg.num_squeezes
    if self.is_image and (shape[0] % 2**squeezes or shape[1] % 2**squeezes):
      raise UserError(f"--config.model.num_levels={m.num_levels}: a {m.arch} "
                      f"flow squeezes {squeezes} times by 2, which a "
                      f"{shape[0]}x{shape[1]} image does not allow.")
    self.num_dims = math.prod(shape)
    super().__init__(config, tokenizer)
    self._sample_jit = jax.jit(self._sample, static_argnums=2)
    self._log_prob_jit = jax.jit(self._log_prob_points)

  @property
  def temperature(self) -> float:
    return self.config.sample.get("temperature", 1.0)

  # --- model plumbing ------------------------------------------------------

  def build_network(self, rngs):
    return flows.build(self.flow_cfg, rngs)

  def initialize(self, network, batch, key):
    if batch is not None:  # actnorm's data-dependent initialization
      network.forward(self.dequantize(batch["image"], key), init=True)

  def dequantize(self, image, key):
    """uint8 images -> (x + u) / 256 in [0, 1); vectors unchanged."""
    if not self.is_image:
      return image.astype(jnp.float32)
    x = image.astype(jnp.float32)
    return (x + jax.random.uniform(key, x.shape)) / 256.0

  def log_prob(self, model, v) -> jax.Array:
    """log p(v) of the continuous (dequantized) data, nats -> [B]."""
    z, logdet = model.forward(v)
    return likelihoods.standard_normal_log_prob(z) + logdet

  def nll(self, model, image, key) -> jax.Array:
    """-log P per example (nats): of the 8-bit image (the dequantization
    bound) or of the continuous point."""
    nll = -self.log_prob(model, self.dequantize(image, key))
    if self.is_image:
      nll = nll + likelihoods.dequantization_nats(self.num_dims)
    return nll

  def _metrics(self, nll_B, reduce):
    out = {"nll": reduce(nll_B)}
    if self.is_image:
      out["bits_per_dim"] = reduce(likelihoods.bits_per_dim(nll_B,
                                                           self.num_dims))
    return out

  # --- objective -----------------------------------------------------------

  def loss(self, network, batch, key):
    nll = self.nll(network, batch["image"], key)
    # Per dimension, so the learning rate does not depend on the data size.
    return jnp.mean(nll) / self.num_dims, self._metrics(nll, jnp.mean)

  def eval_step(self, state, batch, key, final=False):
    nll = self.score(state, batch, key, final)["nll"]
    return {**self._metrics(nll, lambda v: base.masked_sum(v, batch)),
            "count": base.count(batch)}

  def score(self, state, batch, key, final=False):
    del final  # one dequantization draw, as in eval
    nll = self.nll(self.inference_network(state), batch["image"], key)
    return {"nll": nll, "dims": jnp.full(nll.shape, float(self.num_dims))}

  def score_notes(self, final=False):
    if not self.is_image:
      return {"nll": "exact: -log p(x) of the point (change of variables)"}
    return {"nll": "upper bound: -log p of the 8-bit image by uniform "
                   "dequantization, one draw (exact change of variables)"}

  # --- sampling and pictures ----------------------------------------------

  def sample(self, state, key, num, labels=None, sharding=None, progress=None):
    """x = f^-1(z), z ~ N(0, T^2 I): images in [0, 1] or 2-D points."""
    del labels, sharding
    chunks = []
    for i, start in enumerate(range(0, num, _SAMPLE_CHUNK)):
      n = min(_SAMPLE_CHUNK, num - start)
      chunks.append(self._sample_jit(state, jax.random.fold_in(key, i), n,
                                     self.temperature))
      if progress is not None:
        chunks[-1].block_until_ready()
        progress(start + n, num)
    return jnp.concatenate(chunks)

  def _sample(self, state, key, num: int, temperature):
    model = self.inference_network(state)
    z = temperature * jax.random.normal(key, (num, self.num_dims))
    x, _ = model.inverse(z)
    return jnp.clip(x, 0.0, 1.0) if self.is_image else x

  def _log_prob_points(self, state, points_N2):
    return self.log_prob(self.inference_network(state), points_N2)

  def log_density(self, state, points: jax.Array) -> jax.Array:
    """log p(x) (nats) of a flow over vectors at each of `points` [N, D]."""
    return self._log_prob_jit(state, jnp.asarray(points, jnp.float32))

  def density_image(self, state, points_N2: np.ndarray, size: int = 160
                    ) -> np.ndarray:
    """The model density p(x) of a 2-D flow over the square spanned by
    `points` (+10%), as an [size, size, 3] picture (y up)."""
    lo, hi = points_N2.min(0), points_N2.max(0)
    centre, half = (lo + hi) / 2, np.max(hi - lo) / 2 * 1.1
    axis = np.linspace(-half, half, size)
    xx, yy = np.meshgrid(centre[0] + axis, centre[1] + axis[::-1])
    grid = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)
    log_p = np.asarray(self.log_density(state, grid))
    return grids.heatmap(np.exp(log_p).reshape(size, size))

  def visualize(self, state, batch, key):
    n = self.config.eval.num_samples
    if not self.is_image:
      real = np.asarray(batch["image"])[np.asarray(batch["mask"]) > 0]
      points = np.asarray(self._sample_jit(state, key, 2500, 1.0))
      return {"samples": grids.scatter_image(points, real),
              "density": self.density_image(state, real)}
    out = {"samples": grids.make_grid(np.asarray(
        self._sample_jit(state, key, n, self.temperature)))}
    # One row per temperature, the same noise scaled: T trades diversity for
    # fidelity (Glow, Fig. 8).
    temps = (0.5, 0.7, 0.85, 1.0)
    rows = [self._sample_jit(state, key, 8, t) for t in temps]
    out["temperatures"] = grids.make_grid(
        np.asarray(jnp.concatenate(rows)), 8)
    return out
