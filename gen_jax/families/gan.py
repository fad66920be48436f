"""Generative adversarial networks: DCGAN, WGAN-GP, SNGAN, conditional GANs.

One train step of the trainer is one generator update, preceded by
`model.n_critic` discriminator (critic) updates that run inside the step as
straight-line code (a Python loop, unrolled when traced). The step's batch
holds the real examples of all of them: each critic update sees
`data.batch_size / n_critic` of its rows; the generator update draws that many
latents.

Losses (`model.loss`), with D the discriminator's logit / critic value:
  'non_saturating' (Goodfellow et al., 2014; DCGAN):
      L_D = softplus(-D(x)) + softplus(D(G(z))),  L_G = softplus(-D(G(z)))
  'wgan_gp' (Gulrajani et al., 2017):
      L_D = D(G(z)) - D(x) + lambda (||grad D(x_hat)||_2 - 1)^2,
      x_hat = e x + (1 - e) G(z), e ~ U[0, 1];      L_G = -D(G(z))
  'hinge' (Lim & Ye, 2017; SNGAN, Miyato et al., 2018):
      L_D = relu(1 - D(x)) + relu(1 + D(G(z))),    L_G = -D(G(z))

Both networks live in one state with one optimizer each. The generator keeps
an EMA of its weights for sampling when `train.ema_decay > 0` (decay warmed
up as in the diffusion family). Spectral
normalization's power-iteration vectors are model state (not parameters); every
discriminator forward pass advances them, as in the reference
implementations. Images are scaled to [-1, 1]; vector data (the 2-D mixtures)
is used as is. Conditional GANs feed the real batch's labels to the generator
(conditional batch norm) and to a projection discriminator.

The generator's batch norms train with batch statistics and sample with
standing statistics (as BigGAN does, Brock et al., 2019): the sampling weights
(the EMA when kept) run in training mode on `sample.standing_stats_batches`
batches of fresh latents (and random labels), each batch norm's batch mean and
variance are averaged over those batches, and samples are normalized with the
averages, so each sample depends on its own latent (and label) alone. The
latents come from a key fixed by `config.seed`, so the statistics depend on
the weights alone; they are kept for the last state seen, so the `sample`
calls of one evaluation compute them once.
"""

import weakref

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax import optim
from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, register
from gen_jax.models import gan_nets
from gen_jax.models import layers

LOSSES = ("non_saturating", "wgan_gp", "hinge")
# Folded into jax.random.key(config.seed) for the standing-statistics latents.
_STANDING_STATS_STREAM = 0x57A7


# `config.sample` options of the standing statistics, when a config lacks them
# (their meaning: experiments/_gan.py's sample_defaults()).
STANDING_STATS_BATCHES = 16
STANDING_STATS_BATCH_SIZE = 0


@flax.struct.dataclass
class GANState:
  step: jax.Array  # [] int32: generator updates done
  g_params: nnx.State
  d_params: nnx.State
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState
  g_ema: nnx.State | None  # None when train.ema_decay == 0
  g_rest: nnx.State  # non-trainable generator state
  d_rest: nnx.State  # non-trainable discriminator state (spectral-norm u's)


# --- losses (per example; tested on known inputs) ----------------------------


def discriminator_loss(loss: str, d_real_B: jax.Array, d_fake_B: jax.Array
                       ) -> jax.Array:
  """The discriminator's loss per example, without any gradient penalty."""
  if loss == "non_saturating":
    return jax.nn.softplus(-d_real_B) + jax.nn.softplus(d_fake_B)
  if loss == "wgan_gp":
    return d_fake_B - d_real_B
  if loss == "hinge":
    return jax.nn.relu(1.0 - d_real_B) + jax.nn.relu(1.0 + d_fake_B)
  raise ValueError(loss)


def generator_loss(loss: str, d_fake_B: jax.Array) -> jax.Array:
  if loss == "non_saturating":
    return jax.nn.softplus(-d_fake_B)
  return -d_fake_B  # wgan_gp, hinge


