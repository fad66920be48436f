"""Outputs are written whole or not at all; metrics.jsonl survives a kill
mid-write. Writes are interrupted by patching the writer underneath to write
part of the file and then raise."""

import errno
import fnmatch
import os
import threading
import types

import ml_collections
import numpy as np
from PIL import Image
import pytest

from gen_jax import files
from gen_jax import logging as log_lib
from gen_jax import sampling
from gen_jax import train
from gen_jax.data import embedded
from gen_jax.data import sources
from gen_jax.data import tokenizers
from gen_jax.errors import UserError
from gen_jax.evaluation import grids
from gen_jax.evaluation import sample_quality


def _disk_full(*args, **kwargs):
  del args, kwargs
  raise OSError(errno.ENOSPC, "No space left on device")


def _half_then_fail(file, *args, **kwargs):
  """np.save/np.savez that write part of the file, then hit a full disk."""
  del args, kwargs
  file.write(b"\x93NUMPY half an array")
  file.flush()
  _disk_full()


def _entries(directory) -> list[str]:
  return sorted(os.listdir(directory))


# ------------------------------------------------------------------ writing


def test_failed_write_text_keeps_the_old_file_and_no_temp(tmp_path,
                                                          monkeypatch):
  path = tmp_path / "eval_step_5.json"
  files.write_text(path, '{"old": 1}')
  monkeypatch.setattr(os, "fsync", _disk_full)  # after the bytes are written
  with pytest.raises(OSError, match="No space"):
    files.write_text(path, '{"new": 2, "and more": 3}')
  assert path.read_text() == '{"old": 1}'
  assert _entries(tmp_path) == ["eval_step_5.json"]


def test_failed_block_keeps_the_old_file_and_no_temp(tmp_path):
  path = tmp_path / "step_5.txt"
  files.write_bytes(path, b"old")
  with pytest.raises(ValueError):
    with files.atomic_open(path, "wb") as f:
      f.write(b"half of the new")
      f.flush()
      raise ValueError("cut")
  assert path.read_bytes() == b"old"
  assert _entries(tmp_path) == ["step_5.txt"]


def test_failed_png_keeps_the_old_grid_and_no_temp(tmp_path, monkeypatch):
  path = tmp_path / "samples" / "step_10.png"
  old = np.zeros((4, 4, 1), np.float32)
  grids.save_png(path, old, scale=1)

  def half_then_fail(self, fp, *args, **kwargs):
    del self, args, kwargs
    fp.write(b"\x89PNG\r\n\x1a\n half a picture")
    fp.flush()
    _disk_full()

  monkeypatch.setattr(Image.Image, "save", half_then_fail)
  with pytest.raises(OSError, match="No space"):
    grids.save_png(path, np.ones((4, 4, 1), np.float32), scale=1)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), old[..., 0])
  assert _entries(path.parent) == ["step_10.png"]


def _fake_run(workdir):
  """Just what `sampling.export_samples` reads of a run."""
  return types.SimpleNamespace(
      config=ml_collections.ConfigDict(
          {"sample": {"num_samples": 3, "labels": ()}}),
      family=types.SimpleNamespace(
          num_classes=0, export_samples=lambda s: {"samples": s}),
      workdir=workdir)


def test_failed_sample_export_keeps_the_old_npz_and_no_temp(tmp_path,
                                                            monkeypatch):
  run = _fake_run(tmp_path)
  value = [1.0]
  monkeypatch.setattr(train, "generate", lambda *a, **k: (
      np.full((3, 2), value[0], np.float32), 0.0))
  path = sampling.export_samples(run, None, 7, None)
  assert path == tmp_path / "samples" / "sample_step_7.npz"
  value[0] = 2.0
  monkeypatch.setattr(np, "savez", _half_then_fail)
  with pytest.raises(OSError, match="No space"):
    sampling.export_samples(run, None, 7, None)
  with np.load(path) as f:
    np.testing.assert_array_equal(f["samples"], np.ones((3, 2)))
  assert _entries(path.parent) == ["sample_step_7.npz"]


def test_failed_token_cache_write_leaves_nothing_to_read(tmp_path,
                                                        monkeypatch):
  tok = types.SimpleNamespace(
      cache_encodings=True, name="slow", fingerprint="slow-1",
      encode=lambda s: np.arange(len(s), dtype=np.int32))
  monkeypatch.setattr(np, "save", _half_then_fail)
  ids = tokenizers.encode_corpus(tok, "some text", "t-train", str(tmp_path))
  np.testing.assert_array_equal(ids, np.arange(9))  # cached or not
  assert _entries(tmp_path) == []


def test_failed_reference_stats_write_leaves_nothing_to_read(tmp_path,
                                                            monkeypatch):
  weights = tmp_path / "weights.pth"
  weights.write_bytes(b"w")
  config = ml_collections.ConfigDict({"eval": {
      "stats_dir": str(tmp_path / "cache"), "inception_weights": str(weights),
      "classifier_workdir": ""}})

  def extractor(x):
    return {"features": x.reshape(len(x), -1).astype(np.float32)}

  extractor.name = "inception_v3"
  images = [np.arange(12, dtype=np.uint8).reshape(3, 2, 2)]
  monkeypatch.setattr(np, "savez", _half_then_fail)
  with pytest.raises(OSError, match="No space"):
    sample_quality.reference_features(extractor, config, "d-test", images)
  assert _entries(tmp_path / "cache" / "reference_stats") == []


