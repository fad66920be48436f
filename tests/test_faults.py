"""Faults a long run meets: a damaged checkpoint, a full disk, signals during
a save. Each ends in one line and a workdir the same command resumes."""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import orbax.checkpoint as ocp
import pytest

from conftest import REPO
from gen_jax import checkpointing
from gen_jax import errors
from gen_jax import files
from gen_jax import logging as log_lib
from gen_jax import train
from gen_jax.errors import UserError
from test_train import smoke_config

SMALL = ["--config.model.channels=8,16", "--config.model.hidden_dim=64"]
QUIET = ["train.log_every=1", "train.eval_every=100", "train.sample_every=100"]


def _config(data_dir, *overrides):
  return smoke_config(data_dir, "train.num_steps=10", "train.ckpt_every=2",
                      "train.keep_ckpts=5", *QUIET, *overrides)


@pytest.fixture(scope="module")
def four_steps(data_dir, tmp_path_factory):
  """A workdir with checkpoints at steps 2, 4, 6 and 8 (of 10)."""
  wd = tmp_path_factory.mktemp("faults") / "base"
  train.train_and_evaluate(_config(data_dir), str(wd), stop_after=8)
  assert sorted(checkpointing._step_dirs(wd / "checkpoints")) == [2, 4, 6, 8]
  return wd


def _copy(four_steps, tmp_path):
  wd = tmp_path / "run"
  shutil.copytree(four_steps, wd)
  return wd


def _losses(wd):
  return {r["step"]: r["loss"] for r in files.read_jsonl(wd / "metrics.jsonl")
          if r["split"] == "train"}


def _array_file(wd, step):
  return next((wd / "checkpoints" / str(step) / "state" / "d").iterdir())


def _flip_bytes(wd, step):
  f = _array_file(wd, step)
  data = bytearray(f.read_bytes())
  data[100:400] = bytes(b ^ 0xFF for b in data[100:400])
  f.write_bytes(bytes(data))


def _truncate(wd, step):
  f = _array_file(wd, step)
  f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])


def _delete_manifest(wd, step):
  (wd / "checkpoints" / str(step) / "state" / "manifest.ocdbt").unlink()


def _garble_data_state(wd, step):
  (wd / "checkpoints" / str(step) / "data" / "process_0-of-1.json"
   ).write_text('{"next_index": ')


def test_unreadable_checkpoints_fall_back_to_the_newest_readable_one(
    four_steps, tmp_path, data_dir, caplog):
  wd = _copy(four_steps, tmp_path)
  _flip_bytes(wd, 8)  # data loss
  _truncate(wd, 6)
  _delete_manifest(wd, 4)  # a missing file...
  _garble_data_state(wd, 4)  # ...and a damaged data-iterator state
  train.train_and_evaluate(_config(data_dir), str(wd))
  warned = [r.getMessage() for r in caplog.records
            if "cannot be read" in r.getMessage()]
  assert [re.search(r"step (\d+)", w)[1] for w in warned] == ["8", "6", "4"]
  assert "(DATA_LOSS: " in warned[0] and "moved it to 8.unreadable" in warned[0]
  assert all(len(w) < 500 and "\n" not in w for w in warned), warned
  for step in (4, 6, 8):  # kept, under another name
    assert (wd / "checkpoints" / f"{step}.unreadable" / "state").is_dir()
  assert 10 in checkpointing._step_dirs(wd / "checkpoints")  # reached the end
  # Steps 3..8 again, bit for bit: the train state and the data iterator
  # both came from step 2.
  before, after = _losses(four_steps), _losses(wd)
  assert [after[s] for s in range(3, 9)] == [before[s] for s in range(3, 9)]


def test_a_damaged_data_iterator_state_alone_makes_the_step_unreadable(
    four_steps, tmp_path, data_dir):
  wd = _copy(four_steps, tmp_path)
  _garble_data_state(wd, 8)  # the train state of step 8 is intact
  config = _config(data_dir)
  run = train.setup(config, str(wd), write_config=False)
  ckpt = checkpointing.Checkpointer(wd)
  try:
    _, step = ckpt.restore_newest(run.abstract_state, run.data.train)
  finally:
    ckpt.close()
  assert step == 6 and (wd / "checkpoints" / "8.unreadable").is_dir()


