"""The shared base of the continuous-time diffusion families: flow matching
(flow_matching.py) and EDM (edm.py).

Both noise data x_0 (images scaled to [-1, 1]) as x_t = alpha(t) x_0 +
sigma(t) eps and learn to undo it with one network (a U-Net or a DiT,
`model.network`, see denoisers.py); they differ in the path, the time
distribution, the network's parameterization and the loss. Here is what they
share: class labels (label dropout to a null class, classifier-free
guidance), every sampler of `samplers.py` (`sample.sampler`,
`sample.num_steps`; 0 steps: the family's default), and, with
`eval.ode_rows > 0`, exact bits/dim through the probability-flow ODE in the
final eval on that many rows of each eval batch, with uniform
dequantization: the 8-bit value k becomes x = 2 (k + u) / 256 - 1,
u ~ U[0, 1), and -log P(k) <= -log p(x) - D log(2 / 256).
"""

import abc
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, denoisers, likelihoods, samplers

SAMPLERS = ("euler", "heun", "stochastic", "dpm_solver++", samplers.ADAPTIVE)
_ODE_MAX_STEPS = 2048  # steps of the likelihood's solve before it gives up


class Continuous(denoisers.DenoiserFamily):
  """What flow matching and EDM share: the network, classes or captions and
  guidance, latents, the samplers and the ODE likelihood."""

  supports_text = True

  process: samplers.Process
  title: str  # for messages
  default_steps: int  # sample.num_steps = 0 means this many

  def __init__(self, config, tokenizer=None):
    base.check_sizes(config, positive=("eval.ode_probes",),
                     nonnegative=("eval.ode_rows",))
    if not 0 < config.eval.ode_tolerance < 1:
      raise UserError(f"--config.eval.ode_tolerance="
                      f"{config.eval.ode_tolerance}: must be in (0, 1).")
    if config.eval.ode_trace not in ("auto", "exact", "hutchinson"):
      raise UserError(f"--config.eval.ode_trace: '{config.eval.ode_trace}' "
                      "is not one of auto, exact, hutchinson.")
    super().__init__(config, tokenizer)
    if self.latent and config.eval.ode_rows:
      raise UserError("--config.eval.ode_rows: the ODE likelihood is of "
                      "pixels; a latent model has none (set it to 0).")
    s = config.sample
    samplers.check(s.sampler, self.title, self.process, SAMPLERS)
    if s.num_steps < 0:
      raise UserError(f"--num_steps={s.num_steps}: must be >= 0 (0: the "
                      f"default, {self.default_steps}).")
    if s.sampler == samplers.ADAPTIVE and not 0 < s.tolerance < 1:
      raise UserError(f"--config.sample.tolerance={s.tolerance}: must be "
                      "in (0, 1).")
    self._chains: dict[str, Callable] = {}
    self._adaptive: dict[tuple, Callable] = {}
    self._noise_fns: dict[tuple, Callable] = {}
    self.last_sampling: dict[str, int | str] = {}

  @abc.abstractmethod
  def predict(self, net, x_BHWC, t_B, y_B=None, guidance_scale=1.0,
              dropout_key=None) -> tuple[jax.Array, jax.Array]:
    """(x_0 prediction, eps prediction) at (x_t, t)."""

  @abc.abstractmethod
  def objective(self, net, x0_BHWC, key, y_B, dropout_key) -> jax.Array:
    """The per-example training loss [B] on data in model space."""

  @abc.abstractmethod
  def time_grid(self, num_steps: int) -> np.ndarray:
    """num_steps + 1 times from t_max down to the data (sigma = 0)."""

  # --- training ------------------------------------------------------------

  def loss_terms(self, net, batch, key, training: bool) -> jax.Array:
    obj_key, label_key, flip_key, drop_key = jax.random.split(key, 4)
    image = batch["image"]
    if training and self.config.data.random_flip:
      flip = jax.random.bernoulli(flip_key, 0.5, (image.shape[0], 1, 1, 1))
      image = jnp.where(flip, image[:, :, ::-1], image)
    x0 = self.model_input(net, image)
    y = self.condition(batch, label_key, training)
    return self.objective(net, x0, obj_key, y,
                          drop_key if training else None)

  def loss(self, network, batch, key):
    return jnp.mean(self.loss_terms(network, batch, key, True)), {}

  # --- evaluation ------------------------------------------------------------

  def denoiser(self, net, y_B, guidance_scale: float) -> samplers.Denoiser:
    def denoise(x, t):
      t_B = jnp.full((x.shape[0],), t, jnp.float32)
      return self.predict(net, x, t_B, y_B, guidance_scale)
    return denoise

  def ode_bits_per_dim(self, net, image_BHWC, y_B, key):
    """(bits/dim [B] by the probability-flow ODE with uniform
    dequantization, network evaluations)."""
    e = self.config.eval
    u_key, probe_key = jax.random.split(key)
    x = 2.0 * (image_BHWC.astype(jnp.float32) + jax.random.uniform(
        u_key, image_BHWC.shape)) / 256.0 - 1.0
    exact = e.ode_trace == "exact" or (e.ode_trace == "auto"
                                       and self.num_dims <= 16)
    logp, evals, steps = samplers.log_likelihood(
        self.process, self.denoiser(net, y_B, 1.0), x, probe_key,
        exact_trace=exact, num_probes=e.ode_probes, rtol=e.ode_tolerance,
        atol=e.ode_tolerance, max_steps=_ODE_MAX_STEPS)
    nll = -(logp + self.num_dims * math.log(2.0 / 256.0))
    # A solve that ran out of steps has no answer: NaN, never a wrong number.
    nll = jnp.where(steps < _ODE_MAX_STEPS, nll, jnp.nan)
    return likelihoods.bits_per_dim(nll, self.num_dims), evals

  def eval_step(self, state, batch, key, final=False):
    loss_key, ode_key = jax.random.split(key)
    net = self.inference_network(state)
    out = {"loss": base.masked_sum(
        self.loss_terms(net, batch, loss_key, False), batch),
           "count": base.count(batch)}
    rows = min(self.config.eval.ode_rows, batch["image"].shape[0])
    if final and rows:
      part = {k: v[:rows] for k, v in batch.items()}
      y = self.condition(part, None, False)
      bpd, evals = self.ode_bits_per_dim(net, part["image"], y, ode_key)
      count = base.count(part)
      out.update(ode_bits_per_dim=base.masked_sum(bpd, part),
                 ode_count=count, ode_evaluations=evals * count)
    return out

  def score(self, state, batch, key, final=False):
    del final  # the solver's tolerance and probes are eval's settings
    self.check_scorable()
    net = self.inference_network(state)
    bpd, _ = self.ode_bits_per_dim(net, batch["image"],
                                   self.condition(batch, None, False), key)
    nll = bpd * (self.num_dims * likelihoods.LOG2)
    return {"nll": nll, "dims": jnp.full(nll.shape, float(self.num_dims))}

  def score_notes(self, final=False):
    self.check_scorable()  # refused before any work
    e = self.config.eval
    trace = ("exact trace" if e.ode_trace == "exact" or (
        e.ode_trace == "auto" and self.num_dims <= 16)
             else f"Hutchinson trace estimate, {e.ode_probes} probe(s)")
    return {"nll": "estimate: -log p of the 8-bit image by the probability-"
                   "flow ODE (exact change of variables up to the solver's "
                   "tolerance "
                   f"{e.ode_tolerance:g} and the {trace}; uniform "
                   "dequantization, one draw); NaN if the solver ran out of "
                   "steps"}

  def summarize_eval(self, totals):
    totals = dict(totals)
    ode_count = totals.pop("ode_count", None)
    result = super().summarize_eval(
        {k: v for k, v in totals.items() if not k.startswith("ode_")})
    if ode_count:
      result["ode_bits_per_dim"] = totals["ode_bits_per_dim"] / ode_count
      result["ode_evaluations"] = totals["ode_evaluations"] / ode_count
    return result

  # --- sampling --------------------------------------------------------------

  def _condition_for_sampling(self, num, labels, prompts, sharding):
    """The condition of `num` samples: class ids, or caption ids (from
    `prompts` cycled, else the captions 'a <digit>' of the class ids)."""
    if not self.text:
      return base.class_labels(num, self.num_classes, labels, sharding)
    y = base.class_labels(num, self.num_classes, labels)
    if prompts is None:
      if y is None:
        prompts = self.config.sample.prompts
      else:
        prompts = [self.tokenizer.class_prompt(c) for c in np.asarray(y)]
    ids = self.prompt_ids([prompts[i % len(prompts)] for i in range(num)])
    # A compiled call: one global array on any number of processes.
    return jax.jit(lambda: jnp.asarray(ids), out_shardings=sharding)()

  def sample(self, state, key, num, labels=None, sharding=None,
             progress: Callable[[int, int], None] | None = None,
             prompts: list[str] | None = None,
             guidance_scale: float | None = None):
    """Images [num, H, W, C] in [0, 1] from the configured sampler (see
    Family.sample); a captioned model draws for `prompts` (cycled over the
    samples) at `guidance_scale` (default: sample.guidance_scale).
    `last_sampling` records the sampler's steps and evaluations."""
    s = self.config.sample
    scale = s.guidance_scale if guidance_scale is None else guidance_scale
    noise_key, chain_key = jax.random.split(key)
    shape = (num, *self.space_shape)
    if (shape, sharding) not in self._noise_fns:
      self._noise_fns[shape, sharding] = jax.jit(
          lambda k: self.process.prior_std * jax.random.normal(k, shape),
          out_shardings=sharding)
    x = self._noise_fns[shape, sharding](noise_key)
    y = self._condition_for_sampling(num, labels, prompts, sharding)
    args = (self.eval_params(state), state.rest, y)

    def make_denoiser(params, rest, y):
      return self.denoiser(self.network(params, rest), y, scale)
    if s.sampler == samplers.ADAPTIVE:
      if (shape, scale) not in self._adaptive:
        self._adaptive[shape, scale] = jax.jit(
            lambda args, x: samplers.solve_adaptive(
                self.process, make_denoiser(*args), x, s.tolerance,
                s.tolerance, s.max_steps))
      x, evals, steps = self._adaptive[shape, scale](args, x)
      steps = int(steps)
      if steps >= s.max_steps:
        raise UserError(f"The adaptive sampler took --config.sample."
                        f"max_steps={s.max_steps} steps without reaching the "
                        "data; raise it or loosen --config.sample.tolerance.")
      evals = int(evals)
      if progress is not None:
        progress(1, 1)
    else:
      steps = s.num_steps or self.default_steps
      sampler = samplers.SAMPLERS[s.sampler]
      if (s.sampler, scale) not in self._chains:
        options = samplers.Options(
            num_steps=steps, churn=s.get("churn", 0.0),
            churn_tmin=s.get("churn_tmin", 0.0),
            churn_tmax=s.get("churn_tmax", float("inf")),
            s_noise=s.get("s_noise", 1.0))
        self._chains[s.sampler, scale] = samplers.make_chain(
            sampler, self.process, make_denoiser, options)
      x = samplers.run_chain(self._chains[s.sampler, scale], sampler, args, x,
                             self.time_grid(steps), chain_key,
                             s.steps_per_call, progress)
      evals = sampler.evaluations(steps)
    self.last_sampling = {"sampler": s.sampler, "steps": steps,
                          "evaluations": evals}
    if progress is not None and jax.process_index() == 0:
      print(f"{s.sampler}: {steps} steps, {evals} network evaluations per "
            "image", flush=True)
    return self.finish(args[0], args[1], x, sharding)

  def prompt_grids(self, state, key, prompts, per_prompt: int,
                   guidance_scale: float | None = None) -> np.ndarray:
    """[len(prompts), per_prompt, H, W, C]: samples of each prompt."""
    rows = [p for p in prompts for _ in range(per_prompt)]
    images = np.asarray(self.sample(state, key, len(rows), prompts=rows,
                                    guidance_scale=guidance_scale))
    return images.reshape(len(prompts), per_prompt, *images.shape[1:])

  def visualize(self, state, batch, key):
    """The sample grid; a captioned model: one row per prompt of
    `sample.prompts`, each labelled with its prompt, and a grid of each
    prompt."""
    del batch
    if not self.text:
      return {"samples": self.sample_grid(state, key)}
    prompts = list(self.config.sample.prompts)
    per = max(1, self.config.eval.num_samples // len(prompts))
    images = self.prompt_grids(state, key, prompts, per)
    grid = grids.make_grid(images.reshape(-1, *images.shape[2:]), per)
    out = {"samples": grids.label_rows(grid, prompts, images.shape[2])}
    for i, (prompt, row) in enumerate(zip(prompts, images)):
      slug = "".join(ch if ch.isalnum() else "_" for ch in prompt)[:40]
      out[f"prompt{i}_{slug}"] = grids.make_grid(row, min(per, 8))
    return out
