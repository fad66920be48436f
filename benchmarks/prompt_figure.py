r"""Prompts down the side, samples across, one panel per guidance scale: the
picture of a trained text-to-image run (the same noise for every prompt and
scale).

  python benchmarks/prompt_figure.py --exp=txt2img_mnist \
      --workdir=runs/txt2img_mnist --scales=1,2,4 \
      --override=autoencoder.workdir=runs/vqvae_mnist \
      --out=docs/images/txt2img_mnist.png
"""

from absl import app
from absl import flags
import jax
import numpy as np

from gen_jax import config as config_lib
from gen_jax import train
from gen_jax.evaluation import grids

_EXP = flags.DEFINE_string("exp", "txt2img_mnist", "The run's experiment.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/txt2img_mnist", "The run.")
_SCALES = flags.DEFINE_list("scales", ["1", "2", "4"], "Guidance scales.")
_PROMPTS = flags.DEFINE_multi_string(
    "prompt", None, "Prompts (default: the experiment's sample.prompts).")
_PER_PROMPT = flags.DEFINE_integer("per_prompt", 8, "Samples per prompt.")
_OUT = flags.DEFINE_string("out", "txt2img.png", "Picture to write.")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "Config overrides, e.g. autoencoder.workdir=DIR.")


def main(argv):
  del argv
  config = config_lib.get_config(_EXP.value, _OVERRIDE.value)
  run, state, step = train.restore_latest(config, _WORKDIR.value)
  prompts = _PROMPTS.value or list(config.sample.prompts)
  panels = []
  for scale in _SCALES.value:
    images = run.family.prompt_grids(state, jax.random.key(0), prompts,
                                     _PER_PROMPT.value, float(scale))
    grid = grids.make_grid(images.reshape(-1, *images.shape[2:]),
                           _PER_PROMPT.value)
    if not panels:
      grid = grids.label_rows(grid, prompts, images.shape[2])
    panels.append(grid)
    panels.append(np.ones((grid.shape[0], 12, grid.shape[2]), np.float32))
  grids.save_png(_OUT.value, np.concatenate(panels[:-1], axis=1))
  print(f"step {step}: wrote {_OUT.value} (scales {', '.join(_SCALES.value)}"
        f" left to right)")


if __name__ == "__main__":
  app.run(main)
