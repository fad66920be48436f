r"""Sample quality against sampling steps: DDIM with 10..100 steps and
ancestral sampling with all T, from one trained diffusion checkpoint.

  python benchmarks/ddim_steps.py --exp=ddpm_mnist --workdir=runs/ddpm_mnist \
      --num_samples=250

For each sampler it draws --num_samples images with the same seed, measures
the seconds per image, and computes the Fréchet distance (and precision /
recall) on the configured features against the held-out split. A first row
measures held-out real images the same way (training digits, same count): the
floor that the estimator's bias at this sample size leaves. Prints a Markdown
table and writes it, with the raw numbers, next to the checkpoint.
"""

import json
import pathlib

from absl import app
from absl import flags
import jax
import numpy as np

from gen_jax import config as config_lib
from gen_jax import logging as log_lib
from gen_jax import train
from gen_jax.evaluation import evaluators
from gen_jax.evaluation import sample_quality

_EXP = flags.DEFINE_string("exp", "ddpm_mnist", "Experiment of the workdir.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/ddpm_mnist",
                               "Workdir of a trained run.")
_NUM = flags.DEFINE_integer("num_samples", 250, "Samples per sampler.")
_SAMPLERS = flags.DEFINE_list(
    "samplers", ["ddim:10", "ddim:20", "ddim:50", "ddim:100", "ddpm:0"],
    "sampler:num_steps entries (num_steps 0: all T).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "Config overrides.")


def _real_row(run, extractor, reference, num):
  images = []
  while sum(len(b) for b in images) < num:
    images.append(np.asarray(next(run.data.train)["image"]))
  real = np.concatenate(images)[:num]
  return sample_quality.evaluate(extractor, real, reference)


def main(argv):
  del argv
  log_lib.quiet_library_logs()
  rows = []
  for i, entry in enumerate(_SAMPLERS.value):
    sampler, steps = entry.split(":")
    config = config_lib.get_config(_EXP.value, _OVERRIDES.value + [
        f"sample.sampler={sampler}", f"sample.num_steps={steps}",
        f"eval.quality_samples={_NUM.value}"])
    run, state, step = train.restore_latest(config, _WORKDIR.value)
    ctx = train.eval_context(run, state)
    if i == 0:
      extractor, reference = evaluators.configured(config)[0].reference(ctx)
      real = _real_row(run, extractor, reference, _NUM.value)
      rows.append({"sampler": "real training digits", "steps": 0, **real})
    label = sampler if sampler == "ddim" else "ddpm (ancestral)"
    steps_used = int(steps) or config.model.num_timesteps
    print(f"== {label}, {steps_used} steps", flush=True)
    result = evaluators.run_all(config, ctx)
    rows.append({"sampler": label, "steps": steps_used, "checkpoint": step,
                 **result})
    print(json.dumps(rows[-1]), flush=True)

  fd_key = next(k for k in rows[0] if k.startswith("fd_"))
  lines = [f"| sampler | steps | Fréchet distance ({fd_key[3:]}) | precision "
           "| recall | s / image |", "|---|---|---|---|---|---|"]
  for r in rows:
    secs = r.get("sample_seconds_per_image")
    lines.append(f"| {r['sampler']} | {r['steps'] or '-'} | {r[fd_key]:.2f} | "
                 f"{r['precision']:.3f} | {r['recall']:.3f} | "
                 f"{'-' if secs is None else f'{secs:.3f}'} |")
  table = "\n".join(lines)
  print(table)
  if jax.process_index() == 0:
    out = pathlib.Path(_WORKDIR.value) / f"sampler_table_n{_NUM.value}"
    out.with_suffix(".md").write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}.md and .json")


if __name__ == "__main__":
  app.run(main)