def test_eval_and_sample_use_the_newest_readable_checkpoint(
    four_steps, tmp_path, data_dir):
  wd = _copy(four_steps, tmp_path)
  _flip_bytes(wd, 8)
  _, _, step = train.restore_latest(_config(data_dir), str(wd))
  assert step == 6 and (wd / "checkpoints" / "8.unreadable").is_dir()


def test_no_readable_checkpoint_says_so_and_what_to_do(
    four_steps, tmp_path, data_dir):
  wd = _copy(four_steps, tmp_path)
  _flip_bytes(wd, 8)
  _flip_bytes(wd, 6)
  _truncate(wd, 4)
  _delete_manifest(wd, 2)
  with pytest.raises(UserError) as e:
    train.restore_latest(_config(data_dir), str(wd))
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith(f"No readable checkpoint in {wd / 'checkpoints'}")
  assert "step 8 (DATA_LOSS" in message and "step 2 (NOT_FOUND" in message
  assert "Re-run to start again from step 0" in message
  assert sorted(p.name for p in (wd / "checkpoints").iterdir()) == [
      "2.unreadable", "4.unreadable", "6.unreadable", "8.unreadable"]


def test_another_configs_checkpoint_is_refused_not_moved(
    four_steps, tmp_path, data_dir):
  wd = _copy(four_steps, tmp_path)
  (wd / "config.json").unlink()  # so only the checkpoint itself can tell
  with pytest.raises(UserError, match=(
      r"The checkpoint at step 8 in .* holds another config's train state "
      r"\(params\.decoder\.hidden\.bias\.value: saved \(64,\), now \(32,\) "
      r"and \d+ more\)\. Use a new --workdir")):
    train.restore_latest(_config(data_dir, "model.hidden_dim=32"), str(wd))
  assert sorted(checkpointing._step_dirs(wd / "checkpoints")) == [2, 4, 6, 8]


def test_a_failed_save_stops_in_one_line_and_leaves_a_resumable_workdir(
    tmp_path, data_dir, monkeypatch):
  from grain._src.python.checkpoint import handler  # pylint: disable=g-import-not-at-top
  real_save = handler.CheckpointHandler.save

  def save(self, directory, *args, **kwargs):
    if re.search(r"/4\.orbax-checkpoint-tmp", str(directory)):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(self, directory, *args, **kwargs)
  monkeypatch.setattr(handler.CheckpointHandler, "save", save)
  wd = tmp_path / "run"
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(_config(data_dir), str(wd))
  ckpts = wd / "checkpoints"
  assert re.fullmatch(
      rf"Could not save the checkpoint of step 4 in {re.escape(str(ckpts))}: "
      r"No space left on device \(a checkpoint needs about 1\.\d MB; "
      r"[\d.]+ MB free there\); the earlier checkpoints are untouched "
      r"\(newest: step 2\)\. Free space or fix the storage, then re-run the "
      r"same command to resume from step 2\.", str(e.value)), str(e.value)
  assert sorted(p.name for p in ckpts.iterdir()) == ["2"]  # no partial step
  assert max(_losses(wd)) <= 5  # stopped; no step without a checkpoint
  monkeypatch.setattr(handler.CheckpointHandler, "save", real_save)
  assert _resume_step(wd, data_dir) == 2


def test_a_save_failing_in_the_background_stops_the_run_soon(
    tmp_path, data_dir, monkeypatch):
  """Arrays are written while training goes on; a failure there stops the
  run within steps, not at the next checkpoint (the failure is injected
  where Orbax completes a step in the background)."""
  real_wait = ocp.CheckpointManager._wait_for_checkpointers

  def wait_for_writes(self):  # of the first save, step 4
    real_wait(self)
    raise OSError(errno.EIO, os.strerror(errno.EIO))
  monkeypatch.setattr(ocp.CheckpointManager, "_wait_for_checkpointers",
                      wait_for_writes)
  real_write = log_lib.MetricLogger.write

  def slow_write(self, step, *args):  # steps slower than the save
    time.sleep(0.6 if step > 4 else 0)
    real_write(self, step, *args)
  monkeypatch.setattr(log_lib.MetricLogger, "write", slow_write)
  wd = tmp_path / "run"
  with pytest.raises(UserError, match=(
      r"Could not save the checkpoint of step 4 in .*: Input/output error "
      r".*no earlier checkpoint")):
    train.train_and_evaluate(_config(data_dir, "train.ckpt_every=4"), str(wd))
  assert max(_losses(wd)) < 8  # the next checkpoint was due at step 8


