"""The diffusion Colab notebook runs top to bottom (at a tiny size)."""

import math
import re

import nbclient
import nbformat

from conftest import REPO


def _text(outputs) -> str:
  """Everything the cells printed (streams and plain-text results)."""
  parts = []
  for o in outputs:
    if o.output_type == "stream":
      parts.append(o.text)
    elif "text/plain" in o.get("data", {}):
      parts.append(o["data"]["text/plain"])
  return "\n".join(parts)


def test_diffusion_notebook_executes(data_dir, tmp_path, monkeypatch):
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_TINY", "1")
  monkeypatch.setenv("GEN_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
  # Backend optimization level 0: XLA's CPU backend spends most of this tiny
  # run optimizing code (36 s of the U-Net's jitted init alone at the default
  # level on 2 cores, 5 s at 0); the run itself is a few seconds either way.
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1 "
                     "--xla_backend_optimization_level=0")
  nb = nbformat.read(REPO / "colab" / "diffusion.ipynb", as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(
                                       REPO / "colab")}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # the trainer's grid, DDPM | DDIM grids, the curve
  text = _text(outputs)
  for sampler in ("DDPM (ancestral)", "DDIM, 20 steps"):
    mean = float(re.search(re.escape(sampler) + r": 16 images in .*?s, "
                           r"mean pixel (\S+)", text).group(1))
    assert 0.0 <= mean <= 1.0, text
  loss = float(re.search(r"final train loss (\S+),", text).group(1))
  bound = float(re.search(r"held-out bound (\S+) bits/dim", text).group(1))
  assert math.isfinite(loss) and loss > 0, text
  assert math.isfinite(bound) and bound > 0, text
  assert (tmp_path / "run" / "checkpoints" / "10").is_dir()
