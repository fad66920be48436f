"""Anomaly and out-of-distribution scores from a generative model's
likelihood, with the corrections that make them work.

Every score is "larger = more unusual", in bits per dimension:

- raw: -log2 p(x) / D. Nalisnick et al. (2019), "Do deep generative models
  know what they don't know?": models of one image set can give higher
  likelihood to simpler images of another, so raw scores can rank those
  as the *least* unusual.
- likelihood ratio (Ren et al. 2019, "Likelihood ratios for
  out-of-distribution detection"): raw - raw under a background model
  trained on perturbed inputs, which captures the population-level
  statistics (smoothness, background) and cancels them.
- complexity-corrected (Serra et al. 2020, "Input complexity and
  out-of-distribution detection with likelihood-based generative models"):
  raw - L(x) / D with L the bits of a lossless compressor (PNG for images):
  the likelihood ratio against a general-purpose compressor.
- typicality (Nalisnick et al. 2019b, "Detecting out-of-distribution inputs
  to deep generative models using typicality"): |raw - H|, H the model's
  entropy estimated on training data; as a test, the mean over a batch of M
  inputs against a bootstrapped threshold.

AUROC is scikit-learn's.
"""

import bz2
import dataclasses
import io
import lzma
import zlib

import numpy as np
from PIL import Image
from sklearn import metrics

COMPRESSORS = ("png", "zlib", "bz2", "lzma")
# LZMA2 at its strongest, without the .xz container's header.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2,
                  "preset": 9 | lzma.PRESET_EXTREME}]


def compressed_bits(examples, compressor: str) -> np.ndarray:
  """Bits of each example (uint8 images [N, H, W, C] or strings) under a
  lossless compressor at its strongest setting -> float64 [N]."""
  if compressor not in COMPRESSORS:
    raise ValueError(f"compressor '{compressor}' is not one of "
                     f"{', '.join(COMPRESSORS)}.")
  if compressor == "png":
    if isinstance(examples, list):
      raise ValueError("png compresses images, not text.")
    return np.asarray([8.0 * len(_png(x)) for x in examples])
  pack = {"zlib": lambda b: zlib.compress(b, 9),
          "bz2": lambda b: bz2.compress(b, 9),
          "lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_RAW,
                                          filters=_LZMA_FILTERS)}[compressor]
  return np.asarray([8.0 * len(pack(_bytes(x))) for x in examples])


def _png(image_HWC: np.ndarray) -> bytes:
  image = np.asarray(image_HWC, np.uint8)
  if image.shape[-1] == 1:
    image = image[..., 0]
  out = io.BytesIO()
  Image.fromarray(image).save(out, format="PNG", optimize=True,
                              compress_level=9)
  return out.getvalue()


def _bytes(example) -> bytes:
  if isinstance(example, str):
    return example.encode("utf-8")
  return np.ascontiguousarray(example, np.uint8).tobytes()


def likelihood_ratio(bits_per_dim: np.ndarray, background_bits_per_dim:
                     np.ndarray) -> np.ndarray:
  """Ren et al.: -log2 [p(x) / p_background(x)] / D, larger = more unusual."""
  return np.asarray(bits_per_dim) - np.asarray(background_bits_per_dim)


def complexity_corrected(bits_per_dim: np.ndarray, compressed_bits_per_dim:
                         np.ndarray) -> np.ndarray:
  """Serra et al.: S(x) = -log2 p(x) / D - L(x) / D, larger = more unusual."""
  return np.asarray(bits_per_dim) - np.asarray(compressed_bits_per_dim)


@dataclasses.dataclass(frozen=True)
class Typicality:
  """The model's entropy on training data and the batch test's threshold."""
  entropy: float  # mean bits/dim of the reference examples
  batch_size: int  # M
  threshold: float  # the (1 - alpha) quantile of |mean of M - entropy|
  alpha: float
  num_reference: int  # training + held-out scores


def typicality_reference(entropy_bits_per_dim: np.ndarray,
                         bootstrap_bits_per_dim: np.ndarray, batch_size: int,
                         alpha: float = 0.01, num_bootstrap: int = 10000,
                         seed: int = 0) -> Typicality:
  """Nalisnick et al. 2019b: H = the mean score of training examples, and
  the threshold of the M-sample test bootstrapped from held-out examples
  (the paper's validation set): the (1 - alpha) quantile of |mean of M
  resampled held-out scores - H|. Non-finite scores are left out."""
  train = np.asarray(entropy_bits_per_dim, np.float64)
  held = np.asarray(bootstrap_bits_per_dim, np.float64)
  train, held = train[np.isfinite(train)], held[np.isfinite(held)]
  if len(train) < 2 or len(held) < 2:
    raise ValueError(f"the typicality test needs at least 2 finite scores "
                     f"on each side, got {len(train)} and {len(held)}.")
  entropy = float(np.mean(train))
  rng = np.random.default_rng(seed)
  draws = rng.choice(held, size=(num_bootstrap, batch_size))
  stats = np.abs(draws.mean(axis=1) - entropy)
  return Typicality(entropy, batch_size, float(np.quantile(stats, 1 - alpha)),
                    alpha, len(train) + len(held))


def typicality_scores(bits_per_dim: np.ndarray, reference: Typicality
                      ) -> np.ndarray:
  """Per example: |bits/dim - H| (the test with M = 1)."""
  return np.abs(np.asarray(bits_per_dim) - reference.entropy)


def typicality_batches(bits_per_dim: np.ndarray, reference: Typicality
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The test over consecutive batches of M inputs (a last partial batch
  is left out): (statistic |mean - H| per batch, rejected as atypical). A
  batch with a non-finite score (a failed ODE solve) has a NaN statistic
  and is not rejected."""
  m = reference.batch_size
  scores = np.asarray(bits_per_dim, np.float64)
  n = len(scores) // m
  stats = np.abs(scores[:n * m].reshape(n, m).mean(axis=1) - reference.entropy)
  return stats, stats > reference.threshold


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
  """Area under the ROC curve of telling out- (positive) from
  in-distribution inputs by the score (larger = out): 1 perfect, 0.5 chance,
  0 perfectly reversed."""
  labels, scores = _labelled(in_scores, out_scores)
  return float(metrics.roc_auc_score(labels, scores))


def roc_curve(in_scores: np.ndarray, out_scores: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
  """(false positive rates, true positive rates) of the ROC curve."""
  labels, scores = _labelled(in_scores, out_scores)
  fpr, tpr, _ = metrics.roc_curve(labels, scores)
  return fpr, tpr


def _labelled(in_scores, out_scores) -> tuple[np.ndarray, np.ndarray]:
  a = np.asarray(in_scores, np.float64).ravel()
  b = np.asarray(out_scores, np.float64).ravel()
  if not len(a) or not len(b):
    raise ValueError("AUROC needs in- and out-of-distribution scores.")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
    raise ValueError("AUROC of non-finite scores: drop the NaN rows (an ODE "
                     "solve that ran out of steps) first.")
  return (np.concatenate([np.zeros(len(a)), np.ones(len(b))]),
          np.concatenate([a, b]))
