r"""Label-conditional VAE on binarized MNIST: q(z|x,y), p(x|z,y), p(z) = N(0, I).

Sample grids have one row per class. Its NLL is -log p(x|y), a conditional
likelihood, so it is not directly comparable with vae_mnist's -log p(x).

  python -m gen_jax.main --exp=cvae_mnist --workdir=runs/cvae_mnist
  python -m gen_jax.main --exp=cvae_mnist:smoke --workdir=/tmp/cvae_smoke
"""

from gen_jax import config as config_lib

_vae_mnist = config_lib.load_module("vae_mnist")


def get_config():
  c = _vae_mnist.get_config()
  c.model.num_classes = 10
  # A smaller latent than vae_mnist's: the label carries the class, so z needs
  # only the style, and prior samples then follow the label they are given.
  c.model.latent_dim = 16
  c.eval.num_samples = 100  # 10 classes x 10
  return c


def smoke(c):
  _vae_mnist.smoke(c)
  c.eval.num_samples = 100  # the grid of one row per class
  return c
