"""EDM: the design space of Karras et al. (2022).

alpha = 1 and sigma = t, with the network F wrapped in the preconditioning
D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (c_skip = s_d^2 /
(sigma^2 + s_d^2), c_out = sigma s_d / sqrt(sigma^2 + s_d^2), c_in =
1 / sqrt(sigma^2 + s_d^2), c_noise = ln(sigma) / 4), ln sigma ~
N(P_mean, P_std^2) in training and the loss weight lambda(sigma) =
(sigma^2 + s_d^2) / (sigma s_d)^2, which makes the loss the unit-weighted
squared error of F against its effective target. Sampling runs on Karras'
sigma spacing with exponent rho; Heun's 18 steps are 35 network evaluations.
Everything else (classes, samplers, the ODE likelihood) is the shared
base's, continuous.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.families import denoisers, register, samplers
from gen_jax.families.continuous import Continuous


@register("edm")
class EDM(Continuous):
  """Karras et al.'s preconditioned denoiser, loss and samplers."""

  title = "EDM"
  default_steps = 18

  def __init__(self, config, tokenizer=None):
    m = config.model
    if not 0 < m.sigma_min < m.sigma_max:
      raise UserError(f"--config.model.sigma_min={m.sigma_min}, sigma_max="
                      f"{m.sigma_max}: need 0 < sigma_min < sigma_max.")
    for key in ("sigma_data", "p_std"):
      if m[key] <= 0:
        raise UserError(f"--config.model.{key}={m[key]}: must be positive.")
    if config.sample.rho <= 0:
      raise UserError(f"--config.sample.rho={config.sample.rho}: must be "
                      "positive.")
    self.process = samplers.Process(
        alpha=jnp.ones_like, sigma=lambda t: t, t_max=float(m.sigma_max),
        t_min=float(m.sigma_min),
        prior_std=math.sqrt(m.sigma_max**2 + m.sigma_data**2),
        variance_exploding=True)
    super().__init__(config, tokenizer)

  def denoise(self, net, x_BHWC, sigma_B, y_B=None, guidance_scale=1.0,
              dropout_key=None):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)."""
    c_skip, c_out, c_in, c_noise = preconditioning(
        sigma_B, self.config.model.sigma_data)
    x_in = c_in[:, None, None, None] * x_BHWC
    if dropout_key is not None:
      f = net(x_in, c_noise, y_B, dropout_key=dropout_key)
    else:
      f = denoisers.guided(net, x_in, c_noise, y_B, guidance_scale,
                           self.null_condition(y_B))
    return (c_skip[:, None, None, None] * x_BHWC
            + c_out[:, None, None, None] * f)

  def predict(self, net, x_BHWC, t_B, y_B=None, guidance_scale=1.0,
              dropout_key=None):
    d = self.denoise(net, x_BHWC, t_B, y_B, guidance_scale, dropout_key)
    return d, (x_BHWC - d) / t_B[:, None, None, None]

  def objective(self, net, x0_BHWC, key, y_B, dropout_key):
    m = self.config.model
    s_key, n_key = jax.random.split(key)
    b = x0_BHWC.shape[0]
    sigma = jnp.exp(m.p_mean + m.p_std * jax.random.normal(s_key, (b,)))
    noise = jax.random.normal(n_key, x0_BHWC.shape)
    return edm_loss(
        lambda x, s: self.denoise(net, x, s, y_B, dropout_key=dropout_key),
        x0_BHWC, sigma, noise, m.sigma_data)

  def time_grid(self, num_steps):
    m = self.config.model
    return karras_sigmas(num_steps, m.sigma_min, m.sigma_max,
                         self.config.sample.rho)


def preconditioning(sigma, sigma_data: float):
  """EDM's (c_skip, c_out, c_in, c_noise) at noise level sigma."""
  total = sigma**2 + sigma_data**2
  return (sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total),
          1.0 / jnp.sqrt(total), jnp.log(sigma) / 4.0)


def edm_loss(denoise, x0_BHWC, sigma_B, noise_BHWC, sigma_data: float):
  """Per-example mean of lambda(sigma) (D(x_0 + sigma n; sigma) - x_0)^2."""
  weight = (sigma_B**2 + sigma_data**2) / (sigma_B * sigma_data) ** 2
  d = denoise(x0_BHWC + sigma_B[:, None, None, None] * noise_BHWC, sigma_B)
  return weight * jnp.mean((d - x0_BHWC) ** 2, axis=(1, 2, 3))


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float,
                  rho: float) -> np.ndarray:
  """sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho
  for i < N, then 0: N steps ending at the data."""
  i = np.arange(num_steps, dtype=np.float64) / max(num_steps - 1, 1)
  inv = 1.0 / rho
  sigmas = (sigma_max**inv + i * (sigma_min**inv - sigma_max**inv)) ** rho
  return np.append(sigmas, 0.0).astype(np.float32)
