"""The text-to-image Colab notebook runs both stages top to bottom (at a tiny
size) and measures its samples."""

import re

from conftest import execute_notebook, notebook_text


def test_text_to_image_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("text_to_image.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 2  # the reconstructions, the prompts x scales grid
  text = notebook_text(outputs)
  assert "codebook_usage" in text and "perplexity" in text
  # Training captions name their digit.
  shown = re.findall(r"^(\d) '(a[n]? [^']*)'$", text, re.M)
  assert len(shown) == 6, text
  digits = ("zero", "one", "two", "three", "four", "five", "six", "seven",
            "eight", "nine")
  for label, caption in shown:
    assert caption.endswith(digits[int(label)]), (label, caption)
  rows = re.findall(r"scale (\S+): thick minus thin (\S+) px, thickness "
                    r"agreement (\S+), slant agreement (\S+)", text)
  assert [r[0] for r in rows] == ["1", "4"], text
  for _, gap, thickness, slant in rows:
    assert -10 < float(gap) < 10
    assert 0 <= float(thickness) <= 1 and 0 <= float(slant) <= 1
  assert re.search(r"real digits: thick minus thin \d+\.\d+ px", text)
