"""The GAN Colab notebook runs top to bottom (at a tiny size)."""

import re

from conftest import execute_notebook, notebook_text


def test_gan_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("gan.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # the scatter plot, the trainer's grid, samples+curve
  text = notebook_text(outputs)
  modes = int(re.search(r"modes captured (\d+) of 8", text).group(1))
  # 20 steps do not move the mode metrics past a fresh generator's: measured
  # fresh (lr 0) 0, 2, 2, 4 modes at seeds 0-3, after 20 steps 2, 2, 2, 2.
  assert 0 <= modes <= 8, text
  # The discriminator's held-out loss does move (2 ln 2 = 1.386 for logits
  # of 0): measured fresh 2.44 (1.41, 1.87, 1.48 at seeds 1-3); after the 20
  # steps at lr 1e-3: 1.25 (1.34, 1.31, 1.23).
  ring_d_loss = float(re.search(r"discriminator's held-out loss (\S+)",
                                text).group(1))
  assert ring_d_loss < 1.38, text
  # DCGAN (no sample-quality metric at this size): its discriminator's
  # held-out loss, in the displayed metrics. Measured fresh 1.55 (1.10, 1.57
  # at seeds 1, 2); after the 10 steps at lr 5e-3: 0.85 (0.39, 0.65).
  dcgan_d_loss = float(re.search(r"'d_loss': (\S+?),", text).group(1))
  assert dcgan_d_loss < 1.0, text
  low, high = map(float, re.search(
      r"16 samples, shape \(16, 28, 28, 1\), pixel range \[(\S+), (\S+)\]",
      text).groups())
  assert 0.0 <= low < high <= 1.0, text
  assert (tmp_path / "run" / "dcgan_mnist" / "checkpoints" / "10").is_dir()