@pytest.mark.parametrize("save_fails", [False, True])
def test_a_full_disk_met_by_a_log_write_is_one_line(
    tmp_path, data_dir, monkeypatch, save_fails):
  """The metrics of step 5 cannot be written; when the save of step 4, still
  in flight, failed too, its error (the cause, with sizes) is the one told."""
  real_write = log_lib.MetricLogger.write

  def write(self, step, *args):
    if step == 5:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    real_write(self, step, *args)
  monkeypatch.setattr(log_lib.MetricLogger, "write", write)
  if save_fails:  # step 4's writes fail, noticed only when waited for
    real_wait = ocp.CheckpointManager._wait_for_checkpointers

    def wait_for_writes(self):
      real_wait(self)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ocp.CheckpointManager, "_wait_for_checkpointers",
                        wait_for_writes)
    monkeypatch.setattr(ocp.CheckpointManager, "is_saving_in_progress",
                        lambda self: True)
  wd = tmp_path / "run"
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(_config(data_dir, "train.ckpt_every=4"), str(wd))
  if save_fails:
    assert re.match(r"Could not save the checkpoint of step 4 in .*: No space "
                    r"left on device", str(e.value)), str(e.value)
  else:
    assert str(e.value) == (
        f"Could not write to {wd} at step 5: No space left on device. Fix "
        "the storage, then re-run the same command to resume from step 4.")


