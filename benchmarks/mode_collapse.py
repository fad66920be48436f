r"""The mode-collapse benchmark: GANs on the 2-D ring and grid mixtures.

Trains `gan_mog2d` on each mixture for several seeds (one workdir each, so an
interrupted benchmark resumes), scores 2,500 samples per run (modes captured:
modes with at least one sample within 3 std; high-quality samples: within
3 std of their nearest mode), prints the mean and standard deviation over
seeds beside the published numbers, and saves a scatter plot of one seed's
samples over the modes.

  python benchmarks/mode_collapse.py --workdir=runs/mode_collapse
  python benchmarks/mode_collapse.py --workdir=runs/mode_collapse \
      --losses=non_saturating,wgan_gp --seeds=10 --num_steps=400000
"""

import json
import pathlib

from absl import app
from absl import flags
from absl import logging
import matplotlib
import numpy as np

from gen_jax import config as config_lib
from gen_jax import train
from gen_jax.data import mixtures

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

_WORKDIR = flags.DEFINE_string("workdir", "runs/mode_collapse",
                               "Where runs, the table and the plot go.")
_MIXTURES = flags.DEFINE_list("mixtures", ["ring8", "grid25"], "Mixtures.")
_LOSSES = flags.DEFINE_list("losses", ["non_saturating"],
                            "GAN losses to compare (gan family model.loss).")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Runs per mixture and loss.")
_NUM_STEPS = flags.DEFINE_integer(
    "num_steps", 10_000, "Generator updates per run (PacGAN: 400,000).")

# Published rows, same protocol (2,500 samples; high quality = within 3 std of
# the nearest mode; a mode is captured with at least one such sample), as
# (modes, high-quality %) mean with the +- the papers give, transcribed from
# their tables. VEEGAN Table 1: averages over 5 runs, no spread given.
# PacGAN Table 1: mean +- std over 10 runs, the PacGAN architecture used here.
PUBLISHED = {
    "ring8": [
        ("GAN (VEEGAN Table 1)", "1.0", "99.3"),
        ("ALI (VEEGAN Table 1)", "2.8", "0.13"),
        ("Unrolled GAN (VEEGAN Table 1)", "7.6", "35.6"),
        ("VEEGAN (VEEGAN Table 1)", "8.0", "52.9"),
        ("GAN (PacGAN Table 1)", "6.3 ± 0.5", "98.2 ± 0.2"),
        ("PacGAN2 (PacGAN Table 1)", "7.9 ± 0.1", "95.6 ± 2.0"),
    ],
    "grid25": [
        ("GAN (VEEGAN Table 1)", "3.3", "0.5"),
        ("ALI (VEEGAN Table 1)", "15.8", "1.6"),
        ("Unrolled GAN (VEEGAN Table 1)", "23.6", "16.0"),
        ("VEEGAN (VEEGAN Table 1)", "24.6", "40.0"),
        ("GAN (PacGAN Table 1)", "17.3 ± 0.8", "94.8 ± 0.7"),
        ("PacGAN2 (PacGAN Table 1)", "23.8 ± 0.7", "91.3 ± 0.8"),
    ],
}


def run_one(mixture: str, loss: str, seed: int, root: pathlib.Path):
  """Trains (or resumes) one run; returns its final metrics and a sampler."""
  overrides = [f"seed={seed}", f"model.loss={loss}",
               f"train.num_steps={_NUM_STEPS.value}",
               f"train.ckpt_every={max(_NUM_STEPS.value // 4, 1)}",
               f"train.eval_every={_NUM_STEPS.value}",
               f"train.sample_every={_NUM_STEPS.value}"]
  if loss == "wgan_gp":  # the WGAN-GP paper's optimizer and critic ratio
    overrides += ["model.n_critic=5", "data.batch_size=500", "train.b1=0.0",
                  "train.b2=0.9"]
  config = config_lib.get_config(f"gan_mog2d:{mixture}", overrides)
  workdir = root / mixture / loss / f"seed_{seed}"
  result_file = workdir / "final_eval.json"
  if result_file.exists():
    return json.loads(result_file.read_text())
  result = train.train_and_evaluate(config, str(workdir))
  run, state, _ = train.restore_latest(config, str(workdir))
  samples, _ = train.generate(run, state, 2500, run.keys["sample"])
  np.save(workdir / "samples.npy", samples)
  result_file.write_text(json.dumps(result, indent=2))
  return result


def scatter(root: pathlib.Path, loss: str) -> pathlib.Path:
  fig, axes = plt.subplots(1, len(_MIXTURES.value),
                           figsize=(5 * len(_MIXTURES.value), 5))
  for ax, mixture in zip(np.atleast_1d(axes), _MIXTURES.value):
    samples = np.load(root / mixture / loss / "seed_0" / "samples.npy")
    centers = mixtures.MIXTURES[mixture].centers
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4,
               label="2,500 samples (seed 0)")
    ax.scatter(centers[:, 0], centers[:, 1], s=40, c="red", marker="x",
               label="mode centres")
    ax.set_title(f"{mixture}, {loss}")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
  path = root / f"scatter_{loss}.png"
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # the trainer prints its progress
  root = pathlib.Path(_WORKDIR.value)
  lines = [f"Mode-collapse benchmark: {_SEEDS.value} seeds, "
           f"{_NUM_STEPS.value:,} generator updates per run, 2,500 samples.",
           ""]
  for mixture in _MIXTURES.value:
    k = mixtures.MIXTURES[mixture].num_modes
    lines += [f"### {mixture}", "",
              f"| model | modes (max {k}) | high-quality samples (%) |",
              "|---|---|---|"]
    for loss in _LOSSES.value:
      results = [run_one(mixture, loss, s, root) for s in range(_SEEDS.value)]
      m = np.array([r["modes_captured"] for r in results])
      q = np.array([r["high_quality_pct"] for r in results])
      lines.append(f"| gen_jax GAN, {loss} ({_SEEDS.value} seeds) | "
                   f"{m.mean():.1f} ± {m.std():.1f} | "
                   f"{q.mean():.1f} ± {q.std():.1f} |")
    for name, modes_text, hq_text in PUBLISHED[mixture]:
      lines.append(f"| {name} | {modes_text} | {hq_text} |")
    lines.append("")
  for loss in _LOSSES.value:
    lines.append(f"Scatter plot: {scatter(root, loss)}")
  table = "\n".join(lines)
  print(table)
  (root / "table.md").write_text(table + "\n")


if __name__ == "__main__":
  app.run(main)
