"""Synthetic 2-D data as in-memory splits: the Gaussian mixtures of the
mode-collapse benchmark, and the toy densities of the flow literature.

The geometry and sizes follow the PacGAN experiments (Lin et al., 2018), which
reuse the mixtures of the unrolled-GAN and VEEGAN papers:
  'ring8':  8 modes evenly spaced on the unit circle, std 0.01;
  'grid25': 25 modes at (-4 + 2i, -4 + 2j), i, j = 0..4, std 0.05;
equal weights; 100,000 training points and 2,500 held-out points, drawn once
from a fixed seed (the same data for every run). Each row is
{'image': float32[2] (the point, under the key every family reads),
 'label': int32 mode index}.

Toy densities (as in the FFJORD paper's 2-D experiments), 'label' = 0:
  'moons':        two interleaved half circles (noise std 0.1), scaled by 2;
  '8gaussians':   8 modes at radius 4 / sqrt(2) ~ 2.83, std 0.5 / sqrt(2);
  'checkerboard': uniform on the 8 dark squares of a 4x4 board over [-4, 4]^2.
"""

import dataclasses
import math

import numpy as np

NUM_TRAIN = 100_000
NUM_EVAL = 2_500
_DATA_SEED = 20180101


@dataclasses.dataclass(frozen=True)
class Mixture:
  name: str
  centers: np.ndarray  # [K, 2]
  std: float  # of every (isotropic) component

  @property
  def num_modes(self) -> int:
    return len(self.centers)

  def sample(self, num: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, self.num_modes, num)
    points = self.centers[labels] + self.std * rng.standard_normal((num, 2))
    return points.astype(np.float32), labels.astype(np.int32)


def _ring(k: int, radius: float, std: float) -> np.ndarray:
  angles = 2 * np.pi * np.arange(k) / k
  return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _grid(n: int, spacing: float) -> np.ndarray:
  coords = spacing * (np.arange(n) - (n - 1) / 2)
  return np.stack(np.meshgrid(coords, coords, indexing="ij"), -1).reshape(-1, 2)


MIXTURES = {
    "ring8": Mixture("ring8", _ring(8, 1.0, 0.01), 0.01),
    "grid25": Mixture("grid25", _grid(5, 2.0), 0.05),
}


def _moons(num: int, rng: np.random.Generator) -> np.ndarray:
  t = np.pi * rng.random(num)
  upper = rng.random(num) < 0.5
  x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
  y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
  points = np.stack([x, y], 1) + 0.1 * rng.standard_normal((num, 2))
  return 2.0 * points + np.array([-1.0, -0.2])


def _eight_gaussians(num: int, rng: np.random.Generator) -> np.ndarray:
  centers = 4.0 * _ring(8, 1.0, 0.0)
  points = centers[rng.integers(0, 8, num)] + 0.5 * rng.standard_normal(
      (num, 2))
  return points / math.sqrt(2.0)


def _checkerboard(num: int, rng: np.random.Generator) -> np.ndarray:
  x = 4.0 * rng.random(num) - 2.0  # column in [-2, 2)
  # y in one of the two unit rows of the column's colour, then shifted.
  y = rng.random(num) - 2.0 * rng.integers(0, 2, num) + np.floor(x) % 2
  return 2.0 * np.stack([x, y], 1)


def _log_normal_mixture(points, centers, std):
  """log of an equal-weight mixture of N(center, std^2 I) at each point."""
  out = []
  for start in range(0, len(points), 1000):  # bounded memory
    d2 = np.sum((points[start:start + 1000, None, :] - centers[None]) ** 2,
                axis=-1)
    log_terms = -d2 / (2 * std**2)
    top = log_terms.max(axis=1, keepdims=True)
    out.append(top[:, 0] + np.log(np.exp(log_terms - top).sum(axis=1)))
  return np.concatenate(out) - math.log(len(centers)) - math.log(
      2 * math.pi * std**2)


def true_log_prob(name: str, points_N2: np.ndarray) -> np.ndarray:
  """log-density of the toy density `name` itself at each point (nats): its
  held-out mean is the NLL floor no model can beat on average. Exact for
  '8gaussians' and 'checkerboard'; for 'moons' (uniform on two arcs, blurred
  by Gaussian noise) the arcs are integrated with 1,000 points each."""
  p = np.asarray(points_N2, np.float64)
  if name == "8gaussians":
    centers = 4.0 * _ring(8, 1.0, 0.0) / math.sqrt(2.0)
    return _log_normal_mixture(p, centers, 0.5 / math.sqrt(2.0))
  if name == "checkerboard":
    cells = np.floor(p / 2.0)
    inside = (np.all(np.abs(p) < 4.0, axis=1)
              & ((cells[:, 0] + cells[:, 1]) % 2 == 0))
    return np.where(inside, -math.log(32.0), -np.inf)  # 8 squares of area 4
  if name == "moons":
    t = (np.arange(1000) + 0.5) / 1000 * np.pi
    arcs = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1),
                           np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)])
    return _log_normal_mixture(p, 2.0 * arcs + np.array([-1.0, -0.2]), 0.2)
  raise ValueError(f"No closed-form density for '{name}'. Valid: "
                   f"{', '.join(DENSITIES)}.")


DENSITIES = {"moons": _moons, "8gaussians": _eight_gaussians,
             "checkerboard": _checkerboard}
NAMES = (*MIXTURES, *DENSITIES)  # every synthetic 2-D dataset


def splits(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(train, eval) arrays of the 2-D dataset `name` (one of NAMES)."""
  rng = np.random.default_rng(_DATA_SEED)
  out = []
  for num in (NUM_TRAIN, NUM_EVAL):
    if name in MIXTURES:
      points, labels = MIXTURES[name].sample(num, rng)
    else:
      points = DENSITIES[name](num, rng).astype(np.float32)
      labels = np.zeros(num, np.int32)
    out.append({"image": points, "label": labels})
  return out[0], out[1]
