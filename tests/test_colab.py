"""The VAE Colab notebook runs top to bottom (at a tiny size)."""

import os

from conftest import execute_notebook


def test_vae_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("vae.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 5  # 3 grids + sampled grid + curve
  assert (tmp_path / "run" / "checkpoints" / "10").is_dir()
  assert os.path.getsize(tmp_path / "run" / "samples" / "step_10.png") > 500
