"""2-D Gaussian mixtures of the mode-collapse benchmark, as in-memory splits.

The geometry and sizes follow the PacGAN experiments (Lin et al., 2018), which
reuse the mixtures of the unrolled-GAN and VEEGAN papers:
  'ring8':  8 modes evenly spaced on the unit circle, std 0.01;
  'grid25': 25 modes at (-4 + 2i, -4 + 2j), i, j = 0..4, std 0.05;
equal weights; 100,000 training points and 2,500 held-out points, drawn once
from a fixed seed (the same data for every run). Each row is
{'image': float32[2] (the point, under the key every family reads),
 'label': int32 mode index}.
"""

import dataclasses

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


def splits(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """(train, eval) arrays of mixture `name`."""
  mixture = MIXTURES[name]
  rng = np.random.default_rng(_DATA_SEED)
  out = []
  for num in (NUM_TRAIN, NUM_EVAL):
    points, labels = mixture.sample(num, rng)
    out.append({"image": points, "label": labels})
  return out[0], out[1]
