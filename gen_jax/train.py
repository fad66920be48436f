"""The one training loop, for every family.

build mesh -> data -> family -> restore or init (already sharded) -> compiled
steps -> periodic eval / pictures / checkpoints / logs. Nothing here knows which
family it is running: all of that lives behind `gen_jax.families.base.Family`.
"""

import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gen_jax import checkpointing
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import files
from gen_jax import logging as log_lib
from gen_jax import parallel
from gen_jax.data import pipeline
from gen_jax.errors import Interrupted
from gen_jax.errors import UserError
from gen_jax.evaluation import evaluators
from gen_jax.evaluation import grids
from gen_jax.models import conv as conv_lib

PyTree = Any


@dataclasses.dataclass
class Run:
  """Everything a mode needs, built once from (config, workdir)."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  mesh: jax.sharding.Mesh
  family: families.Family
  data: pipeline.Data
  state_shardings: PyTree
  abstract_state: PyTree  # ShapeDtypeStructs carrying the shardings
  init_batch: dict[str, jax.Array]
  keys: dict[str, jax.Array]
  eval_fns: dict[bool, Any] = dataclasses.field(default_factory=dict)


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict,
                    write_config: bool = True) -> pathlib.Path:
  """Checks the workdir is writable and holds no checkpoint of another config."""
  path = pathlib.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise UserError(f"--workdir={workdir} is not writable "
                    f"({e.strerror or e}).") from e
  saved = path / "config.json"
  has_ckpt = any((path / "checkpoints").glob("[0-9]*"))
  if saved.exists() and has_ckpt:
    diffs = config_lib.structural_differences(json.loads(saved.read_text()),
                                              config)
    if diffs:
      raise UserError(
          f"--workdir={workdir} holds checkpoints of an incompatible config "
          f"({'; '.join(diffs[:4])}). Use a new --workdir, or the same "
          "experiment and model settings.")
  if write_config and jax.process_index() == 0:
    files.write_text(saved, config_lib.to_json(config))
  return path


def setup(config: ml_collections.ConfigDict, workdir: str,
          write_config: bool = True) -> Run:
  path = prepare_workdir(workdir, config, write_config)
  conv_lib.set_impl(config.train.conv)
  mesh = parallel.make_mesh(config)
  data = pipeline.make(config, jax.process_index(), jax.process_count(),
                       parallel.num_batch_shards(mesh), str(path))
  family = families.build(config, tokenizer=data.tokenizer)
  parallel.check_model_axis(mesh, family.model_parallel, config.family)
  root = jax.random.key(config.seed)
  keys = dict(zip(("init", "train", "eval", "sample"),
                  jax.random.split(root, 4)))
  init_batch = parallel.global_batch(data.init_batch, mesh)
  abstract = jax.eval_shape(family.init, keys["init"], init_batch)
  shardings = parallel.state_shardings(abstract, mesh,
                                       family.partition_rules(),
                                       config.mesh.fsdp_min_size)
  abstract = checkpointing.abstract_with_shardings(abstract, shardings)
  return Run(config, path, mesh, family, data, shardings, abstract,
             init_batch, keys)


def _restore_or_init(run: Run, ckpt: checkpointing.Checkpointer
                     ) -> tuple[PyTree, int]:
  """The newest readable checkpoint, with the data iterator at the same
  step, or step 0."""
  restored = ckpt.restore_newest(run.abstract_state, run.data.train)
  return restored if restored is not None else (_init(run)[0], 0)


def _init(run: Run) -> tuple[PyTree, bool]:
  """Step 0, created sharded; from pretrained weights where the family has
  them (then True)."""
  init = jax.jit(run.family.init, out_shardings=run.state_shardings)
  state = init(run.keys["init"], run.init_batch)
  pretrained = run.family.warm_start(state, run.init_batch)
  return (state, False) if pretrained is None else (pretrained, True)


def _eval_fn(run: Run, final: bool):
  """The compiled eval step, built once per run and value of `final`."""
  if final in run.eval_fns:
    return run.eval_fns[final]
  batch_sharding = parallel.batch_sharding(run.mesh)
  run.eval_fns[final] = jax.jit(
      lambda s, b, k: run.family.eval_step(s, b, k, final=final),
      in_shardings=(run.state_shardings, batch_sharding,
                    parallel.replicated(run.mesh)),
      out_shardings=parallel.replicated(run.mesh))
  return run.eval_fns[final]


def run_eval(run: Run, state: PyTree, final: bool) -> dict[str, float]:
  """One pass over the held-out split; the same keys every time."""
  eval_step = _eval_fn(run, final)
  num_batches = -(-run.data.num_eval // run.data.eval_batch_size)
  progress = log_lib.Progress("final eval" if final else "eval", num_batches,
                              " batches")
  totals = None
  for i, local in enumerate(run.data.eval_batches()):
    batch = parallel.global_batch(local, run.mesh)
    sums = eval_step(state, batch, jax.random.fold_in(run.keys["eval"], i))
    if totals is not None:
      # The previous batch is done (this one keeps the device busy): the
      # progress reports work done, not work dispatched.
      jax.block_until_ready(totals)
      progress(i)
    # Summed on the device, fetched once at the end.
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  totals = jax.device_get(totals)
  progress(num_batches)
  return run.family.summarize_eval(
      {k: float(v) if np.ndim(v) == 0 else np.asarray(v)
       for k, v in totals.items()})


def generate(run: Run, state: PyTree, num: int, key: jax.Array,
             labels: np.ndarray | None = None,
             prompts: list[str] | None = None,
             guidance_scale: float | None = None
             ) -> tuple[np.ndarray, float]:
  """`num` samples in batches of data.eval_batch_size laid over the mesh,
  with progress; returns them on the host and the seconds per sample.
  `prompts` (cycled) and `guidance_scale` go to a captioned family."""
  per_call = run.data.eval_batch_size  # a multiple of the batch shards
  sharding = parallel.batch_sharding(run.mesh)
  progress = log_lib.Progress("sampled", num, " samples")
  chunks, t0 = [], time.time()
  for start in range(0, num, per_call):
    batch_labels = None if labels is None else np.resize(
        labels[start:start + per_call], per_call)
    done = len(chunks) * per_call
    in_batch = min(per_call, num - done)

    def report(steps, total, done=done, in_batch=in_batch):
      # Counts the batch's images pro rata, so the rate and ETA move with it.
      progress(done + in_batch * steps // total, f"(step {steps}/{total})")

    options = {}
    if prompts is not None:
      options = dict(prompts=[prompts[(start + i) % len(prompts)]
                              for i in range(per_call)],
                     guidance_scale=guidance_scale)
    images = run.family.sample(state, jax.random.fold_in(key, start),
                               per_call, batch_labels, sharding, report,
                               **options)
    chunks.append(parallel.to_host(images))
    progress(min(start + per_call, num))
  seconds = (time.time() - t0) / max(num, 1)
  return np.concatenate(chunks)[:num], seconds


def eval_context(run: Run, state: PyTree) -> evaluators.EvalContext:
  """What the configured evaluators may use: sampling over the mesh, the
  held-out split, and this trainer (for runs they depend on)."""
  key = jax.random.fold_in(run.keys["eval"], 2**31 - 1)

  def real_batches():
    for local in run.data.eval_batches():
      batch = parallel.to_host(parallel.global_batch(local, run.mesh))
      real = batch["mask"] > 0
      yield {k: v[real] for k, v in batch.items() if k != "mask"}

  return evaluators.EvalContext(
      config=run.config, num_classes=run.family.num_classes,
      split_name=f"{run.data.dataset}-eval{run.data.num_eval}",
      sample=lambda num, labels: generate(run, state, num, key, labels),
      real_batches=real_batches, train=train_and_evaluate,
      captioned=run.family.captioned,
      sample_prompts=lambda prompts, scale: generate(
          run, state, len(prompts), key, prompts=prompts,
          guidance_scale=scale),
      translate=(lambda source, beam: run.family.translate(
          state, source, beam, parallel.batch_sharding(run.mesh)))
      if run.family.translates else None,
      detokenize=getattr(run.family.tokenizer, "decode", None),
      output_dir=(run.workdir / "translations"
                  if jax.process_index() == 0 else None))


def final_eval(run: Run, state: PyTree) -> dict[str, float]:
  """The family's paper-grade held-out metrics, then the configured
  evaluators'."""
  result = run_eval(run, state, final=True)
  result.update(evaluators.run_all(run.config, eval_context(run, state)))
  return result


