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

import pathlib
import signal
import threading
from typing import Any

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp

from gen_jax.errors import UserError

PyTree = Any


class Checkpointer:
  """Saves and restores `(state, data iterator)` pairs by step."""

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
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: PyTree,
           data_iter: grain.DatasetIterator | None = None) -> None:
    """Starts an asynchronous save of `state` (and the iterator position)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: PyTree, step: int | None = None,
              data_iter: grain.DatasetIterator | None = None) -> PyTree:
    """Restores the state at `step` (default latest) into `abstract_state`'s
    shapes and shardings; moves `data_iter` to where that step left off."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise UserError(f"No checkpoint in {self.directory}; train first "
                      "(--mode=train) with this --workdir.")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e)
      raise UserError(
          f"The checkpoint at step {step} in {self.directory} does not match "
          f"this config's train state ({first}). Use a new --workdir, or the "
          "config it was trained with.") from e
    logging.info("Restored step %d from %s.", step, self.directory)
    return restored["state"]

  def reached_preemption(self, step: int) -> bool:
    """True at the step all hosts agreed to save at after a preemption notice."""
    return self._manager.reached_preemption(step)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


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


class Preempted(Exception):
  """Raised after a preemption notice (SIGTERM) once a checkpoint is saved."""

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

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
