"""A small CNN image classifier whose penultimate layer serves as features."""

import dataclasses
from typing import Any, Mapping

from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import conv as conv_lib
from gen_jax.models.initializers import conv_kernel_init


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)
  channels: tuple[int, ...] = (32, 64)  # per entry: two 3x3 convs, 2x2 max-pool
  feature_dim: int = 128  # width of the penultimate (feature) layer
  num_classes: int = 10
  dropout: float = 0.0  # on the flattened convolutional output and the features
  dtype: str = "float32"  # compute dtype; parameters stay float32


def config_from(model: Mapping[str, Any], data: Mapping[str, Any],
                dtype: str = "float32") -> ClassifierConfig:
  """The network's config from a run's `model` and `data` sections (a live
  config or one read back from a workdir's config.json)."""
  return ClassifierConfig(
      image_shape=tuple(data["image_shape"]),
      channels=tuple(model["channels"]),
      feature_dim=int(model["feature_dim"]),
      num_classes=int(data["num_classes"]),
      dropout=float(model.get("dropout", 0.0)),
      dtype=dtype)


def max_pool_2x2(h_BHWC: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2 (an odd last row/column is dropped).

  A reshape and a max: the same numbers as `nnx.max_pool`, whose gradient
  (select-and-scatter) made the whole train step up to 1.8x slower on XLA:CPU.
  """
  b, h, w, c = h_BHWC.shape
  h_BHWC = h_BHWC[:, :h // 2 * 2, :w // 2 * 2]
  return h_BHWC.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Classifier(nnx.Module):
  """Images in [0, 1] -> class logits; `features` is the penultimate layer."""

  def __init__(self, cfg: ClassifierConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = jnp.dtype(cfg.dtype)
    c_in = cfg.image_shape[-1]
    self.convs = nnx.List()
    for c_out in cfg.channels:
      for _ in range(2):
        self.convs.append(conv_lib.Conv(
            c_in, c_out, (3, 3), dtype=dtype, kernel_init=conv_kernel_init,
            rngs=rngs))
        c_in = c_out
    h, w = cfg.image_shape[0], cfg.image_shape[1]
    for _ in cfg.channels:
      h, w = h // 2, w // 2
    self.hidden = nnx.Linear(h * w * c_in, cfg.feature_dim, dtype=dtype,
                             rngs=rngs)
    self.out = nnx.Linear(cfg.feature_dim, cfg.num_classes, dtype=dtype,
                          rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout)

  def features(self, x_BHWC: jax.Array, dropout_key: jax.Array | None = None
               ) -> jax.Array:
    """Penultimate activations [B, feature_dim] (float32, after the ReLU).

    Dropout is applied only when `dropout_key` is given (training).
    """
    deterministic = dropout_key is None or self.cfg.dropout == 0.0
    keys = (None, None) if deterministic else jax.random.split(dropout_key)
    h = x_BHWC.astype(jnp.dtype(self.cfg.dtype))
    for i, conv in enumerate(self.convs):
      h = nnx.relu(conv(h))
      if i % 2 == 1:
        h = max_pool_2x2(h)
    h = h.reshape(h.shape[0], -1)
    h = self.dropout(h, deterministic=deterministic, rngs=keys[0])
    h = nnx.relu(self.hidden(h))
    h = self.dropout(h, deterministic=deterministic, rngs=keys[1])
    return h.astype(jnp.float32)

  def __call__(self, x_BHWC: jax.Array, dropout_key: jax.Array | None = None
               ) -> jax.Array:
    """Logits [B, num_classes] (float32); dropout only with `dropout_key`."""
    return self.logits(self.features(x_BHWC, dropout_key))

  def logits(self, features_BF: jax.Array) -> jax.Array:
    """The last layer alone: features -> logits [B, num_classes]."""
    h = features_BF.astype(jnp.dtype(self.cfg.dtype))
    return self.out(h).astype(jnp.float32)
