r"""beta-VAE (Higgins et al. 2017) on binarized MNIST: vae_mnist with beta = 4.

A larger beta trades reconstruction for a latent closer to the prior; the ELBO
and IWAE NLL are still reported with beta = 1, so they compare with vae_mnist.

  python -m gen_jax.main --exp=beta_vae_mnist --workdir=runs/beta_vae_mnist
  python -m gen_jax.main --exp=beta_vae_mnist:smoke --workdir=/tmp/beta_smoke
"""

from gen_jax import config as config_lib

_vae_mnist = config_lib.load_module("vae_mnist")
smoke = _vae_mnist.smoke


def get_config():
  c = _vae_mnist.get_config()
  c.model.beta = 4.0
  c.model.latent_dim = 10
  return c
