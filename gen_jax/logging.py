"""Run logs: metrics.jsonl, TensorBoard events and progress lines, process 0 only."""

import json
import logging as std_logging
import math
import os
import pathlib
import time
from typing import Mapping

from absl import logging as absl_logging
import jax
import numpy as np

from gen_jax import files
from gen_jax.errors import UserError


class MetricLogger:
  """Writes each logged step to `metrics.jsonl` and TensorBoard; prints progress.

  Every process may call it; only process 0 writes or prints. A `resumed`
  trainer first drops the rows past its checkpoint, which it will log again.
  Rows are appended a line each, so a kill can cut short only the last line:
  `files.read_jsonl` skips it, and the next logger removes it.
  """

  def __init__(self, workdir: str | pathlib.Path, total_steps: int,
               start_step: int = 0, resumed: bool = False):
    self.active = jax.process_index() == 0
    self.total_steps = total_steps
    self._t0, self._step0 = time.time(), start_step
    self._last_t, self._last_step = self._t0, start_step
    self._tb = None
    if self.active:
      workdir = pathlib.Path(workdir)
      path = workdir / "metrics.jsonl"
      if resumed and path.exists():  # re-logs the steps after its checkpoint
        _drop_rows_after(path, start_step)
      elif path.exists():
        _end_with_whole_line(path)
      self._jsonl = open(path, "a", buffering=1)
      import tensorboardX  # pylint: disable=g-import-not-at-top
      self._tb = tensorboardX.SummaryWriter(str(workdir / "tensorboard"),
                                            flush_secs=10)

  def reset_clock(self, step: int) -> None:
    """Restarts the steps/s clock (e.g. after compilation or an eval)."""
    self._last_t, self._last_step = time.time(), step

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.active:
      return
    record = {"step": int(step), "split": split}
    record.update({k: float(v) for k, v in metrics.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    for k, v in metrics.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), global_step=step)

  def progress(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
    """Prints 'step N/T | loss .. | x steps/s | ETA', returns the rate figures."""
    now = time.time()
    rate = (step - self._last_step) / max(now - self._last_t, 1e-9)
    self._last_t, self._last_step = now, step
    eta = (self.total_steps - step) / rate if rate > 0 else math.inf
    if self.active:
      shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
      print(f"step {step}/{self.total_steps} | {shown} | {rate:.2f} steps/s | "
            f"ETA {_duration(eta)}", flush=True)
    return {"steps_per_sec": rate}

  def image(self, step: int, tag: str, image_HWC: np.ndarray) -> None:
    if self.active:
      self._tb.add_image(tag, np.asarray(image_HWC), global_step=step,
                         dataformats="HWC")

  def text(self, line: str) -> None:
    if self.active:
      print(line, flush=True)

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      self._tb.close()


def _drop_rows_after(path: pathlib.Path, step: int) -> None:
  """Rewrites the file (atomically) without the rows past `step` and without
  a last line cut short by a kill."""
  kept = [r for r in files.read_jsonl(path) if r.get("step", step + 1) <= step]
  files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _end_with_whole_line(path: pathlib.Path) -> None:
  """Before appending: drops a last line cut short by a kill (or ends a whole
  one), so that the next row starts a line of its own. Edits only the tail: a
  trainer may be appending to the same file."""
  with open(path, "rb+") as f:
    if f.seek(0, os.SEEK_END) == 0:
      return
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b"\n":
      return
    f.seek(0)
    data = f.read()
    start = data.rfind(b"\n") + 1
    try:
      json.loads(data[start:])
      f.write(b"\n")  # a whole row, unterminated
    except ValueError:
      f.truncate(start)


class Progress:
  """'LABEL done/total (rate/s, ETA)' lines for long non-training work, at
  most one per `every` seconds (and the last); process 0 only."""

  def __init__(self, label: str, total: int, unit: str = "",
               every: float = 10.0):
    self.label, self.total, self.unit, self.every = label, total, unit, every
    self._t0 = self._last = time.time()

  def due(self, done: int) -> bool:
    """Whether `self(done)` would print now."""
    return jax.process_index() == 0 and (
        time.time() - self._last >= self.every or done >= self.total)

  def __call__(self, done: int, note: str = "") -> None:
    if not self.due(done):
      return
    now = time.time()
    self._last = now
    rate = done / max(now - self._t0, 1e-9)
    eta = (self.total - done) / rate if rate > 0 else math.inf
    extra = f" {note}" if note else ""
    print(f"{self.label} {done}/{self.total}{self.unit}{extra} | "
          f"{rate:.3g}{self.unit}/s | ETA {_duration(eta)}", flush=True)


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fail_on_nonfinite(step: int, metrics: Mapping[str, float]) -> None:
  """Stops the run on NaN/Inf, naming the step and the metric."""
  for k, v in metrics.items():
    if not np.all(np.isfinite(v)):
      raise UserError(f"Training diverged: metric '{k}' is {float(v)} at step "
                      f"{step}. Try a lower --config.train.learning_rate or "
                      "--config.train.grad_clip_norm.")


class _LibraryFilter(std_logging.Filter):
  """Drops library records below ERROR (Orbax reports every save at INFO and
  benign notes at WARNING), and all of Orbax's (with the asyncio reports of
  the futures it leaves behind on an error): its errors reach the caller
  as exceptions, which `gen_jax.checkpointing` reports in one line, while
  its log repeats each with a traceback per thread. The project's own
  warnings still show; --verbosity=0 shows everything."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    def logged_by(lib):
      return f"{os.sep}{lib}{os.sep}" in record.pathname
    if logged_by("orbax") or (  # and the loops Orbax abandons on an error
        record.name == "asyncio" and
        "exception was never retrieved" in record.getMessage()):
      return False
    noisy = logged_by("tensorflow_datasets") or logged_by("grain")
    return record.levelno >= std_logging.ERROR or not noisy


def quiet_library_logs() -> None:
  absl_logging.set_verbosity(absl_logging.WARNING)
  for handler in std_logging.getLogger().handlers + [
      absl_logging.get_absl_handler()]:
    handler.addFilter(_LibraryFilter())
