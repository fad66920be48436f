r"""Sample quality, likelihood and sampling cost of trained diffusion-type
models (DDPM, EDM, flow matching) side by side, one row per sampler.

  python benchmarks/sampler_table.py --runs_dir=runs --num_samples=500 \
      --rows=ddpm_mnist:ddpm:0,ddpm_mnist:ddim:50,ddpm_mnist:dpm_solver++:20,edm_mnist:heun:18,edm_mnist:dpm_solver++:20,fm_mnist:euler:10,fm_mnist:euler:20,fm_mnist:euler:50,fm_mnist:heun:18,fm_mnist:dpm_solver++:20,fm_mnist:adaptive:0
  python benchmarks/sampler_table.py --runs_dir=runs --num_samples=500 \
      --name=churn --override=sample.churn=40 --rows=edm_mnist:stochastic:18

Each row EXP:SAMPLER:STEPS reads the newest checkpoint of RUNS_DIR/EXP and
draws --num_samples images with the same seed (num_steps 0: the sampler's
default). It reports the Fréchet distance (and precision / recall) on the
configured features against the held-out split, the network evaluations per
image, milliseconds per image (compilation excluded: a cheap sampler is
timed on a second draw), and the held-out bits/dim from the run's final eval
(DDPM: the variational bound; EDM and flow matching: the exact likelihood by
the probability-flow ODE). A first row scores real training digits the same
way. Writes the Markdown table, the raw numbers and a picture of each row's
first 64 samples into RUNS_DIR/sampler_table_nN/ (or RUNS_DIR/--name).
"""

import json
import pathlib
import time

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image

from gen_jax import config as config_lib
from gen_jax import files
from gen_jax import logging as log_lib
from gen_jax import train
from gen_jax.evaluation import evaluators
from gen_jax.evaluation import grids
from gen_jax.evaluation import sample_quality

_RUNS = flags.DEFINE_string("runs_dir", "runs", "Holds one workdir per "
                            "experiment, named after it.")
_NUM = flags.DEFINE_integer("num_samples", 250, "Samples per row.")
_ROWS = flags.DEFINE_list(
    "rows", ["ddpm_mnist:ddim:10", "ddpm_mnist:ddim:20", "ddpm_mnist:ddim:50",
             "ddpm_mnist:ddim:100", "ddpm_mnist:ddpm:0"],
    "EXP:SAMPLER:NUM_STEPS entries (NUM_STEPS 0: the sampler's default).")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "Config overrides.")
_NAME = flags.DEFINE_string("name", "", "Output directory name under "
                            "--runs_dir (default sampler_table_nN).")


def _real_row(run, extractor, reference, num):
  images = []
  while sum(len(b) for b in images) < num:
    images.append(np.asarray(next(run.data.train)["image"]))
  real = np.concatenate(images)[:num]
  return sample_quality.evaluate(extractor, real, reference)


def _evaluations(family, config) -> int:
  """Network evaluations per image of the sampler just used."""
  if getattr(family, "last_sampling", None):
    return int(family.last_sampling["evaluations"])
  s = config.sample  # DDPM's own samplers: one evaluation per step
  if s.sampler == "ddpm":
    return config.model.num_timesteps
  return s.num_steps or (20 if s.sampler == "dpm_solver++"
                         else config.model.num_timesteps)


def _bits_per_dim(workdir: pathlib.Path) -> tuple[str, float | None]:
  rows = [r for r in files.read_jsonl(workdir / "metrics.jsonl")
          if r["split"] == "eval"]
  for key, name in (("ode_bits_per_dim", "exact, ODE"),
                    ("vlb_bits_per_dim", "bound")):
    if rows and key in rows[-1]:
      return name, rows[-1][key]
  return "-", None


def main(argv):
  del argv
  log_lib.quiet_library_logs()
  out_dir = pathlib.Path(_RUNS.value) / (_NAME.value
                                         or f"sampler_table_n{_NUM.value}")
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = []
  for i, entry in enumerate(_ROWS.value):
    exp, sampler, steps = entry.rsplit(":", 2)
    workdir = pathlib.Path(_RUNS.value) / exp
    config = config_lib.get_config(exp, _OVERRIDES.value + [
        f"sample.sampler={sampler}", f"sample.num_steps={steps}",
        f"eval.quality_samples={_NUM.value}",
        f"data.eval_batch_size={_NUM.value}"])
    run, state, step = train.restore_latest(config, str(workdir))
    ctx = train.eval_context(run, state)
    drawn = {}
    sample = ctx.sample

    def keep(num, labels, sample=sample, drawn=drawn):
      t0 = time.time()
      images, seconds = sample(num, labels)
      if time.time() - t0 < 60:  # mostly compilation: time a second draw
        images, seconds = sample(num, labels)
      drawn["images"], drawn["seconds"] = images, seconds
      return images, seconds
    ctx.sample = keep
    if i == 0:
      extractor, reference = evaluators.configured(config)[0].reference(ctx)
      real = _real_row(run, extractor, reference, _NUM.value)
      rows.append({"row": "real training digits", **real})
    print(f"== {entry}", flush=True)
    result = evaluators.run_all(config, ctx)
    kind, bpd = _bits_per_dim(workdir)
    name = entry.replace(":", "_")
    picture = out_dir / f"{name}.png"
    grid = grids.make_grid(np.asarray(drawn["images"][:64]))
    with files.atomic_open(picture, "wb") as f:
      Image.fromarray(np.round(grid[..., 0] * 255).astype(np.uint8)
                      if grid.shape[-1] == 1 else
                      np.round(grid * 255).astype(np.uint8)).save(f, "PNG")
    rows.append({"row": entry, "checkpoint": step,
                 "evaluations": _evaluations(run.family, config),
                 "ms_per_image": 1000 * drawn["seconds"],
                 "bits_per_dim": bpd, "bits_per_dim_kind": kind,
                 "picture": picture.name, **result})
    print(json.dumps(rows[-1]), flush=True)

  fd_key = next(k for k in rows[0] if k.startswith("fd_"))
  lines = [f"| model, sampler, steps | network evaluations | Fréchet distance "
           f"({fd_key[3:]}) | precision | recall | held-out bits/dim | "
           "ms / image |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    bpd = (f"{r['bits_per_dim']:.3f} ({r['bits_per_dim_kind']})"
           if r.get("bits_per_dim") is not None else "-")
    ms = f"{r['ms_per_image']:.1f}" if "ms_per_image" in r else "-"
    lines.append(f"| {r['row']} | {r.get('evaluations', '-')} | "
                 f"{r[fd_key]:.2f} | {r['precision']:.3f} | {r['recall']:.3f} "
                 f"| {bpd} | {ms} |")
  table = "\n".join(lines)
  print(table)
  if jax.process_index() == 0:
    (out_dir / "table.md").write_text(table + "\n")
    (out_dir / "table.json").write_text(json.dumps(rows, indent=2))
    print(f"wrote {out_dir}/table.md, table.json and one picture per row")


if __name__ == "__main__":
  app.run(main)
