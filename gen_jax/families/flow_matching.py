"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023).

The linear path x_t = (1 - t) x_0 + t eps, t in [0, 1], and a network that
predicts the velocity v = eps - x_0 under the plain squared error (the
conditional flow-matching loss). t is drawn uniform or logit-normal,
sigmoid(N(m, s^2)) (`model.time_sampling`; Esser et al. 2024, Stable
Diffusion 3). The network sees the time as 1000 t, the range of DDPM's
timesteps. Everything else (classes, samplers, the ODE likelihood) is the
shared base's, continuous.py.

Reflow (Liu et al. 2023): with `model.reflow_from` naming the workdir of a
trained flow-matching run of the same network, training starts from that
run's weights (its EMA when kept) and learns straight paths between noise z
and the *teacher's own sample* from z, x_1 = ODE(z) (drawn in the loss with
`model.reflow_sampler` at `model.reflow_steps`; the teacher is a frozen copy
kept in the state), in place of independent (data, noise) pairs; the
student's paths straighten, so few Euler steps suffice. The paper draws its
pairs once, ahead of training; drawing them in the loss costs the teacher's
evaluations per step but needs no storage and never reuses a pair.
"""

import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import checkpointing
from gen_jax.errors import UserError
from gen_jax.families import denoisers, register, samplers
from gen_jax.families.continuous import Continuous

# Keys of `model` that may differ between a reflow run and its teacher.
_OBJECTIVE_KEYS = ("time_sampling", "logit_mean", "logit_std", "label_dropout",
                   "reflow_from", "reflow_sampler", "reflow_steps",
                   "reflow_tolerance")


class ReflowPair(nnx.Module):
  """The network being trained and the frozen teacher whose samples it
  learns to reach in a straight line; calls go to the student."""

  def __init__(self, student: nnx.Module, teacher: nnx.Module):
    self.student = student
    self.teacher = teacher

  def __call__(self, *args, **kwargs):
    return self.student(*args, **kwargs)


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
    self.reflow_from = m.get("reflow_from", "")
    if self.reflow_from:
      if "autoencoder" in config or config.data.get("captions", ""):
        raise UserError("--config.model.reflow_from: reflow trains on pixels "
                        "with class labels, not on latents or captions.")
      self._check_teacher(config)
      self.trainable = nnx.All(nnx.Param, nnx.PathContains("student"))
    super().__init__(config, tokenizer)

  def _check_teacher(self, config) -> None:
    """Refuses, in one line, a reflow teacher that cannot serve."""
    m = config.model
    samplers.check(m.reflow_sampler, "the reflow teacher", self.process,
                   ("euler", "heun", "dpm_solver++", samplers.ADAPTIVE))
    if m.reflow_steps < 1 or not 0 < m.reflow_tolerance < 1:
      raise UserError(f"--config.model.reflow_steps={m.reflow_steps}, "
                      f"reflow_tolerance={m.reflow_tolerance}: need >= 1 "
                      "steps and a tolerance in (0, 1).")
    path = pathlib.Path(self.reflow_from) / "config.json"
    if not path.is_file():
      raise UserError(f"--config.model.reflow_from={self.reflow_from}: no "
                      "trained run there (no config.json).")
    saved = json.loads(path.read_text())
    ours = {k: v for k, v in config.model.to_dict().items()
            if k not in _OBJECTIVE_KEYS}
    theirs = {k: v for k, v in saved.get("model", {}).items()
              if k not in _OBJECTIVE_KEYS}
    ours = json.loads(json.dumps(ours, default=list))
    if saved.get("family") != "flow_matching" or ours != theirs:
      diff = sorted(k for k in set(ours) | set(theirs)
                    if ours.get(k) != theirs.get(k))
      raise UserError(f"--config.model.reflow_from={self.reflow_from} holds "
                      f"a '{saved.get('family')}' run whose network differs "
                      f"({', '.join(diff) or 'family'}); reflow needs a "
                      "flow-matching run of the same network.")

  def build_network(self, rngs):
    network = super().build_network(rngs)
    if not self.reflow_from:
      return network
    return ReflowPair(network, super().build_network(rngs))

  def warm_start(self, state, batch):
    """Student and teacher from the teacher run's weights (EMA if kept)."""
    if not self.reflow_from:
      return super().warm_start(state, batch)
    saved = checkpointing.load_state(self.reflow_from)
    which = "ema_params" if saved.get("ema_params") else "params"
    abstract = nnx.state(nnx.eval_shape(
        lambda: denoisers.build(self.config, nnx.Rngs(0))), nnx.Param)
    try:
      weights = checkpointing.restore_into(abstract, saved[which])
    except (KeyError, IndexError, TypeError) as e:
      raise UserError(f"The checkpoint in {self.reflow_from} does not match "
                      f"its config.json ({e!r}).") from e
    model = self.host_network(state)
    nnx.update(model.student, weights)
    nnx.update(model.teacher, weights)
    return self.with_network(state, model)

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
                            self.null_condition(y_B))

  def sample_times(self, key, num: int) -> jax.Array:
    m = self.config.model
    if m.time_sampling == "uniform":
      return jax.random.uniform(key, (num,))
    return jax.nn.sigmoid(m.logit_mean
                          + m.logit_std * jax.random.normal(key, (num,)))

  def teacher_sample(self, teacher, z_BHWC, y_B, key) -> jax.Array:
    """The frozen teacher's sample from noise z (the reflow pair's end)."""
    m = self.config.model
    x1 = samplers.integrate(
        m.reflow_sampler, self.process, self.denoiser(teacher, y_B, 1.0),
        z_BHWC, self.time_grid(m.reflow_steps), key,
        samplers.Options(num_steps=m.reflow_steps), m.reflow_tolerance)
    return jax.lax.stop_gradient(x1)

  def objective(self, net, x0_BHWC, key, y_B, dropout_key):
    t_key, eps_key, teacher_key = jax.random.split(key, 3)
    t = self.sample_times(t_key, x0_BHWC.shape[0])
    eps = jax.random.normal(eps_key, x0_BHWC.shape)
    if self.reflow_from:  # the pair (teacher's sample, its noise)
      x0_BHWC = self.teacher_sample(net.teacher, eps, y_B, teacher_key)
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
