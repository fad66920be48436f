"""GAN experiments through the command line: the mixture benchmark's metrics,
conditional sample quality, and the offline CIFAR-10 error."""

import json
import re

from conftest import run_main
import numpy as np

def _final_eval(stdout: str) -> dict[str, float]:
  line = re.search(r"final eval @ \d+ \(\d+s\): (.*)", stdout).group(1)
  return {k: float(v) for k, v in
          (item.rsplit(" ", 1) for item in line.split(", "))}


def test_mog2d_reports_modes_and_draws_the_scatter(data_dir, tmp_path):
  proc = run_main(["--exp=gan_mog2d:smoke", f"--workdir={tmp_path}"],
                  data_dir)
  result = _final_eval(proc.stdout)
  assert 0 <= result["modes_captured"] <= 8
  assert 0.0 <= result["high_quality_pct"] <= 100.0
  assert (tmp_path / "samples" / "step_20.png").exists()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").open()]
  assert "modes_captured" in rows[-1]
  # --mode=sample with the shared sample flags (GAN configs keep them).
  run_main(["--exp=gan_mog2d:smoke", f"--workdir={tmp_path}", "--mode=sample",
            "--num_samples=8", "--seed=3"], data_dir)
  with np.load(tmp_path / "samples" / "sample_step_20.npz") as f:
    assert f["samples"].shape == (8, 2)


def test_conditional_gan_sample_quality(data_dir, tmp_path,
                                        classifier_workdir):
  proc = run_main(["--exp=cgan_mnist:smoke", f"--workdir={tmp_path}",
                   "--config.train.num_steps=10",
                   "--config.eval.quality_samples=100",
                   f"--config.eval.classifier_workdir={classifier_workdir}",
                   f"--config.eval.stats_dir={tmp_path / 'stats'}"],
                  data_dir)
  result = _final_eval(proc.stdout)
  for name in ("fd_mnist_classifier", "precision", "recall",
               "class_accuracy", "d_real", "d_fake"):
    assert name in result, proc.stdout
  assert 0.0 <= result["class_accuracy"] <= 1.0
  assert result["fd_mnist_classifier"] > 0


def test_gan_cifar10_without_data_is_one_clear_error(data_dir, tmp_path):
  proc = run_main(["--exp=sngan_cifar10:smoke", f"--workdir={tmp_path}"],
                  data_dir, check=False)
  assert proc.returncode == 2, proc.stderr
  assert "cifar10" in proc.stderr and "Traceback" not in proc.stderr
