"""The translation Colab notebook runs top to bottom (at a tiny size)."""

import re

from conftest import execute_notebook, notebook_text


def test_translation_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("translation.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 2  # the curves, the attention map
  text = notebook_text(outputs)
  loss = float(re.search(r"held-out: loss (\S+) nats/token", text).group(1))
  assert 0 < loss < 5.9, text  # ln 400 = 5.99: uniform over the vocabulary
  # The files reproduce the logged BLEU, with sacrebleu's signature.
  logged = re.search(r"beam 2: BLEU (\S+), chrF (\S+),", text)
  again = re.search(r"30 sentences: BLEU (\S+) \(nrefs:1\|case:mixed\|"
                    r"eff:no\|tok:13a\|smooth:exp\|version:2\.", text)
  assert logged and again and logged.group(1) == again.group(1), text
  for sentence in ("File not found", "%d files copied"):
    assert f"{sentence}\n  greedy: " in text and "  beam 4: " in text
  rows = re.search(r"attention \((\d+), (\d+)\): rows sum to (\S+)\.\.(\S+)",
                   text)
  assert rows and abs(float(rows.group(3)) - 1) < 1e-3, text
  assert abs(float(rows.group(4)) - 1) < 1e-3
