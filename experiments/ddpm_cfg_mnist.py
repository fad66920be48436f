r"""Class-conditional DDPM on MNIST with classifier-free guidance.

ddpm_mnist's network with a class embedding; labels are dropped (replaced by
a null class) 10% of the time, so the one network is both the conditional and
the unconditional model. Samples use eps_u + s (eps_c - eps_u) with guidance
scale s (0: unconditional, 1: conditional, default 2) and are laid out one row
per class. --mode=eval adds the MNIST classifier's accuracy on the samples'
intended classes.

  python -m gen_jax.main --exp=ddpm_cfg_mnist --workdir=runs/ddpm_cfg_mnist
  python -m gen_jax.main --exp=ddpm_cfg_mnist --workdir=runs/ddpm_cfg_mnist --mode=sample --guidance_scale=4
  python -m gen_jax.main --exp=ddpm_cfg_mnist --workdir=runs/ddpm_cfg_mnist --mode=eval --guidance_scale=1
  python -m gen_jax.main --exp=ddpm_cfg_mnist:smoke --workdir=/tmp/ddpm_cfg_smoke
"""

from gen_jax import config as config_lib

_ddpm_mnist = config_lib.load_module("ddpm_mnist")


def get_config():
  c = _ddpm_mnist.get_config()
  c.model.num_classes = 10
  c.model.label_dropout = 0.1
  c.sample.guidance_scale = 2.0
  c.eval.num_samples = 100  # 10 classes x 10
  return c


def smoke(c):
  _ddpm_mnist.smoke(c)
  c.eval.num_samples = 100  # the grid of one row per class
  return c
