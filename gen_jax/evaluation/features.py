"""Feature extractors: the networks whose features Fréchet distance and
precision/recall compare (`gen_jax.evaluation.metrics`).

An extractor maps a batch of images to {'features': [N, D], 'logits': [N, K]}
as float32 numpy arrays. `MnistClassifierFeatures` reads the classifier that
`--exp=mnist_classifier` trains; `gen_jax.evaluation.inception` provides the
InceptionV3 features of the literature's FID for natural images.
"""

import abc
import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax import checkpointing
from gen_jax.errors import UserError
from gen_jax.models import classifier as classifier_lib


class FeatureExtractor(abc.ABC):
  """Images -> features (and class logits) for sample-quality metrics."""

  name: str  # used in metric and cache-file names, e.g. 'mnist_classifier'
  feature_dim: int

  @abc.abstractmethod
  def __call__(self, images_NHWC) -> dict[str, np.ndarray]:
    """Images, float in [0, 1] or uint8 in 0..255 -> {'features': [N, D]
    float32, 'logits': [N, K] float32}."""


def to_unit_float(images_NHWC) -> np.ndarray:
  """uint8 0..255 or float [0, 1] images -> float32 [0, 1]."""
  images = np.asarray(images_NHWC)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"Images must be uint8 or float in [0, 1], got dtype "
                     f"{images.dtype}.")
  return images.astype(np.float32)


class MnistClassifierFeatures(FeatureExtractor):
  """Penultimate-layer features of the `mnist_classifier` experiment's CNN."""

  name = "mnist_classifier"

  def __init__(self, workdir: str, batch_size: int = 500):
    """Loads the latest checkpoint of a mnist_classifier run in `workdir`.

    Args:
      workdir: the --workdir of `python -m gen_jax.main --exp=mnist_classifier`.
      batch_size: images per compiled call; the last batch is padded.
    """
    path = pathlib.Path(workdir)
    train_cmd = ("python -m gen_jax.main --exp=mnist_classifier "
                 f"--workdir={workdir}")
    config_path = path / "config.json"
    if not config_path.is_file() or not any(
        (path / "checkpoints").glob("[0-9]*")):
      raise UserError(f"No trained MNIST classifier in {workdir}; train one "
                      f"with: {train_cmd}")
    saved_config = json.loads(config_path.read_text())
    if saved_config.get("family") != "classifier":
      raise UserError(f"{workdir} holds a '{saved_config.get('family')}' run, "
                      f"not a classifier; train one with: {train_cmd}")
    try:
      cfg = classifier_lib.config_from(saved_config["model"],
                                       saved_config["data"])
    except (KeyError, TypeError, ValueError) as e:
      raise UserError(f"{config_path} does not describe a classifier ({e!r}); "
                      f"retrain with: {train_cmd}") from e
    self.image_shape = cfg.image_shape
    self.feature_dim = cfg.feature_dim
    self.num_classes = cfg.num_classes
    self.batch_size = batch_size
    graphdef, params, rest = nnx.split(nnx.eval_shape(
        lambda: classifier_lib.Classifier(cfg, rngs=nnx.Rngs(0))),
                                       nnx.Param, ...)
    saved = checkpointing.load_state(path)
    which = "ema_params" if saved.get("ema_params") else "params"
    try:
      self._params = (checkpointing.restore_into(params, saved[which]),
                      checkpointing.restore_into(rest, saved.get("rest", {})))
    except (KeyError, IndexError, TypeError) as e:
      raise UserError(f"The checkpoint in {workdir} does not match its "
                      f"config.json ({e!r}); retrain with: {train_cmd}") from e
    self.step = int(saved["step"])
    self._graphdef = graphdef
    self._apply = jax.jit(self._features_and_logits)

  def _features_and_logits(self, params_and_rest, x_BHWC):
    model = nnx.merge(self._graphdef, *params_and_rest)
    features = model.features(x_BHWC)
    return features, model.logits(features)

  def __call__(self, images_NHWC) -> dict[str, np.ndarray]:
    images = to_unit_float(images_NHWC)
    if images.ndim != 4 or images.shape[1:] != self.image_shape:
      raise ValueError(f"Expected images [N, *{self.image_shape}], got shape "
                       f"{images.shape}.")
    n = images.shape[0]
    features, logits = [], []
    for start in range(0, n, self.batch_size):
      chunk = images[start:start + self.batch_size]
      real = chunk.shape[0]
      if real < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros(
            (self.batch_size - real,) + self.image_shape, np.float32)])
      f, l = jax.device_get(self._apply(self._params, jnp.asarray(chunk)))
      features.append(f[:real])
      logits.append(l[:real])
    if not features:
      k = self.num_classes
      return {"features": np.zeros((0, self.feature_dim), np.float32),
              "logits": np.zeros((0, k), np.float32)}
    return {"features": np.concatenate(features).astype(np.float32),
            "logits": np.concatenate(logits).astype(np.float32)}
