"""Everything Orbax: one CheckpointManager per workdir holding, per step, the
train state (params, optimizer state, EMA, ...) and each process's data-iterator
state, saved together.

Saves are asynchronous (training goes on while arrays are written) and atomic:
Orbax writes a step into a temporary directory and renames it only once every
item is complete, so a run killed at any moment leaves either a whole step or
none, and the next start cleans up the leftovers and resumes from the last
whole one.

A preemption notice (SIGTERM) is watched here too (`PreemptionWatch`): the
trainer saves at the step it reaches and raises `Preempted`.
"""

import contextlib
import os
import pathlib
import re
import shutil
import signal
import sys
import threading
from typing import Any

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from gen_jax.errors import Stopped
from gen_jax.errors import UserError

PyTree = Any


class Unreadable(Exception):
  """A checkpoint step that cannot be read (data loss, truncated or missing
  files); the message is the reason, in a few words."""


class Checkpointer:
  """Saves and restores `(state, data iterator)` pairs by step.

  Faults end in one line: a step that cannot be read is moved aside as
  `<step>.unreadable` and the newest readable one is used (`restore_newest`);
  a save that fails (full disk, unwritable storage) raises a UserError naming
  the step, the directory, the reason and the size a checkpoint needs, with
  the partial step removed and the earlier ones untouched.
  """

  def __init__(self, workdir: str | pathlib.Path, keep: int = 3,
               read_only: bool = False):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep,
        create=not read_only,
        read_only=read_only,
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=not read_only,
    )
    _drop_closed_loop_noise()
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._in_flight = None  # the step an asynchronous save is writing
    self._nbytes = 0  # of the last state saved
    self._failed = self._closed = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree,
           data_iter: grain.DatasetIterator | None = None) -> None:
    """Starts an asynchronous save of `state` (and the iterator position),
    once the previous one is complete; a failure of either raises."""
    self.wait()
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self._nbytes = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
    try:
      with _sigint_deferred():  # never leave the manager half-way into a save
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(step, e)
    self._in_flight = step

  def wait(self) -> None:
    """Blocks until the save in flight is complete; raises if it failed."""
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      self._fail(self._in_flight, e)
    self._in_flight = None

  def check(self) -> None:
    """Raises at once if the save in flight has failed (cheap: once a step),
    so that training never goes on without checkpoints."""
    if (self._in_flight is not None and
        not self._manager.is_saving_in_progress()):
      self.wait()

  def _fail(self, step: int | None, error: Exception) -> None:
    self._failed = True
    if jax.process_index() == 0:  # the partial step: garbage that fills a disk
      for partial in self.directory.glob(f"{step}{_TMP}*"):
        shutil.rmtree(partial, ignore_errors=True)
    try:
      free = _megabytes(shutil.disk_usage(self.directory).free)
    except OSError:
      free = "?"
    newest = max((s for s in _step_dirs(self.directory) if s != step),
                 default=None)
    kept = (f"the earlier checkpoints are untouched (newest: step {newest})"
            if newest is not None else "no earlier checkpoint")
    raise UserError(
        f"Could not save the checkpoint of step {step} in {self.directory}: "
        f"{_reason(error)} (a checkpoint needs about "
        f"{_megabytes(self._nbytes)}; {free} free there); {kept}. Free "
        "space or fix the storage, then re-run the same command to resume "
        f"from step {newest or 0}.") from error

  def restore(self, abstract_state: PyTree, step: int,
              data_iter: grain.DatasetIterator | None = None) -> PyTree:
    """Restores the state at `step` into `abstract_state`'s shapes and
    shardings, and moves `data_iter` to where that same step left off.

    Raises:
      Unreadable: the step's files cannot be read.
      UserError: they can, but hold another config's train state.
    """
    self._check_layout(step, abstract_state)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      raise Unreadable(_reason(e)) from e
    logging.info("Restored step %d from %s.", step, self.directory)
    return restored["state"]

  def _check_layout(self, step: int, abstract_state: PyTree) -> None:
    """Tells 'made with another config' from 'cannot be read' by the saved
    metadata: the names and shapes of every array."""
    try:
      with ocp.StandardCheckpointer() as reader:
        metadata = reader.metadata(self.directory / str(step) / "state")
    except Exception as e:  # pylint: disable=broad-except
      raise Unreadable(_reason(e)) from e
    if metadata.item_metadata is None:
      return  # damaged: the restore itself will say how
    saved = _shapes(metadata.item_metadata.tree)
    wanted = _shapes(abstract_state)
    diffs = [f"{'.'.join(k)}: saved {saved.get(k)}, now {wanted.get(k)}"
             for k in [*wanted, *(k for k in saved if k not in wanted)]
             if saved.get(k) != wanted.get(k)]
    if diffs:
      more = f" and {len(diffs) - 1} more" if len(diffs) > 1 else ""
      raise UserError(
          f"The checkpoint at step {step} in {self.directory} holds another "
          f"config's train state ({diffs[0]}{more}). Use a new --workdir, or "
          "the config and code it was trained with.")

  def restore_newest(self, abstract_state: PyTree,
                     data_iter: grain.DatasetIterator | None = None
                     ) -> tuple[PyTree, int] | None:
    """The newest readable step's state, and the step; None without steps.

    A step that cannot be read (on any process) is moved aside as
    `<step>.unreadable`, never deleted, with a one-line warning; if none can
    be read, a UserError says so.
    """
    set_aside = []
    for step in sorted(self.all_steps(), reverse=True):
      state, reason = None, "unreadable on another process"
      try:
        state = self.restore(abstract_state, step, data_iter)
      except Unreadable as e:
        reason = str(e)
      if _everywhere(state is not None):
        return state, step
      moved = self._set_aside(step)
      logging.warning("The checkpoint at step %d in %s cannot be read (%s); "
                      "%s.", step, self.directory, reason,
                      f"moved it to {moved.name}" if moved else
                      "could not move it aside")
      set_aside.append(f"step {step} ({reason})")
    if set_aside:
      raise UserError(
          f"No readable checkpoint in {self.directory}: "
          f"{'; '.join(set_aside)}; moved aside as <step>.unreadable. Re-run "
          "to start again from step 0, or use a new --workdir.")
    return None

  def _set_aside(self, step: int) -> pathlib.Path | None:
    target = self.directory / f"{step}.unreadable"
    n = 1
    while target.exists():
      target, n = self.directory / f"{step}.unreadable.{n}", n + 1
    moved = target
    if jax.process_index() == 0:
      try:
        (self.directory / str(step)).rename(target)
      except OSError:
        moved = None
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"gen_jax_set_aside_{step}")
    self._manager.reload()
    return moved

  def reached_preemption(self, step: int) -> bool:
    """True at the step all hosts agreed to save at after a preemption notice."""
    return self._manager.reached_preemption(step)

  def close(self, quiet: bool = False) -> None:
    """Waits for the save in flight and closes; `quiet` (on the way out of an
    error) never raises, so that error is the one reported."""
    if self._closed:
      return
    self._closed = True
    try:
      if not self._failed:
        self.wait()
    except UserError:
      if not quiet:
        raise
    finally:
      with contextlib.suppress(Exception):  # a failed save: already reported
        self._manager.close()


