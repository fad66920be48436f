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

Samplers: ancestral ('ddpm', the full chain of T steps) and DDIM ('ddim', any
number of steps, trailing timesteps, stochasticity eta). Both clip the x_0
prediction to [-1, 1].

Likelihood: the variational bound of the DDPM paper in bits/dim, with the
discretized Gaussian decoder at t = 0, so it is a bound on the NLL of the
discrete 8-bit data. Its sum over t = 1..T-1 is estimated without bias by
stratified sampling of `eval.vlb_timesteps` timesteps per image (exact when
that equals T - 1); the prior term and the decoder term are exact.

Indexing follows the DDPM code: t = 0..T-1, beta[t] = beta_{t+1} of the paper.
"""

import dataclasses
import math
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax import optim
from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, register
from gen_jax.models import unet

LOG2 = math.log(2.0)


# --- the forward process --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Per-timestep constants, float64 numpy (cast at use)."""
  betas: np.ndarray  # [T]
  alphas_cumprod: np.ndarray  # [T] abar_t
  alphas_cumprod_prev: np.ndarray  # [T] abar_{t-1}, abar_{-1} = 1
  posterior_variance: np.ndarray  # [T] beta-tilde
  posterior_log_variance_clipped: np.ndarray  # [T]
  posterior_mean_coef1: np.ndarray  # [T] multiplies x_0
  posterior_mean_coef2: np.ndarray  # [T] multiplies x_t

  @property
  def num_timesteps(self) -> int:
    return len(self.betas)


def make_betas(name: str, num_timesteps: int, beta_start: float = 1e-4,
               beta_end: float = 0.02) -> np.ndarray:
  """'linear' (DDPM) or 'cosine' (Nichol & Dhariwal, s = 0.008) betas."""
  if name == "linear":
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
  if name == "cosine":
    s = 0.008
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)
  raise UserError(f"--config.model.schedule: '{name}' is not one of "
                  "linear, cosine.")


def make_schedule(betas: np.ndarray) -> Schedule:
  alphas_cumprod = np.cumprod(1.0 - betas)
  prev = np.append(1.0, alphas_cumprod[:-1])
  post_var = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
  return Schedule(
      betas=betas,
      alphas_cumprod=alphas_cumprod,
      alphas_cumprod_prev=prev,
      posterior_variance=post_var,
      # beta-tilde_0 = 0: the DDPM code clips its log at beta-tilde_1.
      posterior_log_variance_clipped=np.log(np.append(post_var[1],
                                                      post_var[1:])),
      posterior_mean_coef1=betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
      posterior_mean_coef2=(1.0 - prev) * np.sqrt(1.0 - betas)
      / (1.0 - alphas_cumprod),
  )


def _at(values_T: np.ndarray, t_B: jax.Array) -> jax.Array:
  """values[t] broadcast over images -> [B, 1, 1, 1]."""
  return jnp.asarray(values_T, jnp.float32)[t_B][:, None, None, None]


