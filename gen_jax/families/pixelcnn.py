"""PixelCNN: exact autoregressive likelihood over pixels (van den Oord et al.
2016, "Conditional Image Generation with PixelCNN Decoders").

log p(x) = sum_p log p(x_p | x_<p) over the sub-pixels in raster order, the
channel fastest (see `gen_jax.models.pixelcnn`). The network sees the image
scaled to [-1, 1] and predicts, at every sub-pixel, either a 256-way softmax
over its 8-bit value (`model.likelihood='categorical'`) or one Bernoulli
logit on dynamically binarized pixels (`'bernoulli'`: a fresh binarization
per train step; the held-out split is binarized with the eval keys, which are
the same at every evaluation). With `model.num_classes > 0` it models
p(x | y) and samples per class.

Reported: nll (nats per image, exact) and, for the 8-bit data, bits_per_dim =
nll / (D ln 2) (the discrete likelihood of the data itself, the footing of
the diffusion family's vlb_bits_per_dim, which bounds the same quantity).

Sampling draws the sub-pixels one at a time in one compiled
`lax.fori_loop`: each iteration runs the whole network on the partial image
and samples position p from its temperature-1 distribution (key
`fold_in(key, p)`). `sample.rows_per_call > 0` runs the same compiled loop
over a few rows per call, to report progress in between.
"""

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
from gen_jax.models import pixelcnn

LOG2 = math.log(2.0)
LIKELIHOODS = {"categorical": 256, "bernoulli": 2}  # -> levels per sub-pixel


def _check_config(config) -> None:
  m, shape = config.model, tuple(config.data.image_shape)
  if m.likelihood not in LIKELIHOODS:
    raise UserError(f"--config.model.likelihood: '{m.likelihood}' is not one "
                    f"of {', '.join(LIKELIHOODS)}.")
  if m.arch not in ("gated", "plain"):
    raise UserError(f"--config.model.arch: '{m.arch}' is not one of gated, "
                    "plain.")
  if len(shape) != 3:
    raise UserError(f"--config.data.image_shape={shape}: PixelCNN models "
                    "images [H, W, C].")
  for key in ("channels", "head_channels"):
    if m[key] <= 0 or m[key] % shape[-1]:
      raise UserError(f"--config.model.{key}={m[key]}: must be a positive "
                      f"multiple of the {shape[-1]} image channels (one "
                      "feature group per channel).")
  for key in ("first_kernel", "kernel"):
    if m[key] < 3 or m[key] % 2 == 0:
      raise UserError(f"--config.model.{key}={m[key]}: must be odd and >= 3.")
  if m.num_layers < 1:
    raise UserError(f"--config.model.num_layers={m.num_layers}: must be >= 1.")
  if m.num_classes < 0:
    raise UserError(f"--config.model.num_classes={m.num_classes}: must be "
                    ">= 0.")
  if config.sample.rows_per_call < 0:
    raise UserError("--config.sample.rows_per_call: must be >= 0 (0: the "
                    "whole image in one call).")


def categorical_log_prob(logits_BHWCL: jax.Array, x_BHWC: jax.Array
                         ) -> jax.Array:
  """sum over sub-pixels of log softmax(logits)[x] -> [B]."""
  logp = jax.nn.log_softmax(logits_BHWCL, axis=-1)
  ll = jnp.take_along_axis(logp, x_BHWC[..., None], axis=-1)[..., 0]
  return jnp.sum(ll.reshape(ll.shape[0], -1), axis=-1)


def bernoulli_log_prob(logits_BHWC: jax.Array, x_BHWC: jax.Array
                       ) -> jax.Array:
  """sum over sub-pixels of log Bernoulli(x; sigmoid(logits)) -> [B]."""
  xf = x_BHWC.astype(jnp.float32)
  ll = xf * jax.nn.log_sigmoid(logits_BHWC) + (
      1.0 - xf) * jax.nn.log_sigmoid(-logits_BHWC)
  return jnp.sum(ll.reshape(ll.shape[0], -1), axis=-1)