def test_ctrl_c_mid_write_removes_the_temp(tmp_path, monkeypatch):
  path = tmp_path / "config.json"
  files.write_text(path, "{}")
  with pytest.raises(KeyboardInterrupt):
    with files.atomic_open(path) as f:
      f.write('{"half": ')
      raise KeyboardInterrupt

  real_fsync, calls = os.fsync, []

  def interrupt(fd):  # once, in this thread; any other caller is served
    if calls or threading.current_thread() is not threading.main_thread():
      return real_fsync(fd)
    calls.append(fd)
    raise KeyboardInterrupt

  monkeypatch.setattr(os, "fsync", interrupt)
  with pytest.raises(KeyboardInterrupt):
    files.write_text(path, '{"whole": 1}')
  assert path.read_text() == "{}"
  assert _entries(tmp_path) == ["config.json"]


def test_write_creates_the_directory_and_replaces_the_file(tmp_path):
  path = tmp_path / "a" / "b" / "c.txt"
  files.write_text(path, "one")
  files.write_text(path, "two")
  assert path.read_text() == "two" and _entries(path.parent) == ["c.txt"]


def test_temp_names_are_hidden_unique_and_match_no_output_pattern(tmp_path):
  patterns = ["*.png", "*.npz", "*.json", "*.txt", "*.npy", "eval_step_*.json",
              "step_*", "[0-9]*", "config.json", "metrics.jsonl"]
  for name in ("step_10.png", "sample_step_7.npz", "eval_step_3.json",
               "12", "config.json", "metrics.jsonl"):
    with files.atomic_path(tmp_path / name) as tmp:
      assert tmp.parent == tmp_path and tmp.name.startswith(".")
      assert f".{os.getpid()}-" in tmp.name
      assert not [p for p in patterns if fnmatch.fnmatch(tmp.name, p)], tmp
      tmp.write_text("x")
  names = {files.temp_path(tmp_path / "x.png").name for _ in range(100)}
  assert len(names) == 100


def test_stray_of_a_killed_tfds_prepare_is_not_taken_for_data(tmp_path):
  stray = tmp_path / "mnist" / f"{embedded.INCOMPLETE}X7Q2ZD_3.0.1"
  stray.mkdir(parents=True)
  (stray / "mnist-train.array_record-00000-of-00001").write_bytes(b"")
  assert not sources.is_prepared("mnist", str(tmp_path))
  done = tmp_path / "mnist" / "3.0.1"
  done.mkdir()
  (done / "mnist-train.array_record-00000-of-00001").write_bytes(b"")
  assert sources.is_prepared("mnist", str(tmp_path))


def test_embedded_prepare_removes_a_killed_prepare_stray(data_dir):
  stray = os.path.join(data_dir, embedded.NAME,
                       f"{embedded.INCOMPLETE}TEST{os.getpid()}_1.0.0")
  os.makedirs(stray)
  embedded.prepare(data_dir)
  assert not os.path.exists(stray)
  assert sources.is_prepared(embedded.NAME, data_dir)


# ------------------------------------------------------------------ reading


def test_read_jsonl_skips_a_cut_short_last_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 5, "split": "train"}\n\n'
                  '{"step": 10, "split": "train"}\n{"step": 15, "spl')
  assert files.read_jsonl(path) == [{"step": 5, "split": "train"},
                                    {"step": 10, "split": "train"}]
  path.write_text('{"step": 5}\n{"step": 10}\n')
  assert files.read_jsonl(path) == [{"step": 5}, {"step": 10}]


@pytest.mark.parametrize("bad", ['{"step": 10, "spl', "[1, 2]"])
def test_read_jsonl_names_a_bad_line_before_the_last(tmp_path, bad):
  path = tmp_path / "metrics.jsonl"
  path.write_text(f'{{"step": 5}}\n{bad}\n{{"step": 15}}\n')
  with pytest.raises(UserError) as e:
    files.read_jsonl(path)
  message = str(e.value)
  assert f"{path}, line 2: not a JSON object" in message
  assert "\n" not in message


def test_loggers_after_a_kill_mid_row_write_whole_lines(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 5, "split": "train", "loss": 1.5}\n'
                  '{"step": 10, "split": "train", "loss": 1.25}\n{"step": 1')
  logger = log_lib.MetricLogger(tmp_path, 20, 10)  # e.g. --mode=eval
  logger.write(10, "eval", {"loss": 1.0})
  logger.close()
  assert [(r["step"], r["split"]) for r in files.read_jsonl(path)] == [
      (5, "train"), (10, "train"), (10, "eval")]
  assert path.read_text().endswith('"loss": 1.0}\n')
  with open(path, "a") as f:
    f.write('{"step": 15, "split": "tr')
  logger = log_lib.MetricLogger(tmp_path, 20, 5, resumed=True)
  logger.write(10, "train", {"loss": 1.125})
  logger.close()
  lines = path.read_text().splitlines()
  assert lines == ['{"step": 5, "split": "train", "loss": 1.5}',
                   '{"step": 10, "split": "train", "loss": 1.125}']