def test_a_full_disk_for_real(tmp_path, data_dir):
  """On a 2 MB tmpfs (in a private mount namespace), then the same after it
  grows to 32 MB; skipped where the machine cannot mount one."""
  unshare = shutil.which("unshare")
  mnt = tmp_path / "small"
  mnt.mkdir()
  probe = subprocess.run(
      [unshare or "unshare", "--mount", "--map-root-user", "sh", "-c",
       f"mount -t tmpfs -o size=2m tmpfs {mnt}"], capture_output=True,
      text=True, check=False) if unshare else None
  if probe is None or probe.returncode != 0:
    pytest.skip("cannot mount a tmpfs here (unshare --mount --map-root-user: "
                f"{probe.stderr.strip() if probe else 'not installed'})")
  main = [sys.executable, "-m", "gen_jax.main", "--exp=vae_mnist:smoke",
          f"--workdir={mnt}/w", *SMALL, "--config.train.ckpt_every=2",
          "--config.train.num_steps=6", "--config.train.sample_every=100"]
  script = (f"mount -t tmpfs -o size=2m tmpfs {mnt} && "
            f"{' '.join(main)} 2>{tmp_path}/full.err; echo $? >{tmp_path}/rc"
            f" && ls {mnt}/w/checkpoints >{tmp_path}/left && "
            f"mount -o remount,size=32m {mnt} && {' '.join(main)}")
  env = dict(os.environ, JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir,
             XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.run([unshare, "--mount", "--map-root-user", "sh", "-c",
                         script], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=600, check=False)
  err = (tmp_path / "full.err").read_text()
  assert (tmp_path / "rc").read_text().strip() == "2", err
  lines = [l for l in err.splitlines() if not l.startswith("W")]
  assert len(lines) == 1, err  # and nothing after it
  assert re.fullmatch(
      r"error: Could not save the checkpoint of step 4 in .*: No space left on"
      r" device \(a checkpoint needs about 1\.\d MB; [\d.]+ MB free there\); "
      r"the earlier checkpoints are untouched \(newest: step 2\)\..*",
      lines[0]), lines[0]
  assert (tmp_path / "left").read_text().split() == ["2"]
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert "resuming at step 2" in proc.stdout and "step 6/6" in proc.stdout


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_a_save_leaves_a_resumable_workdir(
    tmp_path, data_dir, sig):
  wd = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TFDS_DATA_DIR=data_dir,
             XLA_FLAGS="--xla_backend_optimization_level=0")
  proc = subprocess.Popen(
      [sys.executable, "-m", "gen_jax.main", "--exp=vae_mnist:smoke",
       f"--workdir={wd}", *SMALL, "--config.train.num_steps=100000",
       "--config.train.ckpt_every=1", "--config.train.keep_ckpts=2"],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  deadline = time.time() + 300
  ckpts = wd / "checkpoints"
  while time.time() < deadline:  # a save under way, after two complete ones
    names = [p.name for p in ckpts.iterdir()] if ckpts.is_dir() else []
    if (sum(n.isdigit() for n in names) >= 2 and
        any(n.endswith(".orbax-checkpoint-tmp") for n in names)):
      break
    time.sleep(0.002)
  proc.send_signal(getattr(signal, sig))
  _, err = proc.communicate(timeout=120)
  lines = [l for l in err.splitlines() if not l.startswith("W")]
  assert len(lines) == 1, err
  newest = max(checkpointing._step_dirs(ckpts))
  if sig == "SIGINT":
    assert proc.returncode == 130, err
    m = re.fullmatch(r"Interrupted at step (\d+); the newest checkpoint is "
                     r"step (\d+); re-run the same command to resume\.",
                     lines[0])
    assert m and int(m[2]) == newest and int(m[1]) >= newest, lines[0]
  else:
    assert proc.returncode == 143, err
    m = re.fullmatch(r"Preempted at step (\d+): checkpoint saved; re-run the "
                     r"same command to resume\.", lines[0])
    assert m and int(m[1]) == newest, lines[0]
  assert not [p for p in ckpts.iterdir() if "tmp" in p.name]
  assert _resume_step(wd, data_dir) == newest


def _resume_step(wd, data_dir):
  """The step a re-run resumes from (the same restore, with the iterator)."""
  config = smoke_config(data_dir)
  run = train.setup(config, str(wd), write_config=False)
  ckpt = checkpointing.Checkpointer(wd)
  try:
    return ckpt.restore_newest(run.abstract_state, run.data.train)[1]
  finally:
    ckpt.close()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_inside_the_save_call_waits_for_the_save(
    tmp_path, data_dir, monkeypatch, sig):
  """The signal arrives while the manager is being handed the step: the
  step is still saved whole, then the run stops in one line."""
  real_save = ocp.CheckpointManager.save

  def save(self, step, *args, **kwargs):
    if step == 4:
      os.kill(os.getpid(), getattr(signal, sig))
    return real_save(self, step, *args, **kwargs)
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  wd = tmp_path / "run"
  expected = {"SIGINT": (errors.Interrupted, r"Interrupted at step 4; the "
                         "newest checkpoint is step 4; re-run the same "
                         r"command to resume\."),
              "SIGTERM": (checkpointing.Preempted, r"Preempted at step 5: "
                          r"checkpoint saved; re-run the same command")}[sig]
  with pytest.raises(expected[0], match=expected[1]):
    train.train_and_evaluate(_config(data_dir), str(wd))
  assert max(checkpointing._step_dirs(wd / "checkpoints")) == (
      4 if sig == "SIGINT" else 5)


def test_sigterm_in_the_final_eval_stops_at_once(
    four_steps, tmp_path, data_dir, monkeypatch):
  """The last checkpoint is complete: nothing is lost by stopping at once
  (a re-run redoes only the final eval), and a scheduler's grace period is
  not spent on it."""
  real_final_eval = train.final_eval

  def final_eval(run, state):
    os.kill(os.getpid(), signal.SIGTERM)
    return real_final_eval(run, state)
  monkeypatch.setattr(train, "final_eval", final_eval)
  wd = _copy(four_steps, tmp_path)
  with pytest.raises(checkpointing.Preempted, match="Preempted at step 8"):
    # Step 8 of 8: straight to the final eval.
    train.train_and_evaluate(_config(data_dir, "train.num_steps=8"), str(wd))
  assert max(checkpointing._step_dirs(wd / "checkpoints")) == 8


def test_ctrl_c_in_eval_or_sampling_is_one_line(monkeypatch, capsys):
  from gen_jax import main  # pylint: disable=g-import-not-at-top

  def interrupted(*_):
    raise KeyboardInterrupt
  monkeypatch.setattr(train, "evaluate", interrupted)
  monkeypatch.setattr(sys, "argv", ["gen_jax.main", "--exp=vae_mnist:smoke",
                                    "--workdir=/nonexistent", "--mode=eval"])
  with pytest.raises(SystemExit) as e:
    main.run()
  assert e.value.code == 130
  assert capsys.readouterr().err.strip().splitlines()[-1] == "Interrupted."