@register("pixelcnn")
class PixelCNNFamily(base.Family):
  """Gated (or plain) PixelCNN with a categorical or Bernoulli likelihood."""

  def __init__(self, config):
    super().__init__(config)
    _check_config(config)
    m = config.model
    self.likelihood = m.likelihood
    self.levels = LIKELIHOODS[m.likelihood]
    self.image_shape = tuple(config.data.image_shape)
    self.model_cfg = pixelcnn.PixelCNNConfig(
        image_shape=self.image_shape, arch=m.arch, channels=m.channels,
        num_layers=m.num_layers, first_kernel=m.first_kernel, kernel=m.kernel,
        head_channels=m.head_channels,
        outputs_per_subpixel=256 if m.likelihood == "categorical" else 1,
        num_classes=m.num_classes, dtype=config.train.dtype)
    self.num_classes = m.num_classes
    self.num_dims = int(np.prod(self.image_shape))
    self.optimizer = optim.make_optimizer(config.train)
    abstract = nnx.eval_shape(
        lambda: pixelcnn.make(self.model_cfg, nnx.Rngs(0)))
    self.graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    self._loop_fn = jax.jit(self._sample_loop, donate_argnums=2)
    self._start_fns = {}

  # --- model plumbing ------------------------------------------------------

  def init(self, key, batch):
    del batch
    model = pixelcnn.make(self.model_cfg, nnx.Rngs(key))
    return base.new_train_state(model, self.optimizer,
                                self.config.train.ema_decay)

  def _model(self, params, rest) -> nnx.Module:
    return nnx.merge(self.graphdef, params, rest)

  def _labels(self, batch):
    return batch["label"].astype(jnp.int32) if self.num_classes else None

  def targets(self, image_BHWC: jax.Array, key: jax.Array) -> jax.Array:
    """uint8 pixels -> the int32 values modelled (8-bit, or binarized)."""
    if self.likelihood == "bernoulli":
      p = image_BHWC.astype(jnp.float32) / 255.0
      return jax.random.bernoulli(key, p).astype(jnp.int32)
    return image_BHWC.astype(jnp.int32)

  def network_input(self, x_BHWC: jax.Array) -> jax.Array:
    """Values 0..levels-1 -> [-1, 1], what the network sees."""
    return x_BHWC.astype(jnp.float32) * (2.0 / (self.levels - 1)) - 1.0

  def log_prob(self, model, x_BHWC: jax.Array, y_B=None) -> jax.Array:
    """log p(x [| y]) in nats -> [B], x holding values 0..levels-1."""
    logits = model(self.network_input(x_BHWC), y_B)
    if self.likelihood == "bernoulli":
      return bernoulli_log_prob(logits, x_BHWC)
    return categorical_log_prob(logits, x_BHWC)

  # --- objective -----------------------------------------------------------

  def train_step(self, state, batch, key):
    x = self.targets(batch["image"], key)
    y = self._labels(batch)

    def loss_fn(params):
      nll = -self.log_prob(self._model(params, state.rest), x, y)
      return jnp.mean(nll) / self.num_dims, jnp.mean(nll)  # nats per dim

    (loss, nll), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = base.apply_gradients(state, grads, self.optimizer,
                                 self.config.train.ema_decay)
    metrics = {"loss": loss, "nll": nll, "grad_norm": optax.tree.norm(grads)}
    if self.likelihood == "categorical":
      metrics["bits_per_dim"] = loss / LOG2
    return state, metrics

  # --- evaluation ----------------------------------------------------------

  def eval_step(self, state, batch, key, final=False):
    del final  # the likelihood is exact; nothing is estimated
    model = self._model(self.eval_params(state), state.rest)
    nll = -self.log_prob(model, self.targets(batch["image"], key),
                         self._labels(batch))
    sums = {"nll": base.masked_sum(nll, batch), "count": base.count(batch)}
    if self.likelihood == "categorical":
      sums["bits_per_dim"] = base.masked_sum(nll / (self.num_dims * LOG2),
                                             batch)
    return sums

  # --- sampling --------------------------------------------------------------

  def _sample_loop(self, params, rest, x_BHWC, y_B, key, start, stop):
    """Samples positions start..stop-1 of x (values, int32) in one compiled
    `fori_loop`; the whole network runs at every position."""
    model = self._model(params, rest)
    _, w, c = self.image_shape

    def body(p, x):
      logits = model(self.network_input(x), y_B)  # [B, H, W, C(, L)]
      i, j, ch = p // (w * c), (p // c) % w, p % c
      at_p = logits[:, i, j, ch]  # [B, L] or [B]
      k = jax.random.fold_in(key, p)
      if self.likelihood == "bernoulli":
        value = jax.random.bernoulli(k, jax.nn.sigmoid(at_p))
      else:
        value = jax.random.categorical(k, at_p, axis=-1)
      return x.at[:, i, j, ch].set(value.astype(x.dtype))

    return jax.lax.fori_loop(start, stop, body, x_BHWC)

  def sample(self, state, key, num, labels=None, sharding=None,
             progress: Callable[[int, int], None] | None = None):
    """Images [num, H, W, C] in [0, 1], drawn sub-pixel by sub-pixel.

    Args:
      state: the train state (EMA parameters are used when present).
      key: randomness of the whole image.
      num: number of images.
      labels: [num] class ids for a conditional model (default: 0, 1, 2, ...).
      sharding: optional sharding of the batch (e.g. over the 'data' axis).
      progress: called as progress(rows_done, rows_total) after each call.
    """
    h, w, c = self.image_shape
    cache_key = (num, sharding)
    if cache_key not in self._start_fns:
      self._start_fns[cache_key] = jax.jit(
          lambda: jnp.zeros((num, h, w, c), jnp.int32), out_shardings=sharding)
    x = self._start_fns[cache_key]()
    y = None
    if self.num_classes:
      if labels is None:
        labels = np.arange(num) % self.num_classes
      labels = np.asarray(labels, np.int32)
      y = jax.jit(lambda: jnp.asarray(labels), out_shardings=sharding)()
    params, rest = self.eval_params(state), state.rest
    rows = self.config.sample.rows_per_call or h
    for top in range(0, h, rows):
      bottom = min(top + rows, h)
      x = self._loop_fn(params, rest, x, y, key, jnp.int32(top * w * c),
                        jnp.int32(bottom * w * c))
      if progress is not None:
        x.block_until_ready()  # report work done, not work dispatched
        progress(bottom, h)
    return x.astype(jnp.float32) / (self.levels - 1)

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
