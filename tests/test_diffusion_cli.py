"""Diffusion through the CLI: train, sample with each sampler, evaluate."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import run_main

# ddpm_cfg_mnist:smoke, smaller still: the point is the plumbing.
_TINY = ["--config.train.num_steps=6", "--config.train.ckpt_every=6",
         "--config.train.eval_every=6", "--config.train.sample_every=6",
         "--config.model.num_timesteps=20", "--config.eval.num_examples=32",
         "--config.data.eval_batch_size=32",
         # A constant 1e-2 (the experiment: 1e-3 on a cosine, under which 6
         # steps moved nothing measurably: loss 0.997 -> 0.994).
         "--config.train.learning_rate=1e-2",
         "--config.train.lr_schedule=constant"]


def test_train_sample_and_eval_with_quality(data_dir, tmp_path,
                                            classifier_workdir):
  workdir = tmp_path / "ddpm"
  run_main(["--exp=ddpm_cfg_mnist:smoke", f"--workdir={workdir}", *_TINY],
           data_dir)
  grid = np.asarray(Image.open(workdir / "samples" / "step_6.png"))
  assert grid.shape[0] > 28 and grid.std() > 0  # a 10-row grid, not blank

  # --sampler alone runs all T steps; DDIM takes --num_steps; guidance.
  proc = run_main(["--exp=ddpm_cfg_mnist:smoke", f"--workdir={workdir}",
                   "--mode=sample", "--sampler=ddim", "--num_steps=3",
                   "--guidance_scale=3", *_TINY], data_dir)
  assert "sample_step_6.png" in proc.stdout
  ddim = np.asarray(Image.open(workdir / "samples" / "sample_step_6.png"))
  assert ddim.shape == grid.shape and ddim.std() > 0

  proc = run_main(["--exp=ddpm_cfg_mnist:smoke", f"--workdir={workdir}",
                   "--mode=eval", "--num_steps=2",
                   "--config.eval.quality_samples=40",
                   f"--config.eval.classifier_workdir={classifier_workdir}",
                   f"--config.eval.stats_dir={tmp_path / 'stats'}", *_TINY],
                  data_dir)
  result = json.loads((workdir / "eval_step_6.json").read_text())
  for key in ("fd_mnist_classifier", "precision", "recall", "class_accuracy",
              "vlb_bits_per_dim", "sample_seconds_per_image"):
    assert math.isfinite(result[key]), (key, proc.stdout)
  # A fresh network predicts noise near 0: an eps MSE of about E[eps^2] = 1.
  # Measured: fresh (lr 0) loss 0.997 (1.002, 1.007 at seeds 1, 2), FD 6.41
  # (6.27, 6.47); after these 6 steps loss 0.936 (0.900, 0.862), FD 6.01
  # (5.76, 5.99). Precision (0) and class accuracy (0.1: the smoke
  # classifier's one class) do not move in 6 steps: ranges only.
  assert result["loss"] < 0.97, result
  assert 0 < result["fd_mnist_classifier"] < 6.15, result
  assert 0 <= result["precision"] <= 1 and 0 <= result["class_accuracy"] <= 1
  assert result["sample"]["num_steps"] == 2
  # The reference statistics were cached for the next eval.
  assert list((tmp_path / "stats" / "reference_stats").glob("*.npz"))


def test_sampler_flags_are_checked(data_dir, tmp_path):
  proc = run_main(["--exp=ddpm_mnist:smoke", f"--workdir={tmp_path}",
                   "--mode=sample", "--sampler=euler"], data_dir, check=False)
  assert proc.returncode == 2
  assert "sampler" in proc.stderr and "ddpm, ddim" in proc.stderr
  assert "Traceback" not in proc.stderr
  proc = run_main(["--exp=vae_mnist:smoke", f"--workdir={tmp_path / 'v'}",
                   "--mode=sample", "--guidance_scale=2"], data_dir,
                  check=False)
  assert proc.returncode == 2 and "--guidance_scale" in proc.stderr


def test_ddpm_cifar10_without_data_is_one_clear_error(data_dir, tmp_path):
  proc = run_main(["--exp=ddpm_cifar10:smoke", f"--workdir={tmp_path}"],
                  data_dir, check=False)
  assert proc.returncode == 2, proc.stderr
  assert "cifar10" in proc.stderr and "Traceback" not in proc.stderr
