r"""Class-conditional flow matching on MNIST with a Diffusion Transformer.

A DiT of 6 blocks, width 128, 4 heads, on 4x4 patches (49 tokens), with
adaLN-Zero conditioning on the time and the class; labels are dropped 10% of
the time, so the one network also gives the unconditional velocity for
classifier-free guidance (scale 2 by default; 1: conditional, 0:
unconditional). Samples are laid out one row per class; --mode=eval adds the
MNIST classifier's accuracy on the samples' intended classes.

  python -m gen_jax.main --exp=fm_dit_mnist --workdir=runs/fm_dit_mnist
  python -m gen_jax.main --exp=fm_dit_mnist --workdir=runs/fm_dit_mnist --mode=sample --guidance_scale=4 --sampler=heun --num_steps=10
  python -m gen_jax.main --exp=fm_dit_mnist --workdir=runs/fm_dit_mnist --mode=eval --guidance_scale=1
  python -m gen_jax.main --exp=fm_dit_mnist:smoke --workdir=/tmp/fm_dit_smoke
"""

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


def get_config():
  c = _continuous.fm_settings(_continuous.mnist("flow_matching"))
  config_lib.load_module("_dit").mnist(c)
  c.model.num_classes = 10
  c.model.label_dropout = 0.1
  c.train.learning_rate = 5e-4
  c.sample.guidance_scale = 2.0
  c.eval.num_samples = 100  # 10 classes x 10
  return c


def smoke(c):
  _continuous.smoke(c)
  c.eval.num_samples = 100  # the grid of one row per class
  return c
