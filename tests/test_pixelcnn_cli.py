"""PixelCNN through the command line: train, the final eval in bits/dim, the
sample grid."""

import json
import math
import re

import numpy as np
from PIL import Image

from conftest import run_main

_TINY = ["--config.model.num_layers=1", "--config.train.num_steps=6",
         "--config.train.ckpt_every=6", "--config.train.eval_every=6",
         "--config.train.sample_every=6", "--config.eval.num_examples=64",
         "--config.data.eval_batch_size=64"]


def _final_eval(stdout: str) -> dict[str, float]:
  line = re.search(r"final eval @ \d+ \(\d+s\): (.*)", stdout).group(1)
  return {k: float(v) for k, v in
          (item.rsplit(" ", 1) for item in line.split(", "))}


def test_train_eval_and_samples(data_dir, tmp_path):
  proc = run_main(["--exp=pixelcnn_mnist:smoke", f"--workdir={tmp_path}",
                   *_TINY], data_dir)
  result = _final_eval(proc.stdout)
  assert 0 < result["bits_per_dim"] < 9, proc.stdout
  np.testing.assert_allclose(result["bits_per_dim"],
                             result["nll"] / (784 * math.log(2)), rtol=1e-3)
  grid = np.asarray(Image.open(tmp_path / "samples" / "step_6.png"))
  assert grid.shape[0] > 2 * 28 and grid.std() > 0  # 4 samples, not blank
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").open()]
  assert rows[-1]["split"] == "eval" and "bits_per_dim" in rows[-1]