def write_pictures(run: Run, state: PyTree, step: int, key: jax.Array,
                   logger: log_lib.MetricLogger | None = None,
                   prefix: str = "") -> list[pathlib.Path]:
  """Renders the family's pictures; process 0 writes samples/<name>_step_N."""
  local = next(iter(run.data.eval_batches()))
  batch = parallel.to_host(parallel.global_batch(local, run.mesh))
  pictures = run.family.visualize(state, batch, key)
  paths = []
  for name, value in pictures.items():
    stem = f"{prefix}step_{step}" if name == "samples" else (
        f"{prefix}{name}_step_{step}")
    path = run.workdir / "samples" / (
        stem + (".txt" if isinstance(value, str) else ".png"))
    paths.append(path)
    if jax.process_index() != 0:
      continue
    if isinstance(value, str):
      files.write_text(path, value)
    else:
      grids.save_png(path, value)
      if logger is not None:
        logger.image(step, name, value)
  return paths


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       stop_after: int | None = None) -> dict[str, float]:
  """Trains (resuming from the workdir if it holds a checkpoint), then runs
  the final evaluation.

  Args:
    config: the resolved config.
    workdir: where the run lives; a second call resumes it.
    stop_after: stop after this many steps of this call, with a checkpoint and
      no final eval, as a preemption would (time-sliced jobs, tests).

  Returns:
    The final eval metrics ({} when stopped early).
  """
  run = setup(config, workdir)
  tc = config.train
  ckpt = checkpointing.Checkpointer(run.workdir, keep=tc.keep_ckpts)
  try:
    state, start = _restore_or_init(run, ckpt)
  except BaseException:
    ckpt.close(quiet=True)
    raise
  logger = log_lib.MetricLogger(run.workdir, tc.num_steps, start,
                                resumed=True)
  logger.text(f"{config.family} on {run.data.dataset} "
              f"({run.data.num_train} train / {run.data.num_eval} eval); "
              f"{jax.device_count()} {jax.default_backend()} devices, "
              f"mesh {dict(run.mesh.shape)}; "
              + (f"resuming at step {start}." if start else "starting.")
              + f" Convolutions: {conv_lib.describe()}.")

  batch_sharding = parallel.batch_sharding(run.mesh, config.data.batch_size)
  replicated = parallel.replicated(run.mesh)
  train_step = jax.jit(
      run.family.train_step,
      in_shardings=(run.state_shardings, batch_sharding, replicated),
      out_shardings=(run.state_shardings, replicated),
      donate_argnums=0)

  pending = None  # (step, device metrics): fetched one step late
  window: list[dict[str, float]] = []

  def drain():
    nonlocal pending
    if pending is not None:
      step_done, metrics = pending
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      log_lib.fail_on_nonfinite(step_done, host)
      window.append(host)
      pending = None

  watch = checkpointing.PreemptionWatch(ckpt)
  done = start
  try:
    # One executable per batch shape (data may cut batches to their
    # longest row, e.g. length-bucketed sentence pairs).
    compiled = {}
    for step in range(start, tc.num_steps):
      batch = parallel.global_batch(next(run.data.train), run.mesh)
      key = jax.random.fold_in(run.keys["train"], step)
      shapes = tuple((k, v.shape) for k, v in sorted(batch.items()))
      if shapes not in compiled:
        t0 = time.time()
        compiled[shapes] = train_step.lower(state, batch, key).compile()
        logger.text(f"Compiled the train step in {time.time() - t0:.1f}s"
                    + (f" (batch shapes {dict(shapes)})." if len(compiled) > 1
                       else "."))
        logger.reset_clock(step)
      state, metrics = compiled[shapes](state, batch, key)
      drain()  # the previous step's metrics; the device is busy with this one
      pending = (step + 1, metrics)
      done = step + 1
      ckpt.check()
      preempted = watch.reached(done)
      stopping = preempted or (stop_after is not None and
                               done - start >= stop_after)
      last = done == tc.num_steps
      if done % tc.log_every == 0 or last:
        drain()
        mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
        window.clear()
        mean.update(logger.progress(done, mean))
        logger.write(done, "train", mean)
      if done % tc.ckpt_every == 0 or last or stopping:
        ckpt.save(done, state, run.data.train)
      if stopping and not last:
        drain()
        if preempted:
          ckpt.wait()
          raise checkpointing.Preempted(done)
        logger.text(f"Stopping at step {done} as asked; re-run to resume.")
        return {}
      if done % tc.eval_every == 0 and not last:
        metrics_eval = run_eval(run, state, final=False)
        logger.write(done, "eval", metrics_eval)
        logger.text(f"eval @ {done}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in metrics_eval.items()))
        logger.reset_clock(done)
      if done % tc.sample_every == 0 or last:
        write_pictures(run, state, done,
                       jax.random.fold_in(run.keys["sample"], done), logger)
        logger.reset_clock(done)
    ckpt.wait()
    final_step = max(start, tc.num_steps)
    watch.stop_at_once(final_step)
    t0 = time.time()
    result = final_eval(run, state)
    logger.write(final_step, "eval", result)
    logger.text(f"final eval @ {final_step} ({time.time() - t0:.0f}s): " +
                ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if start >= tc.num_steps:
      write_pictures(run, state, final_step,
                     jax.random.fold_in(run.keys["sample"], final_step), logger)
    return result
  except BaseException as e:
    if isinstance(e, OSError):  # e.g. a full disk, met by a log or picture
      # A save in flight may have failed for the same reason: its error
      # (sizes, free space, the step to resume from) is the one to tell.
      ckpt.close()
      newest = ckpt.latest_step()
      raise UserError(
          f"Could not write to {run.workdir} at step {done}: "
          f"{e.strerror or e}. Fix the storage, then re-run the same command "
          + (f"to resume from step {newest}." if newest is not None else
             "to start again.")) from None
    ckpt.close(quiet=True)  # the save in flight completes; this error is told
    if isinstance(e, KeyboardInterrupt):
      newest = ckpt.latest_step()
      raise Interrupted(
          f"Interrupted at step {done}; " +
          (f"the newest checkpoint is step {newest}; re-run the same command "
           "to resume." if newest is not None else "no checkpoint yet.")
      ) from None
    raise
  finally:
    watch.close()
    ckpt.close()
    logger.close()


def restore_latest(config: ml_collections.ConfigDict, workdir: str
                    ) -> tuple[Run, PyTree, int]:
  """The run and its latest train state, read-only (a trainer may be running)."""
  run = setup(config, workdir, write_config=False)
  ckpt = checkpointing.Checkpointer(run.workdir, read_only=True)
  try:
    restored = ckpt.restore_newest(run.abstract_state)
    if restored is not None:
      return run, *restored
    # No checkpoint: a family with pretrained weights uses those.
    state, pretrained = _init(run)
    if not pretrained:
      raise UserError(f"No checkpoint in {ckpt.directory}; train first "
                      "(--mode=train) with this --workdir.")
    return run, state, 0
  finally:
    ckpt.close()


def evaluate(config: ml_collections.ConfigDict, workdir: str
             ) -> dict[str, float]:
  """`--mode=eval`: the final (paper-grade) metrics of the latest checkpoint."""
  run, state, step = restore_latest(config, workdir)
  result = final_eval(run, state)
  if jax.process_index() == 0:
    logger = log_lib.MetricLogger(run.workdir, step, step)
    logger.write(step, "eval", result)
    logger.close()
    out = run.workdir / f"eval_step_{step}.json"
    files.write_text(out, json.dumps({"step": step,
                                      "sample": config.sample.to_dict(),
                                      **result}, indent=2))
    print(f"eval @ step {step}: " + ", ".join(
        f"{k} {v:.4f}" for k, v in result.items()) + f"\nwrote {out}",
          flush=True)
  return result
