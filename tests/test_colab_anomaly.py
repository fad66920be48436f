"""The anomaly-detection Colab notebook runs top to bottom (at a tiny size)
and prints an AUROC table over every OOD image set and score."""

import re

from conftest import execute_notebook, notebook_text
from gen_jax.data import ood

SCORES = ("bits_per_dim", "likelihood_ratio", "complexity_corrected",
          "typicality", "reconstruction_error")


def test_anomaly_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("anomaly.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # example grid, histograms, ROC curves
  text = notebook_text(outputs)
  # The table: a header naming every score (the likelihood ratio needs the
  # background model), then one row per OOD set of AUROCs in [0, 1].
  lines = text[text.index("AUROC table"):].splitlines()
  header = lines[1].split()
  assert header == ["set", *SCORES], lines[:2]
  rows = {}
  for line in lines[2:]:
    if not line.strip():
      break
    name, *values = line.split()
    rows[name] = [float(v) for v in values]
  assert sorted(rows) == sorted(ood.IMAGE_SETS), text
  for name, values in rows.items():
    assert len(values) == len(SCORES), (name, values)
    assert all(0.0 <= v <= 1.0 for v in values), (name, values)
  # The typicality test ran on each set, in batches of 10 of its 40 inputs.
  for name in ood.IMAGE_SETS:
    assert re.search(rf"^{name}\s+\d+ of 4$", text, re.M), text
  for sub in ("model", "background"):
    ckpts = tmp_path / "run" / sub / "checkpoints"
    assert any(p.name.isdigit() for p in ckpts.iterdir()), sub
  # The typicality reference was measured (and kept) by the scoring API.
  assert list((tmp_path / "run" / "model" / "scores").glob(
      "typicality_*_n64_*.json"))
