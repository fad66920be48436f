"""The Transformer Colab notebook runs top to bottom (at a tiny size)."""

import math
import re

from conftest import execute_notebook, notebook_text


def test_transformer_notebook_executes(data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("transformer.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 3  # the curve, the top-k / top-p bars, both curves
  text = notebook_text(outputs)
  bits = float(re.search(r"held-out: loss \S+ nats/token, perplexity \S+, "
                         r"(\S+) bits per byte", text).group(1))
  # A fresh byte model is near uniform: about 8 bits/byte; measured 7.90
  # (lr 0; 7.93, 7.93 at seeds 1, 2). After the 20 steps: 7.21 (7.18, 7.27).
  assert math.isfinite(bits) and 0 < bits < 7.6, text
  diff = float(re.search(r"KV cache vs full forward pass over 32 positions: "
                         r"max \|logit difference\| (\S+)", text).group(1))
  assert diff < 1e-5, text
  # Three prompts, 16 new tokens each, under every sampling setting.
  for title in ("temperature 0.8", "greedy", "T=0.8, top-k 10",
                "T=1.0, top-p 0.9"):
    assert f"===== {title}: (3, 16) new tokens =====" in text, text
  kept_k = re.search(r"top-k, k=5: keeps (\d+) of 256 tokens, probability "
                     r"(\S+)", text)
  kept_p = re.search(r"top-p, p=0.9: keeps (\d+) of 256 tokens, probability "
                     r"(\S+)", text)
  assert int(kept_k.group(1)) == 5 and 0 < float(kept_k.group(2)) <= 1, text
  # The nucleus: at least one token, at least p of the probability.
  assert int(kept_p.group(1)) >= 1 and float(kept_p.group(2)) >= 0.9, text
  lstm = re.search(r"LSTM: [\d,]+ parameters, held-out (\S+) bits per byte",
                   text)
  lstm_bits = float(lstm.group(1))
  # Measured: fresh (lr 0) 8.04 (8.00, 7.99 at seeds 1, 2); after the 20
  # steps 7.78 (7.70, 7.66).
  assert math.isfinite(lstm_bits) and 0 < lstm_bits < 7.9, text
  assert (tmp_path / "run" / "transformer" / "checkpoints" / "20").is_dir()
  assert (tmp_path / "run" / "lstm" / "checkpoints" / "20").is_dir()