def gradient_penalty(critic, real, fake, key) -> tuple[jax.Array, jax.Array]:
  """Per-example (||grad_x critic(x_hat)|| - 1)^2 on random interpolates.

  `critic` maps a batch to [B] values, each depending on its own row only (no
  batch statistics), so the gradient of their sum is per-example. Returns the
  penalty and the gradient norms, both [B].
  """
  e = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
  x_hat = e * real + (1.0 - e) * fake
  grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
  norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1)**2, axis=-1)
                   + 1e-12)
  return (norms - 1.0)**2, norms


@register("gan")
class GAN(base.Family):
  """GAN family; `model.num_classes > 0` makes it class-conditional."""

  def __init__(self, config, tokenizer=None):
    super().__init__(config, tokenizer)
    m = config.model
    if m.loss not in LOSSES:
      raise UserError(f"--config.model.loss: '{m.loss}' is not one of "
                      f"{', '.join(LOSSES)}.")
    base.check_sizes(
        config, positive=("model.latent_dim", "model.maxout",
                          "model.g_channels", "model.d_channels",
                          "model.g_hidden", "model.d_hidden"),
        nonnegative=("model.num_classes",))
    if m.n_critic < 1 or config.data.batch_size % m.n_critic:
      raise UserError(
          f"--config.data.batch_size={config.data.batch_size} must be a "
          f"multiple of --config.model.n_critic={m.n_critic} (each critic "
          "update takes its share of the step's batch).")
    if m.loss == "wgan_gp" and m.d_norm == "batch":
      raise UserError("--config.model.d_norm=batch mixes examples, which the "
                      "per-example gradient penalty of wgan_gp forbids; use "
                      "'layer' or 'none'.")
    shape = tuple(config.data.image_shape)
    if m.arch == "resnet" and len(shape) == 3 and (shape[0] % 8
                                                    or shape[1] % 8):
      raise UserError(
          f"--config.data.image_shape={shape}: arch 'resnet' needs a height "
          "and width that are multiples of 8 (8, 16, 24, 32, ...); "
          "--config.model.arch=dcgan takes other sizes.")
    self.standing_batches = config.sample.get(
        "standing_stats_batches", STANDING_STATS_BATCHES)
    per_update = config.data.batch_size // m.n_critic
    self.standing_batch_size = config.sample.get(
        "standing_stats_batch_size", STANDING_STATS_BATCH_SIZE) or per_update
    if self.standing_batches < 0:
      raise UserError("--config.sample.standing_stats_batches: must be >= 0 "
                      "(0: each sampled batch uses its own statistics).")
    if self.standing_batch_size < 2:
      raise UserError("--config.sample.standing_stats_batch_size: must be >= 2"
                      f", or 0 for the per-update training batch (here "
                      f"{per_update}).")
    self.loss = m.loss
    self.n_critic = m.n_critic
    self.data_shape = tuple(config.data.image_shape)
    self.is_image = len(self.data_shape) == 3
    self.net_cfg = gan_nets.GANNetConfig(
        arch=m.arch, data_shape=self.data_shape, latent_dim=m.latent_dim,
        g_channels=tuple(m.g_channels), d_channels=tuple(m.d_channels),
        g_hidden=tuple(m.g_hidden), d_hidden=tuple(m.d_hidden),
        maxout=m.maxout, g_norm=m.g_norm, d_norm=m.d_norm,
        spectral_norm=m.spectral_norm, num_classes=m.num_classes,
        dtype=config.train.dtype)
    self.num_classes = m.num_classes
    tc = config.train
    self.g_optimizer = optim.make_optimizer(tc)
    self.d_optimizer = optim.make_optimizer(
        tc, learning_rate=tc.d_learning_rate, updates_per_step=self.n_critic)
    try:
      abstract = nnx.eval_shape(
          lambda: gan_nets.GAN(self.net_cfg, rngs=nnx.Rngs(0)))
    except ValueError as e:
      raise UserError(f"--config.model: {e}") from e
    self.g_def = nnx.graphdef(abstract.generator)
    self.d_def = nnx.graphdef(abstract.discriminator)
    self.has_batch_norm = bool(layers.batch_norms(abstract.generator))
    self._sample_jit = jax.jit(self._sample)
    self._batch_stats_jit = jax.jit(self._batch_stats)
    # (weak reference to a state, its standing statistics): the last computed.
    self._standing_cache = None

  # --- model plumbing ------------------------------------------------------

  def init(self, key, batch):
    del batch
    model = gan_nets.GAN(self.net_cfg, rngs=nnx.Rngs(key))
    _, g_params, g_rest = nnx.split(model.generator, nnx.Param, ...)
    _, d_params, d_rest = nnx.split(model.discriminator, nnx.Param, ...)
    return GANState(
        step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
        g_opt_state=self.g_optimizer.init(g_params),
        d_opt_state=self.d_optimizer.init(d_params),
        g_ema=g_params if self.config.train.ema_decay > 0 else None,
        g_rest=g_rest, d_rest=d_rest)

  def eval_params(self, state):
    return state.g_ema if state.g_ema is not None else state.g_params

  def _generate(self, g_params, g_rest, z, y):
    """G(z [, y]) -> (samples, the generator's updated state)."""
    # copy=True: fresh Variables in this trace, so layers may update their
    # state (spectral-norm vectors) inside jit/grad.
    g = nnx.merge(self.g_def, g_params, g_rest, copy=True)
    x = g(z, y)
    return x, nnx.state(g, nnx.Not(nnx.Param))

  def _discriminate(self, d_params, d_rest, x, y):
    """D(x [, y]) -> ([B] logits, the discriminator's updated state)."""
    d = nnx.merge(self.d_def, d_params, d_rest, copy=True)
    out = d(x, y)
    return out.astype(jnp.float32), nnx.state(d, nnx.Not(nnx.Param))

  def preprocess(self, data: jax.Array) -> jax.Array:
    """uint8 images -> [-1, 1]; vector data as is."""
    if self.is_image:
      return data.astype(jnp.float32) / 127.5 - 1.0
    return data.astype(jnp.float32)

  def postprocess(self, x: jax.Array) -> jax.Array:
    """Generator output -> images in [0, 1] (vector data unchanged)."""
    if self.is_image:
      return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return x

  def _labels(self, batch):
    return batch["label"] if self.num_classes else None

  def _latents(self, key, num):
    return jax.random.normal(key, (num, self.net_cfg.latent_dim))

  # --- the two updates -------------------------------------------------------

  def _d_update(self, state: GANState, x_real, y, key):
    """One discriminator update against fresh fakes of the current G."""
    z_key, gp_key = jax.random.split(key)
    fake, g_rest = self._generate(state.g_params, state.g_rest,
                                  self._latents(z_key, x_real.shape[0]), y)
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(d_params):
      d_real, rest = self._discriminate(d_params, state.d_rest, x_real, y)
      d_fake, rest = self._discriminate(d_params, rest, fake, y)
      per_example = discriminator_loss(self.loss, d_real, d_fake)
      aux = {"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
      if self.loss == "wgan_gp":
        critic = lambda x: self._discriminate(d_params, rest, x, y)[0]
        penalty, norms = gradient_penalty(critic, x_real, fake, gp_key)
        per_example = per_example + self.config.model.gp_weight * penalty
        aux.update(gradient_penalty=jnp.mean(penalty),
                   critic_grad_norm=jnp.mean(norms),
                   wasserstein_estimate=aux["d_real"] - aux["d_fake"])
      return jnp.mean(per_example), (aux, rest)

    (loss, (aux, d_rest)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.d_params)
    updates, d_opt = self.d_optimizer.update(grads, state.d_opt_state,
                                             state.d_params)
    state = state.replace(d_params=optax.apply_updates(state.d_params,
                                                       updates),
                          d_opt_state=d_opt, d_rest=d_rest, g_rest=g_rest)
    return state, {"d_loss": loss, **aux}

  def _g_update(self, state: GANState, y, key, num):
    def loss_fn(g_params):
      fake, g_rest = self._generate(g_params, state.g_rest,
                                    self._latents(key, num), y)
      d_fake, d_rest = self._discriminate(state.d_params, state.d_rest,
                                          fake, y)
      return jnp.mean(generator_loss(self.loss, d_fake)), (g_rest, d_rest)

    (loss, (g_rest, d_rest)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.g_params)
    updates, g_opt = self.g_optimizer.update(grads, state.g_opt_state,
                                             state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    g_ema = state.g_ema
    if g_ema is not None:
      g_ema = base.ema_update(g_ema, g_params, base.ema_decay_at(
          self.config.train.ema_decay, state.step))
    state = state.replace(g_params=g_params, g_opt_state=g_opt, g_ema=g_ema,
                          g_rest=g_rest, d_rest=d_rest)
    return state, {"g_loss": loss, "g_grad_norm": optax.tree.norm(grads)}

  def train_step(self, state, batch, key):
    x = self.preprocess(batch["image"])
    y = self._labels(batch)
    n, per_update = self.n_critic, x.shape[0] // self.n_critic

    # Row r goes to critic update r % n: each device's rows stay on it.
    def per_critic(a):
      a = a.reshape((per_update, n) + a.shape[1:])
      return jnp.moveaxis(a, 1, 0)

    d_key, g_key = jax.random.split(key)
    xs = per_critic(x)
    ys = per_critic(y) if y is not None else None
    # A Python loop (straight-line code) rather than lax.scan: n is small, and
    # XLA:CPU runs convolutions inside a loop body ~5x slower (measured: 1.3 s
    # vs 0.25 s for a DCGAN step).
    for i, d_key_i in enumerate(jax.random.split(d_key, n)):
      state, d_metrics = self._d_update(
          state, xs[i], ys[i] if ys is not None else None, d_key_i)
    state, g_metrics = self._g_update(
        state, ys[-1] if ys is not None else None, g_key, per_update)
    metrics = {**d_metrics, **g_metrics}  # the last critic update's
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
    return state.replace(step=state.step + 1), metrics

  # --- evaluation ----------------------------------------------------------

  def eval_step(self, state, batch, key, final=False):
    """Held-out diagnostics of the discriminator against the raw generator:
    its mean output on real and fake rows and its loss (accuracy for the
    non-saturating loss; the Wasserstein estimate for wgan_gp)."""
    del final
    x = self.preprocess(batch["image"])
    y = self._labels(batch)
    fake, _ = self._generate(state.g_params, state.g_rest,
                             self._latents(key, x.shape[0]), y)
    d_real, _ = self._discriminate(state.d_params, state.d_rest, x, y)
    d_fake, _ = self._discriminate(state.d_params, state.d_rest, fake, y)
    sums = {
        "d_real": base.masked_sum(d_real, batch),
        "d_fake": base.masked_sum(d_fake, batch),
        "d_loss": base.masked_sum(
            discriminator_loss(self.loss, d_real, d_fake), batch),
        "g_loss": base.masked_sum(generator_loss(self.loss, d_fake), batch),
        "count": base.count(batch),
    }
    if self.loss == "non_saturating":
      correct = 0.5 * ((d_real > 0).astype(jnp.float32)
                       + (d_fake < 0).astype(jnp.float32))
      sums["d_accuracy"] = base.masked_sum(correct, batch)
    return sums

  def score(self, state, batch, key, final=False):
    del key, final
    if self.config.model.d_norm == "batch":
      raise UserError(
          "--mode=score: this discriminator normalizes with batch "
          "statistics, so its output for one input depends on the rest of "
          "the batch; score a GAN whose discriminator has "
          "model.d_norm=layer or none (WGAN-GP, SNGAN).")
    d_real, _ = self._discriminate(state.d_params, state.d_rest,
                                   self.preprocess(batch["image"]),
                                   self._labels(batch))
    return {"discriminator": -d_real}

  def score_notes(self, final=False):
    return {"discriminator": "not a likelihood: the discriminator's output "
                             f"({'critic value' if self.loss == 'wgan_gp' else 'logit'}"
                             "), negated: larger = less like the data it "
                             "saw"}

  def summarize_eval(self, totals):
    out = super().summarize_eval(totals)
    if self.loss == "wgan_gp":
      out["wasserstein_estimate"] = out["d_real"] - out["d_fake"]
    return out

  # --- sampling and pictures ----------------------------------------------

  def sample(self, state, key, num, labels=None, sharding=None, progress=None):
    """G(z) of the EMA generator: images in [0, 1], or vectors."""
    del progress  # one compiled call
    labels = base.class_labels(num, self.num_classes, labels, sharding)
    # Drawn by a compiled call, so z is one global array on any number of
    # processes.
    z = jax.jit(lambda k: self._latents(k, num), out_shardings=sharding)(key)
    return self.generate(state, z, labels)

  def generate(self, state, z_BL: jax.Array, labels_B: jax.Array | None = None
               ) -> jax.Array:
    """The sampling generator's output for given latents (and labels), in
    [0, 1] for images: G(z) of the EMA weights when kept, its batch norms
    normalizing with the standing statistics (see `standing_stats`)."""
    return self._sample_jit(state, z_BL, labels_B, self.standing_stats(state))

  def _sample(self, state, z, labels, stats):
    g = nnx.merge(self.g_def, self.eval_params(state), state.g_rest, copy=True)
    if stats is not None:
      layers.use_batch_stats(g, stats)
    return self.postprocess(g(z, labels))

  def standing_batch(self, i: int) -> tuple[jax.Array, jax.Array | None]:
    """Generator input of standing-statistics batch `i`: latents [B, L] and,
    for a conditional GAN, uniformly drawn labels [B] (else None). Drawn from
    a key fixed by `config.seed`."""
    key = jax.random.fold_in(jax.random.fold_in(
        jax.random.key(self.config.seed), _STANDING_STATS_STREAM), i)
    z_key, y_key = jax.random.split(key)
    z = self._latents(z_key, self.standing_batch_size)
    y = (jax.random.randint(y_key, (self.standing_batch_size,), 0,
                            self.num_classes) if self.num_classes else None)
    return z, y

  def _batch_stats(self, g_params, g_rest, z, y):
    g = nnx.merge(self.g_def, g_params, g_rest, copy=True)
    return layers.record_batch_stats(g, z, y)

  def standing_stats(self, state) -> layers.BatchStatsDict | None:
    """Each generator batch norm's batch mean and variance [C], averaged over
    the `sample.standing_stats_batches` batches `standing_batch(i)` of the
    sampling weights run in training mode (keyed by the layer's path). None
    when the generator has no batch norm or the option is 0. Computed once
    per state (the last state's statistics are kept)."""
    if not self.has_batch_norm or not self.standing_batches:
      return None
    cached = self._standing_cache
    if cached is not None and cached[0]() is state:
      return cached[1]
    params = self.eval_params(state)
    per_batch = [self._batch_stats_jit(params, state.g_rest,
                                       *self.standing_batch(i))
                 for i in range(self.standing_batches)]
    stats = jax.tree.map(lambda *s: jnp.mean(jnp.stack(s), axis=0),
                         *per_batch)
    self._standing_cache = (weakref.ref(state), stats)
    return stats

  def visualize(self, state, batch, key):
    if not self.is_image:
      n = self.config.eval.num_samples
      points = np.asarray(self.sample(state, key, max(n, 2500)))
      real = np.asarray(batch["image"])[np.asarray(batch["mask"]) > 0]
      return {"samples": grids.scatter_image(points, real)}
    return {"samples": self.sample_grid(state, key)}

