"""Noise schedules of discrete-time diffusion and the forward-process math.

A `Schedule` holds the per-timestep constants of q(x_t | x_0) =
N(sqrt(abar_t) x_0, (1 - abar_t) I) and of the posterior q(x_{t-1} | x_t, x_0),
as float64 numpy (cast at use). Indexing follows the DDPM code: t = 0..T-1,
beta[t] = beta_{t+1} of the paper.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError


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


def at(values_T: np.ndarray, t_B: jax.Array) -> jax.Array:
  """values[t] broadcast over images -> [B, 1, 1, 1]."""
  return jnp.asarray(values_T, jnp.float32)[t_B][:, None, None, None]


def q_sample(sched: Schedule, x0_BHWC, t_B, eps_BHWC):
  """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)."""
  abar = at(sched.alphas_cumprod, t_B)
  return jnp.sqrt(abar) * x0_BHWC + jnp.sqrt(1.0 - abar) * eps_BHWC


def q_posterior(sched: Schedule, x0_BHWC, xt_BHWC, t_B):
  """Mean and log-variance of q(x_{t-1} | x_t, x_0)."""
  mean = (at(sched.posterior_mean_coef1, t_B) * x0_BHWC
          + at(sched.posterior_mean_coef2, t_B) * xt_BHWC)
  return mean, at(sched.posterior_log_variance_clipped, t_B)


def ddim_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
  """Trailing spacing: num_steps timesteps ending at T - 1, descending."""
  if not 1 <= num_steps <= num_timesteps:
    raise UserError(f"--num_steps={num_steps}: DDIM takes 1..{num_timesteps} "
                    "steps.")
  ts = np.round(np.arange(num_steps, 0, -1) * num_timesteps / num_steps) - 1
  return ts.astype(np.int32)


def logsnr_timesteps(alphas_cumprod: np.ndarray, num_steps: int
                     ) -> np.ndarray:
  """num_steps + 1 timesteps from T - 1 down to 0, evenly spaced in
  log-SNR (DPM-Solver's choice for pixel models), rounded to integers and
  kept at least one apart (so each step moves), descending."""
  t_count = len(alphas_cumprod)
  if not 1 <= num_steps < t_count:
    raise UserError(f"--num_steps={num_steps}: DPM-Solver++ takes "
                    f"1..{t_count - 1} steps.")
  log_snr = np.log(alphas_cumprod / (1.0 - alphas_cumprod))  # decreasing
  targets = np.linspace(log_snr[-1], log_snr[0], num_steps + 1)
  ts = np.round(np.interp(targets, log_snr[::-1],
                          np.arange(t_count - 1, -1, -1))).astype(np.int64)
  for i in range(num_steps - 1, -1, -1):
    ts[i] = max(ts[i], ts[i + 1] + 1)
  return ts.astype(np.int32)
