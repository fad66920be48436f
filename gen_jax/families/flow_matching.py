"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023).

The linear path x_t = (1 - t) x_0 + t eps, t in [0, 1], and a network that
predicts the velocity v = eps - x_0 under the plain squared error (the
conditional flow-matching loss). t is drawn uniform or logit-normal,
sigmoid(N(m, s^2)) (`model.time_sampling`; Esser et al. 2024, Stable
Diffusion 3). The network sees the time as 1000 t, the range of DDPM's
timesteps. Everything else (classes, samplers, the ODE likelihood) is the
shared base's, continuous.py.
"""

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.families import denoisers, register, samplers
from gen_jax.families.continuous import Continuous


@register("flow_matching")
class FlowMatching(Continuous):
  """Conditional flow matching on the linear path (rectified flow)."""

  title = "flow matching"
  default_steps = 50
  process = samplers.Process(alpha=lambda t: 1.0 - t, sigma=lambda t: t,
                             t_max=1.0, t_min=0.0, prior_std=1.0)

  def __init__(self, config, tokenizer=None):
    m = config.model
    if m.time_sampling not in ("uniform", "logit_normal"):
      raise UserError(f"--config.model.time_sampling: '{m.time_sampling}' "
                      "is not one of uniform, logit_normal.")
    if m.logit_std <= 0:
      raise UserError(f"--config.model.logit_std={m.logit_std}: must be "
                      "positive.")
    super().__init__(config, tokenizer)

  def predict(self, net, x_BHWC, t_B, y_B=None, guidance_scale=1.0,
              dropout_key=None):
    v = self.velocity(net, x_BHWC, t_B, y_B, guidance_scale, dropout_key)
    t = t_B[:, None, None, None]
    return x_BHWC - t * v, x_BHWC + (1.0 - t) * v

  def velocity(self, net, x_BHWC, t_B, y_B=None, guidance_scale=1.0,
               dropout_key=None):
    if dropout_key is not None:
      return net(x_BHWC, 1000.0 * t_B, y_B, dropout_key=dropout_key)
    return denoisers.guided(net, x_BHWC, 1000.0 * t_B, y_B, guidance_scale,
                            self.num_classes)

  def sample_times(self, key, num: int) -> jax.Array:
    m = self.config.model
    if m.time_sampling == "uniform":
      return jax.random.uniform(key, (num,))
    return jax.nn.sigmoid(m.logit_mean
                          + m.logit_std * jax.random.normal(key, (num,)))

  def objective(self, net, x0_BHWC, key, y_B, dropout_key):
    t_key, eps_key = jax.random.split(key)
    t = self.sample_times(t_key, x0_BHWC.shape[0])
    eps = jax.random.normal(eps_key, x0_BHWC.shape)
    return flow_matching_loss(
        lambda x, t: self.velocity(net, x, t, y_B, dropout_key=dropout_key),
        x0_BHWC, t, eps)

  def time_grid(self, num_steps):
    return np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float32)


def flow_matching_loss(velocity, x0_BHWC, t_B, eps_BHWC) -> jax.Array:
  """Per-example mean of (v(x_t, t) - (eps - x_0))^2 on the linear path."""
  t = t_B[:, None, None, None]
  x_t = (1.0 - t) * x0_BHWC + t * eps_BHWC
  return jnp.mean((velocity(x_t, t_B) - (eps_BHWC - x0_BHWC)) ** 2,
                  axis=(1, 2, 3))
