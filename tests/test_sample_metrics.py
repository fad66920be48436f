"""Fréchet distance, precision and recall against references and closed forms."""

import numpy as np
import pytest
from scipy import linalg

from gen_jax.evaluation import metrics


def pytorch_fid_reference(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """The formula as pytorch-fid's calculate_frechet_distance computes it."""
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
    covmean = covmean.real
  return (diff @ diff + np.trace(sigma1) + np.trace(sigma2)
          - 2 * np.trace(covmean))


def correlated_features(seed, n, d, shift=0.0):
  """Gaussian features with a random full covariance, like a network's."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  scales = np.exp(rng.normal(size=d))
  return (rng.normal(size=(n, d)) * scales) @ mix + shift


def test_feature_statistics_match_numpy():
  x = correlated_features(0, 300, 16).astype(np.float32)
  mu, sigma = metrics.feature_statistics(x)
  assert mu.dtype == np.float64 and sigma.dtype == np.float64
  np.testing.assert_allclose(mu, np.mean(x.astype(np.float64), 0), rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False),
                             rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [500, 40])  # full rank; rank-deficient (N < D)
def test_frechet_distance_matches_pytorch_fid(n):
  a = metrics.feature_statistics(correlated_features(1, n, 64))
  b = metrics.feature_statistics(correlated_features(2, n, 64, shift=0.3))
  ours = metrics.frechet_distance(*a, *b)
  reference = pytorch_fid_reference(*a, *b)
  assert ours > 1.0
  np.testing.assert_allclose(ours, reference, rtol=1e-6)


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
  rng = np.random.default_rng(3)
  var1, var2 = rng.uniform(0.1, 3.0, (2, 32))
  mu1, mu2 = rng.normal(size=(2, 32))
  expected = np.sum((np.sqrt(var1) - np.sqrt(var2))**2) + np.sum(
      (mu1 - mu2)**2)
  got = metrics.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
  np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_frechet_distance_identical_is_zero_and_symmetric():
  a = metrics.feature_statistics(correlated_features(4, 500, 64))
  b = metrics.feature_statistics(correlated_features(5, 500, 64, shift=0.1))
  assert abs(metrics.frechet_distance(*a, *a)) < 1e-8
  rank_deficient = metrics.feature_statistics(correlated_features(6, 30, 64))
  assert abs(metrics.frechet_distance(*rank_deficient, *rank_deficient)) < 1e-8
  np.testing.assert_allclose(metrics.frechet_distance(*a, *b),
                             metrics.frechet_distance(*b, *a), rtol=1e-10)


def test_frechet_distance_rejects_bad_input():
  mu, sigma = np.zeros(4), np.eye(4)
  with pytest.raises(ValueError, match="one size"):
    metrics.frechet_distance(mu, sigma, np.zeros(5), np.eye(5))
  with pytest.raises(ValueError, match=r"sigma2 must be \[4, 4\]"):
    metrics.frechet_distance(mu, sigma, mu, np.eye(3))
  with pytest.raises(ValueError, match="mu2 has 1 non-finite"):
    metrics.frechet_distance(mu, sigma, np.array([0, np.nan, 0, 0]), sigma)
  with pytest.raises(ValueError, match="non-finite"):
    metrics.feature_statistics(np.full((3, 2), np.inf))


def brute_force_precision_recall(real, fake, k):
  def radii(x):
    return np.array([np.sort([np.linalg.norm(x[i] - x[j])
                              for j in range(len(x)) if j != i])[k - 1]
                     for i in range(len(x))])

  def covered(points, centers, r):
    return np.mean([any(np.linalg.norm(p - c) <= rc
                        for c, rc in zip(centers, r)) for p in points])
  return covered(fake, real, radii(real)), covered(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_match_brute_force(k):
  rng = np.random.default_rng(7)
  real = rng.normal(size=(60, 5))
  fake = 0.7 * rng.normal(size=(50, 5)) + 0.8  # partly overlapping
  expected = brute_force_precision_recall(real, fake, k)
  got = metrics.precision_recall(real, fake, k=k, block_size=16)
  assert 0.05 < expected[0] < 0.95 and 0.05 < expected[1] < 0.95
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_knn_radii_match_sorted_distances():
  x = np.random.default_rng(8).normal(size=(30, 4))
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  expected = np.sort(d, axis=1)[:, 3]  # column 0 is the point itself
  np.testing.assert_allclose(metrics.knn_radii(x, k=3, block_size=7), expected,
                             rtol=1e-9)


def test_precision_recall_known_cases():
  x = np.random.default_rng(9).normal(size=(200, 8))
  assert metrics.precision_recall(x, x.copy()) == (1.0, 1.0)
  assert metrics.precision_recall(x, x + 100.0) == (0.0, 0.0)
  # All fakes collapsed on one real point (mode collapse): precise, no recall.
  collapsed = np.repeat(x[:1], 50, axis=0) + 1e-9 * np.random.default_rng(
      10).normal(size=(50, 8))
  precision, recall = metrics.precision_recall(x, collapsed)
  assert precision == 1.0 and recall <= 4 / 200


def test_precision_recall_ball_is_closed():
  # Real points on a line at 0, 1, 2, 3 (k=1: every radius is 1); the fake at
  # 4.0 lies exactly on the ball of the real point at 3.
  real = np.array([[0.0], [1.0], [2.0], [3.0]])
  fake = np.array([[4.0], [10.0], [20.0]])
  precision, _ = metrics.precision_recall(real, fake, k=1)
  assert precision == pytest.approx(1 / 3)


def test_precision_recall_rejects_bad_input():
  with pytest.raises(ValueError, match="differ in size"):
    metrics.precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="k=5 needs"):
    metrics.precision_recall(np.random.rand(5, 2), np.random.rand(5, 2), k=5)
