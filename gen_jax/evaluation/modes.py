"""The mode-collapse metrics of the 2-D mixture benchmark.

The protocol of the VEEGAN and PacGAN papers: each sample is assigned to its
nearest mode; it is "high quality" if it lies within 3 standard deviations of
that mode's center; a mode is "captured" if at least one high-quality sample is
assigned to it. Both are computed on a fixed number of samples (2,500 in the
papers). We also report the KL divergence from the histogram of high-quality
samples over modes to the mixture's uniform weights (0 when every mode gets
its share).
"""

import numpy as np

from gen_jax.data import mixtures


def mode_metrics(samples_N2: np.ndarray, mixture: mixtures.Mixture,
                 num_std: float = 3.0) -> dict[str, float]:
  samples = np.asarray(samples_N2, np.float64)
  d2 = np.sum((samples[:, None, :] - mixture.centers[None]) ** 2, axis=-1)
  nearest = np.argmin(d2, axis=1)
  dist = np.sqrt(d2[np.arange(len(samples)), nearest])
  high_quality = dist <= num_std * mixture.std
  counts = np.bincount(nearest[high_quality], minlength=mixture.num_modes)
  result = {
      "modes_captured": float(np.sum(counts > 0)),
      "high_quality_pct": 100.0 * float(np.mean(high_quality)),
  }
  if counts.sum() > 0:  # undefined without any high-quality sample
    p = counts / counts.sum()
    nz = p > 0
    result["mode_kl"] = float(np.sum(p[nz] * np.log(p[nz] * mixture.num_modes)))
  return result