def q_sample(sched: Schedule, x0_BHWC, t_B, eps_BHWC):
  """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
  abar = _at(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * x0_BHWC + jnp.sqrt(1.0 - abar) * eps_BHWC


def q_posterior(sched: Schedule, x0_BHWC, xt_BHWC, t_B):
  """Mean and log-variance of q(x_{t-1} | x_t, x_0)."""
  mean = (_at(sched.posterior_mean_coef1, t_B) * x0_BHWC
          + _at(sched.posterior_mean_coef2, t_B) * xt_BHWC)
  return mean, _at(sched.posterior_log_variance_clipped, t_B)


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise (nats)."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def discretized_gaussian_log_likelihood(x_BHWC, mean_BHWC, log_scale_BHWC):
  """log P(x) of 8-bit data in [-1, 1] (bins of width 2/255; the edge bins
  extend to +-infinity) under N(mean, exp(log_scale)^2), elementwise."""
  centered = x_BHWC - mean_BHWC
  inv_std = jnp.exp(-log_scale_BHWC)
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
  return jnp.where(x_BHWC < -0.999, log_cdf_upper,
                   jnp.where(x_BHWC > 0.999, log_sf_lower, mid))


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """Trailing spacing: num_steps timesteps ending at T - 1, descending."""
  if not 1 <= num_steps <= num_timesteps:
    raise UserError(f"--num_steps={num_steps}: DDIM takes 1..{num_timesteps} "
                    "steps.")
  ts = np.round(np.arange(num_steps, 0, -1) * num_timesteps / num_steps) - 1
  return ts.astype(np.int32)


# --- the family -----------------------------------------------------------


@register("diffusion")
class Diffusion(base.Family):
  """DDPM/DDIM with a U-Net denoiser; optional classes and guidance."""

  def __init__(self, config):
    super().__init__(config)
    m = config.model
    if m.prediction not in ("eps", "v"):
      raise UserError(f"--config.model.prediction: '{m.prediction}' is not "
                      "one of eps, v.")
    if m.variance not in ("fixed_large", "fixed_small"):
      raise UserError(f"--config.model.variance: '{m.variance}' is not one "
                      "of fixed_large, fixed_small.")
    self.sched = make_schedule(make_betas(m.schedule, m.num_timesteps,
                                          m.beta_start, m.beta_end))
    # Variance of p(x_{t-1} | x_t): beta_t ('fixed_large', DDPM's CIFAR-10
    # choice; beta-tilde_1 at t = 0) or beta-tilde_t ('fixed_small').
    if m.variance == "fixed_large":
      self.model_log_variance = np.log(np.append(
          self.sched.posterior_variance[1], self.sched.betas[1:]))
    else:
      self.model_log_variance = self.sched.posterior_log_variance_clipped
    self.num_classes = m.num_classes
    self.unet_cfg = unet.UNetConfig(
        image_shape=tuple(config.data.image_shape),
        channels=m.channels,
        channel_mults=tuple(m.channel_mults),
        num_res_blocks=m.num_res_blocks,
        attention_resolutions=tuple(m.attention_resolutions),
        dropout=m.dropout,
        num_groups=m.num_groups,
        num_classes=m.num_classes,
        patch_size=m.patch_size,
        dtype=config.train.dtype,
    )
    self.optimizer = optim.make_optimizer(config.train)
    abstract = nnx.eval_shape(lambda: unet.UNet(self.unet_cfg,
                                                rngs=nnx.Rngs(0)))
    self.graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    self.num_dims = int(np.prod(config.data.image_shape))
    self._plan()  # a bad sampler setting fails here, before any work
    self._chunk_fns: dict[tuple, Callable] = {}
    self._noise_fns: dict[tuple, Callable] = {}

  # --- model plumbing ------------------------------------------------------

  def init(self, key, batch):
    del batch
    model = unet.UNet(self.unet_cfg, rngs=nnx.Rngs(key))
    return base.new_train_state(model, self.optimizer,
                                self.config.train.ema_decay)

  def _net(self, params, rest) -> unet.UNet:
    return nnx.merge(self.graphdef, params, rest)

  @staticmethod
  def to_model_space(image_BHWC: jax.Array) -> jax.Array:
    return image_BHWC.astype(jnp.float32) / 127.5 - 1.0

  def predict(self, net, x_BHWC, t_B, y_B=None, guidance_scale: float = 1.0):
    """(eps, x_0) predicted at (x_t, t), with classifier-free guidance."""
    if self.num_classes and guidance_scale != 1.0:
      null = jnp.full_like(y_B, self.num_classes)
      out = net(jnp.concatenate([x_BHWC, x_BHWC]), jnp.concatenate([t_B, t_B]),
                jnp.concatenate([y_B, null]))
      out_c, out_u = jnp.split(out, 2)
      out = out_u + guidance_scale * (out_c - out_u)
    else:
      out = net(x_BHWC, t_B, y_B)
    abar = _at(self.sched.alphas_cumprod, t_B)
    if self.config.model.prediction == "eps":
      eps = out
      x0 = (x_BHWC - jnp.sqrt(1.0 - abar) * eps) / jnp.sqrt(abar)
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x_0
      x0 = jnp.sqrt(abar) * x_BHWC - jnp.sqrt(1.0 - abar) * out
      eps = jnp.sqrt(1.0 - abar) * x_BHWC + jnp.sqrt(abar) * out
    return eps, x0

  # --- training ------------------------------------------------------------

  def loss_terms(self, params, rest, batch, key, training: bool):
    """Simple loss: per-example mean squared error of the prediction -> [B]."""
    t_key, eps_key, drop_key, label_key, flip_key = jax.random.split(key, 5)
    x0 = self.to_model_space(batch["image"])
    b = x0.shape[0]
    if training and self.config.data.random_flip:
      flip = jax.random.bernoulli(flip_key, 0.5, (b, 1, 1, 1))
      x0 = jnp.where(flip, x0[:, :, ::-1], x0)
    t = jax.random.randint(t_key, (b,), 0, self.sched.num_timesteps)
    eps = jax.random.normal(eps_key, x0.shape)
    xt = q_sample(self.sched, x0, t, eps)
    y = None
    if self.num_classes:
      y = batch["label"].astype(jnp.int32)
      if training and self.config.model.label_dropout > 0:
        drop = jax.random.bernoulli(label_key, self.config.model.label_dropout,
                                    (b,))
        y = jnp.where(drop, self.num_classes, y)
    net = self._net(params, rest)
    out = net(xt, t, y, dropout_key=drop_key if training else None)
    if self.config.model.prediction == "eps":
      target = eps
    else:
      abar = _at(self.sched.alphas_cumprod, t)
      target = jnp.sqrt(abar) * eps - jnp.sqrt(1.0 - abar) * x0
    return jnp.mean((out - target) ** 2, axis=(1, 2, 3))

  def train_step(self, state, batch, key):
    def loss_fn(params):
      return jnp.mean(self.loss_terms(params, state.rest, batch, key, True))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = base.apply_gradients(state, grads, self.optimizer,
                                 self.config.train.ema_decay)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  # --- the variational bound -------------------------------------------------

  def vlb_term(self, net, x0_BHWC, t_B, key, y_B=None) -> jax.Array:
    """L_t per example (nats): KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for
    t > 0, the discretized decoder NLL -log p(x_0 | x_1) for t = 0."""
    eps = jax.random.normal(key, x0_BHWC.shape)
    xt = q_sample(self.sched, x0_BHWC, t_B, eps)
    true_mean, true_logvar = q_posterior(self.sched, x0_BHWC, xt, t_B)
    _, x0_pred = self.predict(net, xt, t_B, y_B)
    x0_pred = jnp.clip(x0_pred, -1.0, 1.0)
    model_mean, _ = q_posterior(self.sched, x0_pred, xt, t_B)
    model_logvar = _at(self.model_log_variance, t_B)
    kl = jnp.sum(normal_kl(true_mean, true_logvar, model_mean, model_logvar),
                 axis=(1, 2, 3))
    nll = -jnp.sum(discretized_gaussian_log_likelihood(
        x0_BHWC, model_mean, 0.5 * model_logvar), axis=(1, 2, 3))
    return jnp.where(t_B == 0, nll, kl)

  def prior_kl(self, x0_BHWC) -> jax.Array:
    """KL(q(x_T | x_0) || N(0, I)) per example (nats)."""
    abar = self.sched.alphas_cumprod[-1]
    mean = math.sqrt(abar) * x0_BHWC
    logvar = jnp.full_like(x0_BHWC, math.log(1.0 - abar))
    return jnp.sum(normal_kl(mean, logvar, jnp.zeros_like(mean),
                             jnp.zeros_like(mean)), axis=(1, 2, 3))

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
    params = self.eval_params(state)
    net = self._net(params, state.rest)
    x0 = self.to_model_space(batch["image"])
    y = batch["label"].astype(jnp.int32) if self.num_classes else None
    k = (self.config.eval.vlb_timesteps if final
         else self.config.eval.periodic_vlb_timesteps)
    nll = self.vlb(net, x0, vlb_key, k, y)
    return {
        "loss": base.masked_sum(
            self.loss_terms(params, state.rest, batch, loss_key, False), batch),
        "vlb_bits_per_dim": base.masked_sum(nll / (self.num_dims * LOG2),
                                            batch),
        "count": base.count(batch),
    }

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
      ts = ddim_timesteps(t_count, s.num_steps or t_count)
    else:
      raise UserError(f"--sampler={s.sampler}: not one of ddpm, ddim.")
    return s.sampler, ts, np.append(ts[1:], -1).astype(np.int32)

  def _step(self, sampler, net, x, t, t_prev, y, key):
    """One reverse step from timestep t to t_prev (-1: the data)."""
    s = self.config.sample
    b = x.shape[0]
    t_B = jnp.full((b,), t, jnp.int32)
    eps, x0 = self.predict(net, x, t_B, y, s.guidance_scale)
    abar = _at(self.sched.alphas_cumprod, t_B)
    if s.clip_denoised:
      x0 = jnp.clip(x0, -1.0, 1.0)
      eps = (x - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)
    noise = jax.random.normal(key, x.shape)
    if sampler == "ddpm":
      mean, _ = q_posterior(self.sched, x0, x, t_B)
      std = jnp.exp(0.5 * _at(self.model_log_variance, t_B))
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
        net = self._net(params, rest)

        def body(x, inputs):
          t, t_prev = inputs
          return self._step(sampler, net, x, t, t_prev, y,
                            jax.random.fold_in(key, t)), None
        x, _ = jax.lax.scan(body, x, (ts, t_prevs))
        return x
      self._chunk_fns[sampler] = jax.jit(run, donate_argnums=2)
    return self._chunk_fns[sampler]

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
    shape = (num, *self.config.data.image_shape)
    noise_key, chain_key = jax.random.split(key)
    cache_key = (shape, sharding)
    if cache_key not in self._noise_fns:
      self._noise_fns[cache_key] = jax.jit(
          lambda k: jax.random.normal(k, shape), out_shardings=sharding)
    x = self._noise_fns[cache_key](noise_key)
    y = None
    if self.num_classes:
      if labels is None:
        labels = np.arange(num) % self.num_classes
      labels = np.asarray(labels, np.int32)
      # Built by a compiled call, so it is one global array on any number of
      # processes (every process passes the same labels).
      y = jax.jit(lambda: jnp.asarray(labels), out_shardings=sharding)()
    params, rest = self.eval_params(state), state.rest
    run = self._chunk_fn(sampler)
    chunk = max(1, self.config.sample.steps_per_call)
    for start in range(0, len(ts), chunk):
      x = run(params, rest, x, y, jnp.asarray(ts[start:start + chunk]),
              jnp.asarray(t_prevs[start:start + chunk]), chain_key)
      if progress is not None:
        x.block_until_ready()  # report work done, not work dispatched
        progress(min(start + chunk, len(ts)), len(ts))
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

  def visualize(self, state, batch, key):
    del batch
    n = self.config.eval.num_samples
    if self.num_classes:  # one row per class
      per_class = max(1, n // self.num_classes)
      labels = np.repeat(np.arange(self.num_classes), per_class)
      images = self.sample(state, key, len(labels), labels)
      return {"samples": grids.make_grid(np.asarray(images), per_class)}
    images = self.sample(state, key, n)
    return {"samples": grids.make_grid(np.asarray(images))}
