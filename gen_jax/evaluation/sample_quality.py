"""Sample quality against a data split: Fréchet distance, precision/recall,
class accuracy of conditional samples and Inception Score.

The feature extractor is chosen by `config.eval.quality_features`:
'mnist_classifier' (the project's own MNIST CNN; its numbers compare only
within this project) or 'inception_v3' (the FID network; with its standard
weights the Fréchet distance is the FID papers report). Reference features of
a split are computed once and cached under `eval.stats_dir`.
"""

import hashlib
import os
import pathlib
from typing import Iterable

import ml_collections
import numpy as np

from gen_jax import files
from gen_jax.errors import UserError
from gen_jax.evaluation import features as features_lib
from gen_jax.evaluation import metrics

PR_NEIGHBOURS = 3  # k of Kynkäänniemi et al. (2019)


def cache_dir(config: ml_collections.ConfigDict) -> pathlib.Path:
  if config.eval.stats_dir:
    return pathlib.Path(config.eval.stats_dir)
  root = os.environ.get("GEN_JAX_CACHE", "~/.cache/gen_jax")
  return pathlib.Path(root).expanduser()


def classifier_workdir(config: ml_collections.ConfigDict) -> pathlib.Path:
  if config.eval.classifier_workdir:
    return pathlib.Path(config.eval.classifier_workdir)
  return cache_dir(config) / "mnist_classifier"


def make_extractor(config: ml_collections.ConfigDict
                   ) -> features_lib.FeatureExtractor:
  """The configured extractor (the classifier must have been trained)."""
  if config.eval.quality_features == "inception_v3":
    if not config.eval.inception_weights:
      raise UserError(
          "--config.eval.quality_features=inception_v3 needs "
          "--config.eval.inception_weights=PATH to "
          "pt_inception-2015-12-05-6726825d.pth (the FID Inception weights).")
    from gen_jax.evaluation import inception  # pylint: disable=g-import-not-at-top
    return inception.InceptionV3Features(config.eval.inception_weights)
  return features_lib.MnistClassifierFeatures(str(classifier_workdir(config)))


def _fingerprint(extractor: features_lib.FeatureExtractor,
                 config: ml_collections.ConfigDict) -> str:
  """Names the weights behind the features, so a retrained classifier or
  other weights never reuse stale reference statistics."""
  if extractor.name == "inception_v3":
    path = pathlib.Path(config.eval.inception_weights)
    source = f"{path.name}:{path.stat().st_size}"
  else:
    ckpts = sorted((classifier_workdir(config) / "checkpoints").glob("[0-9]*"),
                   key=lambda p: int(p.name))
    last = ckpts[-1]
    source = f"{last.resolve()}:{last.stat().st_mtime_ns}"
  return hashlib.sha1(source.encode()).hexdigest()[:12]


def reference_features(extractor: features_lib.FeatureExtractor,
                       config: ml_collections.ConfigDict, dataset: str,
                       images: Iterable[np.ndarray]) -> np.ndarray:
  """Features of a data split, computed once and cached as .npz.

  Args:
    extractor: the feature network.
    config: gives the cache location and the weights' identity.
    dataset: names the split in the cache (e.g. 'mnist_embedded-test').
    images: batches of real images (uint8), read only on a cache miss.

  Returns:
    [M, D] float32 features.
  """
  name = f"{extractor.name}-{_fingerprint(extractor, config)}-{dataset}.npz"
  path = cache_dir(config) / "reference_stats" / name
  if path.exists():
    return np.load(path)["features"]
  feats = np.concatenate([extractor(batch)["features"] for batch in images])
  mu, sigma = metrics.feature_statistics(feats)
  with files.atomic_open(path, "wb") as f:
    np.savez(f, features=feats, mu=mu, sigma=sigma)
  return feats


def evaluate(extractor: features_lib.FeatureExtractor,
             samples_NHWC: np.ndarray, reference_MD: np.ndarray,
             labels_N: np.ndarray | None = None) -> dict[str, float]:
  """Sample-quality metrics of `samples` against reference features.

  Returns:
    fd_<extractor>: Fréchet distance of all samples to the whole reference;
    precision, recall: k=3, on equal numbers of samples and references;
    class_accuracy: the MNIST classifier's agreement with `labels_N`
      (conditional samples); inception_score (+ _std): from the Inception
      network's logits.
  """
  out = extractor(samples_NHWC)
  feats = out["features"]
  mu, sigma = metrics.feature_statistics(feats)
  mu_ref, sigma_ref = metrics.feature_statistics(reference_MD)
  result = {f"fd_{extractor.name}": metrics.frechet_distance(
      mu, sigma, mu_ref, sigma_ref)}
  n = min(len(feats), len(reference_MD))
  precision, recall = metrics.precision_recall(reference_MD[:n], feats[:n],
                                               k=PR_NEIGHBOURS)
  result.update(precision=precision, recall=recall)
  if labels_N is not None and extractor.name == "mnist_classifier":
    result["class_accuracy"] = float(np.mean(
        np.argmax(out["logits"], axis=-1) == np.asarray(labels_N)))
  if "logits_unbiased" in out:
    from gen_jax.evaluation import inception  # pylint: disable=g-import-not-at-top
    mean, std = inception.inception_score(out["logits_unbiased"])
    result.update(inception_score=mean, inception_score_std=std)
  return result
