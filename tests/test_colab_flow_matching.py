"""The flow-matching Colab notebook runs top to bottom (at a tiny size)."""

import math
import re

from conftest import execute_notebook, notebook_text


def test_flow_matching_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("flow_matching.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # the trainer's grid, the samplers' grid, curves
  text = notebook_text(outputs)
  rows = re.findall(r"(\S+) +(\d+) steps: +(\d+) evaluations, RMS distance "
                    r"to the adaptive samples (\S+)", text)
  assert len(rows) == 6, text  # 3 samplers x 2 step counts
  nfe = {(s, int(n)): int(e) for s, n, e, _ in rows}
  assert nfe == {("euler", 2): 2, ("euler", 4): 4, ("heun", 2): 3,
                 ("heun", 4): 7, ("dpm_solver++", 2): 2,
                 ("dpm_solver++", 4): 4}, nfe
  errors = {(s, int(n)): float(e) for s, n, _, e in rows}
  # More steps land closer to the ODE's own answer, for every sampler.
  for sampler in ("euler", "heun", "dpm_solver++"):
    assert errors[sampler, 4] < errors[sampler, 2], errors
  adaptive = float(re.search(r"Fréchet distance (\S+) at", text).group(1))
  assert math.isfinite(adaptive) and adaptive >= 0, text
