"""The Colab notebooks run top to bottom (at a tiny size)."""

import os

import nbclient
import nbformat
import pytest

from conftest import REPO


@pytest.mark.parametrize("name", ["vae.ipynb"])
def test_notebook_executes(name, data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  nb = nbformat.read(REPO / "colab" / name, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(
                                       REPO / "colab")}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 5  # 3 grids + sampled grid + curve
  assert (tmp_path / "run" / "checkpoints" / "10").is_dir()
  assert os.path.getsize(tmp_path / "run" / "samples" / "step_10.png") > 500
