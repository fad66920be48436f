"""The GAN Colab notebook runs top to bottom (at a tiny size)."""

import re

import nbclient
import nbformat

from conftest import REPO
from test_colab_diffusion import _text


def test_gan_notebook_executes(data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  # Level 0: XLA:CPU's optimization passes dominate so tiny a run.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                     "--xla_backend_optimization_level=0")
  nb = nbformat.read(REPO / "colab" / "gan.ipynb", as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(
                                       REPO / "colab")}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
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
