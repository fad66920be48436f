"""Flow matching and EDM through the CLI: train with the ODE likelihood in
the final eval, sample with a chosen sampler, refuse what cannot work. (The
DiT's training, sharding and likelihood are covered in-process:
test_continuous.py and test_sharding.py.)"""

import json
import math

import numpy as np
from PIL import Image

from conftest import run_main

_TINY = ["--config.model.channel_mults=(1,)",
         "--config.train.num_steps=4", "--config.train.ckpt_every=4",
         "--config.train.eval_every=4", "--config.train.sample_every=4",
         "--config.eval.num_examples=16", "--config.data.eval_batch_size=16"]


def test_edm_trains_evaluates_and_samples(data_dir, tmp_path):
  """One run: training, the final eval with the ODE likelihood, and the
  final sample grid drawn by the sampler the flags chose (EDM's churn)."""
  workdir = tmp_path / "edm"
  run_main(["--exp=edm_mnist:smoke", f"--workdir={workdir}",
            "--sampler=stochastic", "--num_steps=6",
            "--config.sample.churn=10", *_TINY], data_dir)
  result = [json.loads(line) for line in
            (workdir / "metrics.jsonl").read_text().splitlines()][-1]
  assert result["split"] == "eval", result  # the final eval, last
  assert math.isfinite(result["loss"]) and result["loss"] > 0
  # A near-fresh network is close to the N(0, 0.5^2) model: about 8.9
  # bits/dim on the dequantized digits.
  assert 7.5 < result["ode_bits_per_dim"] < 10.5, result
  assert result["ode_evaluations"] >= 7, result
  saved = json.loads((workdir / "config.json").read_text())["sample"]
  assert (saved["sampler"], saved["num_steps"], saved["churn"]) == (
      "stochastic", 6, 10.0)
  grid = np.asarray(Image.open(workdir / "samples" / "step_4.png"))
  assert grid.shape[0] > 28 and grid.std() > 0


def test_a_sampler_the_model_cannot_use_is_one_line(data_dir, tmp_path):
  proc = run_main(["--exp=fm_mnist:smoke", f"--workdir={tmp_path / 'fm'}",
                   "--sampler=stochastic"], data_dir, check=False)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: --sampler=stochastic: EDM's churn needs alpha(t) = 1; flow "
      "matching is not such a process."), proc.stderr
  assert "Traceback" not in proc.stderr
