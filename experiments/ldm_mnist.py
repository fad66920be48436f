r"""Latent flow matching on MNIST (Rombach et al. 2022's recipe with flow
matching): the model learns the continuous 7x7x4 latents of a trained
vqvae_mnist run, before quantization, divided by their standard deviation
on the first batch; samples are decoded through the VQ-VAE's quantizer and
decoder. A quarter of fm_mnist's dimensions, so a step costs a fraction of
a pixel-space step.

Train the VQ-VAE first (the stage-1 run is read once, at step 0, and kept in
this run's checkpoints):

  python -m gen_jax.main --exp=vqvae_mnist --workdir=runs/vqvae_mnist
  python -m gen_jax.main --exp=ldm_mnist --workdir=runs/ldm_mnist
  python -m gen_jax.main --exp=ldm_mnist --workdir=runs/ldm_mnist --mode=eval
  python -m gen_jax.main --exp=ldm_mnist --workdir=runs/ldm_mnist \
      --config.autoencoder.workdir=elsewhere/vqvae_mnist
  python -m gen_jax.main --exp=ldm_mnist:smoke --workdir=runs/ldm_mnist_smoke  # after vqvae_mnist:smoke

The papers' setting (LDM-4 on CelebA-HQ 256, FID 5.11) is ldm_celebahq.
"""

from gen_jax import config as config_lib

_latent = config_lib.load_module("_latent")


def get_config():
  return _latent.mnist()


def smoke(c):
  return _latent.smoke(c)
