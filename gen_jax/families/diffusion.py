"""Denoising diffusion probabilistic models (Ho et al. 2020) and DDIM sampling.

Data x_0 are the 8-bit images scaled to [-1, 1]. The forward process
q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) uses a linear (DDPM) or
cosine (Nichol & Dhariwal 2021) schedule of T steps. The U-Net predicts eps or
v = sqrt(abar) eps - sqrt(1 - abar) x_0 and is trained with the simple loss
(mean squared error of its prediction). With `model.num_classes > 0` it is
class-conditional; labels are replaced by a null class with probability
`model.label_dropout`, so one network also gives the unconditional model for
classifier-free guidance, eps = eps_u + s (eps_c - eps_u) (s = 0: unconditional,
s = 1: conditional, s > 1: guided).

Samplers: ancestral ('ddpm', the full chain of T steps), DDIM ('ddim', any
number of steps, trailing timesteps, stochasticity eta) and DPM-Solver++(2M)
('dpm_solver++', `samplers.py`, on timesteps evenly spaced in log-SNR from
T - 1 to 0; default 20). All clip the x_0 prediction to [-1, 1] (with
`sample.clip_denoised`). The network is a U-Net or a DiT (`model.network`,
see denoisers.py).

Likelihood: the variational bound of the DDPM paper in bits/dim, with the
discretized Gaussian decoder at t = 0, so it is a bound on the NLL of the
discrete 8-bit data. Its sum over t = 1..T-1 is estimated without bias by
stratified sampling of `eval.vlb_timesteps` timesteps per image (exact when
that equals T - 1); the prior term and the decoder term are exact.

Indexing follows the DDPM code: t = 0..T-1, beta[t] = beta_{t+1} of the paper.
"""

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.families import base, denoisers, likelihoods, register
from gen_jax.families import samplers, schedules


def _check_config(config) -> None:
  """Sizes and rates the network and the noise schedule can use."""
  m = config.model
  base.check_sizes(
      config, positive=("eval.vlb_timesteps", "eval.periodic_vlb_timesteps"))
  if m.num_timesteps < 2:
    raise UserError(f"--config.model.num_timesteps={m.num_timesteps}: must "
                    "be >= 2.")
  if m.schedule == "linear" and not 0 < m.beta_start <= m.beta_end < 1:
    raise UserError(f"--config.model.beta_start={m.beta_start}, beta_end="
                    f"{m.beta_end}: need 0 < beta_start <= beta_end < 1.")
  base.check_fraction(config, "sample.eta", include_one=True)