_TMP = ".orbax-checkpoint-tmp"


def _step_dirs(directory: pathlib.Path) -> list[int]:
  """The complete steps on disk (Orbax renames a step's directory to its
  number only once every item is written)."""
  try:
    return [int(p.name) for p in directory.iterdir() if p.name.isdigit()]
  except OSError:
    return []


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _shapes(tree: PyTree) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Path (as names) -> shape, for a train state or its saved metadata."""
  return {tuple(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _reason(error: BaseException) -> str:
  """A storage error's cause in a few words (TensorStore's messages carry
  the whole chain of drivers and a kilobyte-long spec)."""
  if isinstance(error, OSError) and error.strerror:
    return error.strerror
  text = (str(error).strip() or type(error).__name__).splitlines()[0]
  code = re.search(r"os_error_code='?(\d+)", text)
  if code:
    return os.strerror(int(code.group(1)))
  text = text.split(" [tensorstore_spec=")[0]
  parts = text.split(": ")
  status = parts[0] if re.fullmatch(r"[A-Z_]+", parts[0]) else ""
  detail = ": ".join(parts[-2:] if status else parts).split(";")[0]
  if status and len(parts) > 1:
    detail = f"{status}: {detail}" if len(parts) > 2 else text
  return detail[:240]


def _megabytes(n: float) -> str:
  return f"{n / 2**20:.1f} MB"


def _everywhere(ok: bool) -> bool:
  """`ok` on every process (all read a step, or all move it aside)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


