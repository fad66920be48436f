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
`lax.fori_loop`, position p from its temperature-1 distribution (key
`fold_in(key, p)`). By default (`sample.cached=True`) a cache of the features
later positions read (`gen_jax.models.pixelcnn_cache`, both architectures)
makes each sub-pixel cost the network's work at its own pixel;
`sample.cached=False` runs the whole network on the partial image at every
position instead (the reference: the same images for the same key, ~100x
slower for pixelcnn_mnist on a CPU). `sample.rows_per_call > 0` runs the same
compiled loop over a few rows per call, to report progress in between (the
cached loop rebuilds its cache at each call's first row, with one pass of
the network).
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.families import base, likelihoods, register
from gen_jax.models import pixelcnn
from gen_jax.models import pixelcnn_cache

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


@register("pixelcnn")
class PixelCNNFamily(base.OneNetwork):
  """Gated (or plain) PixelCNN with a categorical or Bernoulli likelihood."""

  def __init__(self, config, tokenizer=None):
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
    super().__init__(config, tokenizer)
    loop = self._cached_loop if config.sample.cached else self._sample_loop
    self._loop_fn = jax.jit(loop, donate_argnums=2)
    self._start_fns = {}

  # --- model plumbing ------------------------------------------------------

  def build_network(self, rngs):
    return pixelcnn.make(self.model_cfg, rngs)

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
      return likelihoods.bernoulli_log_prob(x_BHWC, logits)
    return likelihoods.categorical_log_prob(x_BHWC, logits)

  # --- objective -----------------------------------------------------------

  def loss(self, network, batch, key):
    x = self.targets(batch["image"], key)
    nll = jnp.mean(-self.log_prob(network, x, self._labels(batch)))
    loss = nll / self.num_dims  # nats per dim
    aux = {"nll": nll}
    if self.likelihood == "categorical":
      aux["bits_per_dim"] = loss / likelihoods.LOG2
    return loss, aux

  # --- evaluation ----------------------------------------------------------

  def eval_step(self, state, batch, key, final=False):
    nll = self.score(state, batch, key, final)["nll"]  # exact
    sums = {"nll": base.masked_sum(nll, batch), "count": base.count(batch)}
    if self.likelihood == "categorical":
      sums["bits_per_dim"] = base.masked_sum(
          likelihoods.bits_per_dim(nll, self.num_dims), batch)
    return sums

  def score(self, state, batch, key, final=False):
    del final  # exact
    nll = -self.log_prob(self.inference_network(state),
                         self.targets(batch["image"], key),
                         self._labels(batch))
    return {"nll": nll, "dims": jnp.full(nll.shape, float(self.num_dims))}

  def score_notes(self, final=False):
    data = ("the 8-bit image" if self.likelihood == "categorical"
            else "the image binarized with the scoring key")
    return {"nll": f"exact: -log p of {data} (autoregressive factorization)"}

  # --- sampling --------------------------------------------------------------

  def _draw(self, key, p, logits):
    """Sub-pixel p's value from its logits [B(, L)], key fold_in(key, p)."""
    k = jax.random.fold_in(key, p)
    if self.likelihood == "bernoulli":
      return jax.random.bernoulli(k, jax.nn.sigmoid(logits))
    return jax.random.categorical(k, logits, axis=-1)

  def _sample_loop(self, params, rest, x_BHWC, y_B, key, start, stop):
    """Samples positions start..stop-1 of x (values, int32) in one compiled
    `fori_loop`; the whole network runs at every position."""
    model = self.network(params, rest)
    _, w, c = self.image_shape

    def body(p, x):
      logits = model(self.network_input(x), y_B)  # [B, H, W, C(, L)]
      i, j, ch = p // (w * c), (p // c) % w, p % c
      value = self._draw(key, p, logits[:, i, j, ch])
      return x.at[:, i, j, ch].set(value.astype(x.dtype))

    return jax.lax.fori_loop(start, stop, body, x_BHWC)

  def _cached_loop(self, params, rest, x_BHWC, y_B, key, start, stop):
    """`_sample_loop` with a cache of features (`pixelcnn_cache`): per
    sub-pixel, the network's work at its pixel only. start and stop are at
    row boundaries."""
    cache = pixelcnn_cache.make(self.network(params, rest))
    _, w, c = self.image_shape
    top, bottom = start // (w * c), stop // (w * c)

    def row(i, carry):
      def subpixel(q, carry):
        x, state = carry
        j, ch = q // c, q % c
        logits, state = cache.pixel(state, i, j, self.network_input(x[:, i]),
                                    y_B)
        value = self._draw(key, (i * w + j) * c + ch, logits[:, ch])
        return x.at[:, i, j, ch].set(value.astype(x.dtype)), state

      x, state = jax.lax.fori_loop(0, w * c, subpixel, carry)
      return x, cache.end_row(state, i, self.network_input(x[:, i]), y_B)

    state = cache.start(self.network_input(x_BHWC), top, y_B)
    x, _ = jax.lax.fori_loop(top, bottom, row, (x_BHWC, state))
    return x

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
    y = base.class_labels(num, self.num_classes, labels, sharding)
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
    return {"samples": self.sample_grid(state, key)}