@register("diffusion")
class Diffusion(denoisers.DenoiserFamily):
  """DDPM/DDIM with a U-Net denoiser; optional classes and guidance."""

  def __init__(self, config, tokenizer=None):
    m = config.model
    if m.prediction not in ("eps", "v"):
      raise UserError(f"--config.model.prediction: '{m.prediction}' is not "
                      "one of eps, v.")
    if m.variance not in ("fixed_large", "fixed_small"):
      raise UserError(f"--config.model.variance: '{m.variance}' is not one "
                      "of fixed_large, fixed_small.")
    _check_config(config)
    self.sched = schedules.make_schedule(schedules.make_betas(
        m.schedule, m.num_timesteps, m.beta_start, m.beta_end))
    # Variance of p(x_{t-1} | x_t): beta_t ('fixed_large', DDPM's CIFAR-10
    # choice; beta-tilde_1 at t = 0) or beta-tilde_t ('fixed_small').
    if m.variance == "fixed_large":
      self.model_log_variance = np.log(np.append(
          self.sched.posterior_variance[1], self.sched.betas[1:]))
    else:
      self.model_log_variance = self.sched.posterior_log_variance_clipped
    super().__init__(config, tokenizer)
    if self.latent and config.sample.clip_denoised:
      raise UserError("--config.sample.clip_denoised: latents are not "
                      "bounded to [-1, 1]; set it to False.")
    self._plan()  # a bad sampler setting fails here, before any work
    self._chunk_fns: dict[tuple, Callable] = {}
    self._noise_fns: dict[tuple, Callable] = {}

  def predict(self, net, x_BHWC, t_B, y_B=None, guidance_scale: float = 1.0):
    """(eps, x_0) predicted at (x_t, t), with classifier-free guidance."""
    out = denoisers.guided(net, x_BHWC, t_B, y_B, guidance_scale,
                           self.null_condition(y_B))
    abar = schedules.at(self.sched.alphas_cumprod, t_B)
    if self.config.model.prediction == "eps":
      eps = out
      x0 = (x_BHWC - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x_0
      x0 = jnp.sqrt(abar) * x_BHWC - jnp.sqrt(1.0 - abar) * out
      eps = jnp.sqrt(1.0 - abar) * x_BHWC + jnp.sqrt(abar) * out
    return eps, x0

  # --- training ------------------------------------------------------------

  def loss_terms(self, net, batch, key, training: bool):
    """Simple loss: per-example mean squared error of the prediction -> [B]."""
    t_key, eps_key, drop_key, label_key, flip_key = jax.random.split(key, 5)
    image = batch["image"]
    b = image.shape[0]
    if training and self.config.data.random_flip:
      flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
      image = jnp.where(flip, image[:, :, ::-1], image)
    x0 = self.model_input(net, image)
    t = jax.random.randint(t_key, (b,), 0, self.sched.num_timesteps)
    eps = jax.random.normal(eps_key, x0.shape)
    xt = schedules.q_sample(self.sched, x0, t, eps)
    y = denoisers.training_labels(batch, self.num_classes,
                                  self.config.model.label_dropout, label_key,
                                  training)
    out = net(xt, t, y, dropout_key=drop_key if training else None)
    if self.config.model.prediction == "eps":
      target = eps
    else:
      abar = schedules.at(self.sched.alphas_cumprod, t)
      target = jnp.sqrt(abar) * eps - jnp.sqrt(1.0 - abar) * x0
    return jnp.mean((out - target) ** 2, axis=(1, 2, 3))

  def loss(self, network, batch, key):
    return jnp.mean(self.loss_terms(network, batch, key, True)), {}

  # --- the variational bound -------------------------------------------------

  def vlb_term(self, net, x0_BHWC, t_B, key, y_B=None) -> jax.Array:
    """L_t per example (nats): KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for
    t > 0, the discretized decoder NLL -log p(x_0 | x_1) for t = 0."""
    eps = jax.random.normal(key, x0_BHWC.shape)
    xt = schedules.q_sample(self.sched, x0_BHWC, t_B, eps)
    true_mean, true_logvar = schedules.q_posterior(self.sched, x0_BHWC, xt,
                                                   t_B)
    _, x0_pred = self.predict(net, xt, t_B, y_B)
    x0_pred = jnp.clip(x0_pred, -1.0, 1.0)
    model_mean, _ = schedules.q_posterior(self.sched, x0_pred, xt, t_B)
    model_logvar = schedules.at(self.model_log_variance, t_B)
    kl = jnp.sum(likelihoods.normal_kl(true_mean, true_logvar, model_mean,
                                       model_logvar),
                 axis=(1, 2, 3))
    nll = -jnp.sum(likelihoods.discretized_gaussian_log_likelihood(
        x0_BHWC, model_mean, 0.5 * model_logvar), axis=(1, 2, 3))
    return jnp.where(t_B == 0, nll, kl)

  def prior_kl(self, x0_BHWC) -> jax.Array:
    """KL(q(x_T | x_0) || N(0, I)) per example (nats)."""
    abar = self.sched.alphas_cumprod[-1]
    mean = math.sqrt(abar) * x0_BHWC
    logvar = jnp.full_like(x0_BHWC, math.log(1.0 - abar))
    return jnp.sum(likelihoods.normal_kl(mean, logvar, jnp.zeros_like(mean),
                                         jnp.zeros_like(mean)),
                   axis=(1, 2, 3))

  def vlb(self, net, x0_BHWC, key, num_strata: int, y_B=None) -> jax.Array:
    """Unbiased estimate of the full bound -log p(x_0) <= sum_t L_t + L_T,
    per example (nats): L_0 and L_T exact, t = 1..T-1 stratified."""
    t_count = self.sched.num_timesteps
    k = min(num_strata, t_count - 1)
    bounds = 1 + (np.arange(k + 1) * (t_count - 1)) // k  # strata edges
    lo, width = bounds[:-1], np.diff(bounds)
    b = x0_BHWC.shape[0]
    t_key, noise_key, dec_key = jax.random.split(key, 3)
    offsets = jax.random.randint(t_key, (k, b), 0, width[:, None])
    ts = jnp.asarray(lo)[:, None] + offsets  # [k, B]

    def body(total, inputs):
      t_B, w, step_key = inputs
      return total + w * self.vlb_term(net, x0_BHWC, t_B, step_key, y_B), None

    total, _ = jax.lax.scan(
        body, jnp.zeros((b,)),
        (ts, jnp.asarray(width, jnp.float32), jax.random.split(noise_key, k)))
    decoder = self.vlb_term(net, x0_BHWC, jnp.zeros((b,), jnp.int32), dec_key,
                            y_B)
    return total + decoder + self.prior_kl(x0_BHWC)

  def eval_step(self, state, batch, key, final=False):
    loss_key, vlb_key = jax.random.split(key)
    net = self.inference_network(state)
    x0 = self.model_input(net, batch["image"])
    y = batch["label"].astype(jnp.int32) if self.num_classes else None
    k = self._strata(final)
    out = {"loss": base.masked_sum(
        self.loss_terms(net, batch, loss_key, False), batch),
           "count": base.count(batch)}
    if not self.latent:  # the bound's decoder is over 8-bit pixels
      nll = self.vlb(net, x0, vlb_key, k, y)
      out["vlb_bits_per_dim"] = base.masked_sum(
          likelihoods.bits_per_dim(nll, self.num_dims), batch)
    return out

  def score(self, state, batch, key, final=False):
    self.check_scorable()
    net = self.inference_network(state)
    y = batch["label"].astype(jnp.int32) if self.num_classes else None
    nll = self.vlb(net, self.model_input(net, batch["image"]), key,
                   self._strata(final), y)
    return {"nll": nll, "dims": jnp.full(nll.shape, float(self.num_dims))}

  def _strata(self, final: bool) -> int:
    return (self.config.eval.vlb_timesteps if final
            else self.config.eval.periodic_vlb_timesteps)

  def score_notes(self, final=False):
    self.check_scorable()  # refused before any work
    k = min(self._strata(final), self.sched.num_timesteps - 1)
    return {"nll": "upper bound: the variational bound on -log p of the "
                   f"8-bit image (T = {self.sched.num_timesteps}, an "
                   f"unbiased estimate over {k} stratified timesteps)"}

  # --- sampling --------------------------------------------------------------

  def _plan(self) -> tuple[str, np.ndarray, np.ndarray]:
    """(sampler, timesteps t, previous timesteps) of the configured sampler."""
    s = self.config.sample
    t_count = self.sched.num_timesteps
    if s.sampler == "ddpm":
      if s.num_steps not in (0, t_count):
        raise UserError(f"--num_steps={s.num_steps}: ancestral sampling runs "
                        f"the full chain of {t_count} steps; use "
                        "--sampler=ddim for fewer.")
      ts = np.arange(t_count - 1, -1, -1, dtype=np.int32)
    elif s.sampler == "ddim":
      ts = schedules.ddim_timesteps(t_count, s.num_steps or t_count)
    elif s.sampler == "dpm_solver++":
      grid = schedules.logsnr_timesteps(self.sched.alphas_cumprod,
                                        s.num_steps or 20)
      return s.sampler, grid[:-1], grid[1:]
    else:
      raise UserError(f"--sampler={s.sampler}: not one of ddpm, ddim, "
                      "dpm_solver++.")
    return s.sampler, ts, np.append(ts[1:], -1).astype(np.int32)

  def _step(self, sampler, net, x, t, t_prev, y, key):
    """One reverse step from timestep t to t_prev (-1: the data)."""
    s = self.config.sample
    b = x.shape[0]
    t_B = jnp.full((b,), t, jnp.int32)
    eps, x0 = self.predict(net, x, t_B, y, s.guidance_scale)
    abar = schedules.at(self.sched.alphas_cumprod, t_B)
    if s.clip_denoised:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)
    noise = jax.random.normal(key, x.shape)
    if sampler == "ddpm":
      mean, _ = schedules.q_posterior(self.sched, x0, x, t_B)
      std = jnp.exp(0.5 * schedules.at(self.model_log_variance, t_B))
      return mean + jnp.where(t > 0, std, 0.0) * noise
    abar_prev = jnp.where(
        t_prev >= 0, jnp.asarray(self.sched.alphas_cumprod,
                                 jnp.float32)[jnp.maximum(t_prev, 0)], 1.0)
    sigma = s.eta * jnp.sqrt((1.0 - abar_prev) / (1.0 - abar[0, 0, 0, 0])
                             * (1.0 - abar[0, 0, 0, 0] / abar_prev))
    direction = jnp.sqrt(jnp.maximum(1.0 - abar_prev - sigma**2, 0.0)) * eps
    return jnp.sqrt(abar_prev) * x0 + direction + sigma * noise

  def _chunk_fn(self, sampler: str):
    """Jitted: runs a run of reverse steps (a scan), x donated."""
    if sampler not in self._chunk_fns:
      def run(params, rest, x, y, ts, t_prevs, key):
        net = self.network(params, rest)

        def body(x, inputs):
          t, t_prev = inputs
          return self._step(sampler, net, x, t, t_prev, y,
                            jax.random.fold_in(key, t)), None
        x, _ = jax.lax.scan(body, x, (ts, t_prevs))
        return x
      self._chunk_fns[sampler] = jax.jit(run, donate_argnums=2)
    return self._chunk_fns[sampler]

  def _dpm_chain(self):
    """DPM-Solver++(2M) on the discrete process alpha_t = sqrt(abar_t),
    from `samplers` (compiled once)."""
    if "dpm_solver++" not in self._chunk_fns:
      abar = jnp.asarray(self.sched.alphas_cumprod, jnp.float32)
      process = samplers.Process(
          alpha=lambda t: jnp.sqrt(abar[t]),
          sigma=lambda t: jnp.sqrt(1.0 - abar[t]),
          t_max=self.sched.num_timesteps - 1, t_min=0, prior_std=1.0)

      def make_denoiser(params, rest, y):
        net = self.network(params, rest)

        def denoise(x, t):
          t_B = jnp.full((x.shape[0],), t, jnp.int32)
          eps, x0 = self.predict(net, x, t_B, y,
                                 self.config.sample.guidance_scale)
          if self.config.sample.clip_denoised:
            x0 = jnp.clip(x0, -1.0, 1.0)
          return x0, eps
        return denoise
      self._chunk_fns["dpm_solver++"] = samplers.make_chain(
          samplers.SAMPLERS["dpm_solver++"], process, make_denoiser,
          samplers.Options())
    return self._chunk_fns["dpm_solver++"]

  def sample(self, state, key, num, labels=None, sharding=None,
             progress: Callable[[int, int], None] | None = None):
    """Images [num, H, W, C] in [0, 1] from the configured sampler.

    Args:
      state: the train state (EMA parameters are used when present).
      key: randomness of the whole chain.
      num: number of images.
      labels: [num] class ids for a conditional model (default: 0, 1, 2, ...).
      sharding: optional sharding of the batch (e.g. over the 'data' axis).
      progress: called as progress(steps_done, steps_total) between chunks.
    """
    sampler, ts, t_prevs = self._plan()
    shape = (num, *self.space_shape)
    noise_key, chain_key = jax.random.split(key)
    cache_key = (shape, sharding)
    if cache_key not in self._noise_fns:
      self._noise_fns[cache_key] = jax.jit(
          lambda k: jax.random.normal(k, shape), out_shardings=sharding)
    x = self._noise_fns[cache_key](noise_key)
    y = base.class_labels(num, self.num_classes, labels, sharding)
    params, rest = self.eval_params(state), state.rest
    if sampler == "dpm_solver++":
      x = samplers.run_chain(self._dpm_chain(), samplers.SAMPLERS[sampler],
                             (params, rest, y), x, np.append(ts, t_prevs[-1]),
                             chain_key, self.config.sample.steps_per_call,
                             progress)
      return self.finish(params, rest, x, sharding)
    run = self._chunk_fn(sampler)
    chunk = max(1, self.config.sample.steps_per_call)
    for start in range(0, len(ts), chunk):
      x = run(params, rest, x, y, jnp.asarray(ts[start:start + chunk]),
              jnp.asarray(t_prevs[start:start + chunk]), chain_key)
      if progress is not None:
        x.block_until_ready()  # report work done, not work dispatched
        progress(min(start + chunk, len(ts)), len(ts))
    return self.finish(params, rest, x, sharding)

  def visualize(self, state, batch, key):
    del batch
    return {"samples": self.sample_grid(state, key)}