@contextlib.contextmanager
def _sigint_deferred():
  """Holds a Ctrl-C until the block is done, then raises it."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  received = []
  previous = signal.signal(signal.SIGINT, lambda *a: received.append(a))
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
    if received and callable(previous):
      previous(*received[0])


def _drop_closed_loop_noise() -> None:
  """Hides 'RuntimeError: Event loop is closed': TensorStore completing the
  writes of a save Orbax already gave up on (a full disk) reports each one
  this way, after the error itself has been raised and reported."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_closed_loop", False):
    return

  def hook(unraisable):
    value = unraisable.exc_value
    if not (isinstance(value, RuntimeError) and
            str(value) == "Event loop is closed"):
      previous(unraisable)
  hook.drops_closed_loop = True
  sys.unraisablehook = hook


def abstract_with_shardings(abstract_state: PyTree, shardings: PyTree) -> PyTree:
  """ShapeDtypeStructs that carry the shardings to restore into."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_state, shardings)


def load_state(workdir: str | pathlib.Path, step: int | None = None) -> PyTree:
  """Reads a saved train state onto this host's first device, whatever the
  topology it was saved from (for inspection, tests and notebooks)."""
  manager = Checkpointer(workdir, read_only=True)
  step = manager.latest_step() if step is None else step
  manager.close()
  if step is None:
    raise UserError(f"No checkpoint in {workdir}.")
  path = manager.directory / str(step) / "state"
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  return checkpointer.restore(path, abstract)


class Preempted(Stopped):
  """Raised after a preemption notice (SIGTERM) once a checkpoint is saved."""
  exit_code = 143  # 128 + SIGTERM, what a scheduler expects of a killed job

  def __init__(self, step: int):
    super().__init__(f"Preempted at step {step}: checkpoint saved; re-run the "
                     "same command to resume.")
    self.step = step


class PreemptionWatch:
  """Notices SIGTERM. One process: our own handler. Several: JAX's preemption
  service, which picks the same step on every host (via Orbax)."""

  def __init__(self, ckpt: Checkpointer):
    self._ckpt = ckpt
    self._flag = threading.Event()
    self._previous = None
    if (jax.process_count() == 1 and
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM,
                                     lambda *_: self._flag.set())

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      return self._ckpt.reached_preemption(step)
    return self._flag.is_set()

  def stop_at_once(self, step: int) -> None:
    """Once the last checkpoint (`step`) is complete: a SIGTERM, earlier or
    from now on, stops the run where it is (e.g. in the final eval)."""
    if self._previous is None:
      return

    def stop(*_):
      raise Preempted(step)
    signal.signal(signal.SIGTERM, stop)
    if self._flag.is_set():
      stop()

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def restore_into(abstract: PyTree, saved: PyTree) -> PyTree:
  """Puts the arrays of `saved` (the nested dicts `load_state` returns) into
  the pytree structure of `abstract`, matching leaves by path."""
  def lookup(path, _):
    node = saved
    for key in path:
      if isinstance(key, jax.tree_util.SequenceKey):
        name = key.idx
      else:
        name = key.key if isinstance(key, jax.tree_util.DictKey) else key.name
      node = node[name] if isinstance(node, (list, tuple)) else node[str(name)]
    return node
  return jax.tree_util.tree_map_with_path(lookup, abstract)
