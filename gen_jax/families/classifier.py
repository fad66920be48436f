"""Image classifier trained with cross-entropy: the feature network for
Fréchet distance and precision/recall on MNIST (`gen_jax.evaluation.features`).

Not a generative model, but trained, evaluated and checkpointed by the same
trainer. Inputs are the uint8 images / 255; training shifts each image by up to
`train.augment_shift` pixels (zero fill). Reported on the held-out split:
accuracy and the mean negative log-likelihood of the true label (nats).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.families import base, register
from gen_jax.models import classifier as classifier_lib


def random_shift(x_BHWC: jax.Array, key: jax.Array, max_shift: int
                 ) -> jax.Array:
  """Moves each image by an integer offset in [-max_shift, max_shift]^2."""
  if max_shift <= 0:
    return x_BHWC
  b, h, w, c = x_BHWC.shape
  s = max_shift
  padded = jnp.pad(x_BHWC, ((0, 0), (s, s), (s, s), (0, 0)))
  offsets_B2 = jax.random.randint(key, (b, 2), 0, 2 * s + 1)

  def crop(image_HWC, offset_2):
    return jax.lax.dynamic_slice(image_HWC, (offset_2[0], offset_2[1], 0),
                                 (h, w, c))
  return jax.vmap(crop)(padded, offsets_B2)


@register("classifier")
class Classifier(base.OneNetwork):
  """Softmax classifier over `data.num_classes` labels."""

  def __init__(self, config, tokenizer=None):
    m = config.model
    base.check_fraction(config, "model.dropout")
    base.check_sizes(config, positive=("model.channels", "model.feature_dim"))
    h, w, _ = base.check_images(config)
    if min(h, w) < 2**len(m.channels):
      raise UserError(f"--config.model.channels={m.channels}: each entry "
                      f"halves the image, and {h}x{w} cannot be halved "
                      f"{len(m.channels)} times.")
    if config.data.num_classes < 1:
      raise UserError(f"--config.data.num_classes={config.data.num_classes}: "
                      "a classifier needs at least 1 class.")
    self.model_cfg = classifier_lib.config_from(
        m, config.data, dtype=config.train.dtype)
    self.augment_shift = config.train.get("augment_shift", 0)
    super().__init__(config, tokenizer)
    self._true_label_prob_jit = jax.jit(self._true_label_prob)

  def build_network(self, rngs):
    return classifier_lib.Classifier(self.model_cfg, rngs=rngs)

  @staticmethod
  def preprocess(image_BHWC: jax.Array) -> jax.Array:
    """uint8 pixels -> float images in [0, 1]."""
    return image_BHWC.astype(jnp.float32) / 255.0

  # --- objective -----------------------------------------------------------

  def loss(self, network, batch, key):
    shift_key, dropout_key = jax.random.split(key)
    x = random_shift(self.preprocess(batch["image"]), shift_key,
                     self.augment_shift)
    labels = batch["label"]
    logits = network(x, dropout_key)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return jnp.mean(nll), {"accuracy": accuracy}

  # --- evaluation ----------------------------------------------------------

  def predict(self, state, image_BHWC: jax.Array) -> jax.Array:
    """Logits [B, K] of uint8 images, with the EMA parameters if kept."""
    network = self.inference_network(state)
    return network(self.preprocess(image_BHWC))

  def eval_step(self, state, batch, key, final=False):
    del key, final  # deterministic; periodic and final evals are the same
    logits = self.predict(state, batch["image"])
    labels = batch["label"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"accuracy": base.masked_sum(correct, batch),
            "nll": base.masked_sum(nll, batch),
            "count": base.count(batch)}

  def score(self, state, batch, key, final=False):
    del key, final
    probs = jax.nn.softmax(self.predict(state, batch["image"]), -1)
    return {"max_softmax": 1.0 - jnp.max(probs, axis=-1)}

  def score_notes(self, final=False):
    return {"max_softmax": "not a likelihood: 1 - the largest class "
                           "probability (Hendrycks and Gimpel 2017)"}

  # --- pictures ------------------------------------------------------------

  def _true_label_prob(self, state, batch):
    logits = self.predict(state, batch["image"])
    probs = jax.nn.softmax(logits, -1)
    true_prob = jnp.take_along_axis(probs, batch["label"][:, None], -1)[:, 0]
    return true_prob, jnp.argmax(logits, -1)

  def visualize(self, state, batch, key):
    """The held-out images the model finds hardest (lowest p(true label))."""
    del key
    true_prob, predicted = jax.device_get(
        self._true_label_prob_jit(state, batch))
    mask = np.asarray(batch.get("mask", np.ones_like(true_prob)))
    real = np.flatnonzero(mask > 0)
    hardest = real[np.argsort(true_prob[real], kind="stable")]
    hardest = hardest[:self.config.eval.num_samples]
    images = np.asarray(batch["image"])[hardest].astype(np.float32) / 255.0
    ncols = int(np.ceil(np.sqrt(len(hardest))))
    labels = np.asarray(batch["label"])
    rows = [" ".join(f"{labels[i]}->{predicted[i]}({true_prob[i]:.2f})"
                     for i in hardest[r:r + ncols])
            for r in range(0, len(hardest), ncols)]
    legend = "true->predicted (p of true label), row by row as in the grid:"
    return {"samples": grids.make_grid(images, ncols),
            "hardest_labels": "\n".join([legend, *rows]) + "\n"}
