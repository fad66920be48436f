"""The GAN Colab notebook runs top to bottom (at a tiny size)."""

import re

from conftest import execute_notebook
from test_colab_diffusion import _text


def test_gan_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("gan.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # the scatter plot, the trainer's grid, samples+curve
  text = _text(outputs)
  modes = int(re.search(r"modes captured (\d+) of 8", text).group(1))
  assert 0 <= modes <= 8, text
  low, high = map(float, re.search(
      r"16 samples, shape \(16, 28, 28, 1\), pixel range \[(\S+), (\S+)\]",
      text).groups())
  assert 0.0 <= low < high <= 1.0, text
  assert (tmp_path / "run" / "dcgan_mnist" / "checkpoints" / "10").is_dir()
