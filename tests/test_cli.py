"""`python -m gen_jax.main` end to end, as a user runs it, and its error lines."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import REPO, run_main
from gen_jax import checkpointing
from gen_jax import files

# As conftest.run_main: optimization level 0 for runs this small.
_XLA_FLAGS = ("--xla_force_host_platform_device_count={} "
              "--xla_backend_optimization_level=0")

SMALL = ["--config.model.channels=8,16", "--config.model.hidden_dim=64"]


def test_train_resume_eval_sample(data_dir, tmp_path):
  wd = str(tmp_path / "run")
  out = run_main(["--exp=vae_mnist:smoke", f"--workdir={wd}", *SMALL,
                  "--config.train.num_steps=10"], data_dir).stdout
  assert "step 10/10" in out and "steps/s" in out and "ETA" in out
  assert "final eval @ 10" in out
  out = run_main(["--exp=vae_mnist:smoke", f"--workdir={wd}", *SMALL,
                  "--config.train.num_steps=20"], data_dir).stdout
  assert "resuming at step 10" in out and "step 20/20" in out
  rows = [json.loads(l) for l in open(f"{wd}/metrics.jsonl")]
  assert [r["step"] for r in rows if r["split"] == "train"] == [5, 10, 15, 20]
  proc = run_main(["--exp=vae_mnist:smoke", f"--workdir={wd}", *SMALL,
                   "--mode=eval", "--config.eval.num_importance_samples=40"],
                  data_dir)
  result = json.loads(pathlib.Path(wd, "eval_step_20.json").read_text())
  # A fresh network's decoder gives logits near 0: about 784 ln 2 = 543.4
  # nats per image. Measured: fresh (lr 0) 544.4 nats; after these 20 steps
  # 516.9. The bound sits a third of that gain below fresh.
  assert 50 < result["iwae_nll_k40"] < 535, result
  assert result["iwae_nll_k40"] <= -result["elbo"] + 1.0  # IWAE bound >= ELBO
  assert "eval @ step 20" in proc.stdout
  run_main(["--exp=vae_mnist:smoke", f"--workdir={wd}", *SMALL,
            "--mode=sample"], data_dir)
  assert pathlib.Path(wd, "samples", "sample_step_20.png").stat().st_size > 500


def _error(args, data_dir, status=None, **kw):
  """The one error line of a failing run (`status`: its exit status)."""
  proc = run_main(args, data_dir, check=False, **kw)
  assert proc.returncode != 0, proc.stdout
  assert status in (None, proc.returncode), proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  lines = [l for l in proc.stderr.strip().splitlines()
           if l.startswith("error:")]
  assert len(lines) == 1, proc.stderr
  return lines[0]


def test_bad_inputs_give_one_clear_line(data_dir, tmp_path):
  wd = f"--workdir={tmp_path / 'w'}"
  line = _error(["--exp=vae_mnsit", wd], data_dir)
  assert "unknown experiment 'vae_mnsit'" in line
  assert "Did you mean 'vae_mnist'" in line and "cvae_mnist" in line
  line = _error(["--exp=vae_mnist", wd, "--config.train.num_step=5"], data_dir)
  assert "unknown config key" in line and "--config.train.num_steps" in line
  line = _error(["--exp=vae_mnist", wd, "--config.num_steps=5"], data_dir)
  assert "--config.train.num_steps" in line
  line = _error(["--exp=vae_mnist", wd, "--config.train.num_steps=many"],
                data_dir)
  assert "--config.train.num_steps: expected an int, got 'many'" in line
  line = _error(["--exp=vae_mnist", wd, "--config.data.source=web"], data_dir)
  assert "auto, tfds, embedded" in line
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  line = _error(["--exp=vae_mnist:smoke", f"--workdir={blocker}/run"],
                data_dir)
  assert "is not writable" in line
  line = _error(["--exp=vae_mnist", wd, "--mode=eval"], data_dir)
  assert "No checkpoint" in line
  line = _error(["--workdir=x"], data_dir)
  assert "--exp is required" in line and "vae_mnist" in line


def test_bad_flags_give_one_line_and_exit_2(data_dir, tmp_path):
  wd = f"--workdir={tmp_path / 'w'}"
  assert _error(["--exp=vae_mnist:nosuch", wd], data_dir, status=2) == (
      "error: --exp=vae_mnist:nosuch: 'nosuch' is not an argument of "
      "vae_mnist; valid: smoke (join several with '-').")
  assert _error(["--exp=cvae_mnist:smoke", wd, "--labels=a,b"], data_dir,
                status=2) == (
                    "error: --labels=a,b: expected class ids such as 0,3,7.")
  assert _error(["--exp=ddpm_mnist:smoke", wd, "--sampler=ddim",
                 "--config.sample.sampler=ddpm"], data_dir, status=2) == (
                     "error: --sampler=ddim conflicts with "
                     "--config.sample.sampler=ddpm; give one of them.")
  assert _error(["--exp=vae_mnist:smoke", wd, "--num_processes=2"], data_dir,
                status=2) == (
                    "error: --num_processes and --process_id need "
                    "--coordinator_address=HOST:PORT (of process 0).")
  assert _error(["--exp=vae_mnist:smoke", wd, "--config.train.num_steps",
                 "5"], data_dir, status=2) == (
                     "error: unexpected arguments: 5 (flags take "
                     "--NAME=VALUE, config keys --config.SECTION.KEY=VALUE).")
  # Values and flags absl itself refuses: one line too, and nothing else.
  proc = run_main(["--exp=ddpm_mnist:smoke", wd, "--num_steps=abc"], data_dir,
                  check=False)
  assert proc.returncode == 2 and proc.stderr.strip() == (
      "error: flag --num_steps=abc: invalid literal for int() with base 10: "
      "'abc'"), proc.stderr
  assert _error(["--exp=vae_mnist", wd, "--mode=fast"], data_dir,
                status=2).startswith("error: flag --mode=fast: value should "
                                     "be one of <train|eval|sample|score>")


def test_incompatible_workdir_is_refused(data_dir, tmp_path):
  wd = f"--workdir={tmp_path / 'w'}"
  run_main(["--exp=vae_mnist:smoke", wd, *SMALL, "--config.train.num_steps=2"],
           data_dir)
  line = _error(["--exp=cvae_mnist:smoke", wd, *SMALL], data_dir)
  assert "incompatible config" in line and "model.num_classes: 0 -> 10" in line


def test_help_lists_experiments():
  proc = subprocess.run([sys.executable, "-m", "gen_jax.main", "--help"],
                        capture_output=True, text=True, cwd=REPO, check=True)
  for name in ("vae_mnist", "beta_vae_mnist", "cvae_mnist"):
    assert name in proc.stdout


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one_process(data_dir, tmp_path):
  """2 processes x 2 CPU devices (gloo) == 1 process x 4 devices."""
  args = ["--exp=vae_mnist:smoke", *SMALL, "--config.train.num_steps=6",
          "--config.train.log_every=1", "--config.train.ckpt_every=3"]
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=_XLA_FLAGS.format(2),
             JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir)
  procs = [subprocess.Popen(
      [sys.executable, "-m", "gen_jax.main", *args,
       f"--workdir={tmp_path / 'multi'}", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out + err
  assert "step 6/6" in outs[0][0] and "step 6/6" not in outs[1][0]
  run_main([*args, f"--workdir={tmp_path / 'single'}"], data_dir, devices=4)

  def losses(name):
    rows = files.read_jsonl(tmp_path / name / "metrics.jsonl")
    return [r["loss"] for r in rows if r["split"] == "train"]
  np.testing.assert_allclose(losses("multi"), losses("single"), rtol=1e-6)
  assert len(losses("multi")) == 6
  multi = checkpointing.load_state(tmp_path / "multi", 6)
  single = checkpointing.load_state(tmp_path / "single", 6)
  for a, b in zip(jax.tree.leaves(multi), jax.tree.leaves(single)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=1e-4)
  data_states = sorted(p.name for p in
                       (tmp_path / "multi/checkpoints/6/data").glob("*.json"))
  assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]


def test_sigkill_at_any_moment_never_breaks_the_next_start(data_dir, tmp_path):
  wd = tmp_path / "killed"
  args = [sys.executable, "-m", "gen_jax.main", "--exp=vae_mnist:smoke",
          f"--workdir={wd}", *SMALL, "--config.train.num_steps=100000",
          "--config.train.ckpt_every=1", "--config.train.keep_ckpts=2",
          "--config.train.eval_every=100000",
          "--config.train.sample_every=100000"]
  env = dict(os.environ, XLA_FLAGS=_XLA_FLAGS.format(1),
             JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir)
  def latest():
    steps = [int(p.name) for p in (wd / "checkpoints").glob("*")
             if p.name.isdigit()]
    return max(steps, default=0)

  rng = np.random.default_rng(0)
  for _ in range(3):  # kill mid-run, at varying moments, while saving every step
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, start = time.time() + 120, latest()
    while time.time() < deadline and latest() < start + 2:
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  before = checkpointing.Checkpointer(wd, read_only=True).latest_step()
  assert before is not None and before >= 2
  out = run_main(["--exp=vae_mnist:smoke", f"--workdir={wd}", *SMALL,
                  f"--config.train.num_steps={before + 3}"], data_dir).stdout
  assert f"resuming at step {before}" in out
  assert f"step {before + 3}/{before + 3}" in out
  steps = [json.loads(l)["step"] for l in open(wd / "metrics.jsonl")
           if '"train"' in l]
  assert steps == sorted(set(steps))  # no step logged twice across the kills


def test_sigterm_saves_a_checkpoint_and_exits_143(data_dir, tmp_path):
  wd = tmp_path / "preempted"
  env = dict(os.environ, XLA_FLAGS=_XLA_FLAGS.format(1),
             JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir)
  proc = subprocess.Popen(
      [sys.executable, "-m", "gen_jax.main", "--exp=vae_mnist:smoke",
       f"--workdir={wd}", *SMALL, "--config.train.num_steps=100000",
       "--config.train.ckpt_every=1000"],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  deadline = time.time() + 300
  while time.time() < deadline and not (wd / "metrics.jsonl").exists():
    time.sleep(0.05)
  while time.time() < deadline and (wd / "metrics.jsonl").stat().st_size == 0:
    time.sleep(0.05)  # training is under way: the first log line is written
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err
  line = [l for l in err.splitlines() if l.startswith("Preempted at step")]
  assert len(line) == 1, err
  step = int(line[0].split()[3].rstrip(":"))
  assert step >= 5  # no regular checkpoint before step 1000: this one is new
  assert checkpointing.Checkpointer(wd, read_only=True).latest_step() == step
