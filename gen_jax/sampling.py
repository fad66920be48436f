"""`--mode=sample`: a trained run's pictures and, on request, its samples as
an .npz (labels cycled over a conditional model's samples)."""

import pathlib

import jax
import ml_collections
import numpy as np

from gen_jax import files
from gen_jax import train
from gen_jax.errors import UserError


def _sample_labels(run: train.Run, num: int) -> np.ndarray | None:
  """`sample.labels` cycled over `num` samples (default 0, 1, 2, ...)."""
  given = tuple(run.config.sample.labels)
  k = run.family.num_classes
  if not k:
    if given:
      raise UserError("--labels: this model is not class-conditional.")
    return None
  if any(not 0 <= y < k for y in given):
    raise UserError(f"--labels={','.join(map(str, given))}: class ids must "
                    f"be in 0..{k - 1}.")
  return np.resize(np.asarray(given or np.arange(k), np.int32), num)


def export_samples(run: train.Run, state, step: int, key: jax.Array
                   ) -> pathlib.Path:
  """Draws `sample.num_samples` samples and writes them, with their labels,
  as samples/sample_step_N.npz (atomically)."""
  num = run.config.sample.num_samples
  labels = _sample_labels(run, num)
  samples, _ = train.generate(run, state, num, key, labels)
  arrays = run.family.export_samples(samples)
  if labels is not None:
    arrays["labels"] = labels
  path = run.workdir / "samples" / f"sample_step_{step}.npz"
  if jax.process_index() == 0:
    with files.atomic_open(path, "wb") as f:
      np.savez(f, **arrays)
  return path


def sample(config: ml_collections.ConfigDict, workdir: str
           ) -> list[pathlib.Path]:
  """`--mode=sample`: writes the family's pictures from the latest
  checkpoint and, with `sample.num_samples > 0`, the samples as an .npz."""
  run, state, step = train.restore_latest(config, workdir)
  key = jax.random.fold_in(jax.random.fold_in(run.keys["sample"], step),
                           config.sample.seed)
  paths = train.write_pictures(run, state, step, key, prefix="sample_")
  if config.sample.num_samples > 0:
    paths.append(export_samples(run, state, step, key))
  if jax.process_index() == 0:
    for path in paths:
      if path.suffix == ".txt":  # text families: the samples themselves
        print(path.read_text(), flush=True)
    print("wrote " + ", ".join(str(p) for p in paths), flush=True)
  return paths
