r"""Text-to-image on MNIST: latent flow matching (ldm_mnist) conditioned on
captions through cross-attention, with classifier-free guidance.

Each training digit's caption comes from its label and attributes measured
from its pixels (gen_jax/data/captions.py): stroke thickness (thin / thick)
and slant (slanted left / upright / slanted), e.g. "a thick, slanted
seven"; each attribute word is kept with probability 0.5 in training, so
prompts naming fewer attributes are understood. A 2-block byte Transformer
encodes the caption; captions are dropped (the empty caption) 10% of the
time. --mode=eval adds, for held-out prompts at guidance scales 1, 2 and 4,
the classifier's accuracy on the prompted digit and how the measured
thickness and slant of the samples follow the prompts.

  python -m gen_jax.main --exp=vqvae_mnist --workdir=runs/vqvae_mnist
  python -m gen_jax.main --exp=txt2img_mnist --workdir=runs/txt2img_mnist
  python -m gen_jax.main --exp=txt2img_mnist --workdir=runs/txt2img_mnist --mode=sample \
      --prompt="a thick seven" --prompt="a thin, slanted one" --guidance_scale=4
  python -m gen_jax.main --exp=txt2img_mnist --workdir=runs/txt2img_mnist --mode=eval
  python -m gen_jax.main --exp=txt2img_mnist:smoke --workdir=runs/txt2img_mnist_smoke  # after vqvae_mnist:smoke
"""

from gen_jax import config as config_lib

_latent = config_lib.load_module("_latent")


def get_config():
  return _latent.captions(_latent.mnist())


def smoke(c):
  return _latent.smoke(c)
