r"""The first stage of ldm_celebahq: a VQ-VAE with LDM-4's latent space
(Rombach et al. 2022, "VQ-f4": downsampling f = 4, 64x64x3 latents of
256x256 images, a codebook of 8192 codes of 3 dimensions). The paper's
autoencoder is a VQGAN (residual blocks with GroupNorm at every level,
perceptual and patch-adversarial losses, trained on OpenImages); this is
gen_jax's VQ-VAE at that latent shape, trained with the VQ-VAE losses alone
on CelebA-HQ. Needs TFDS celeb_a_hq/256 (a manual download; not run here).

  python -m gen_jax.main --exp=vqvae_celebahq --workdir=runs/vqvae_celebahq
"""

from gen_jax import config as config_lib

_mnist = config_lib.load_module("vqvae_mnist")


def get_config():
  c = _mnist.get_config()
  c.data.name = "celeb_a_hq/256"
  c.data.image_shape = (256, 256, 3)
  c.data.batch_size = 16
  c.data.random_flip = False
  c.model.channels = (128, 256)  # f = 4
  c.model.num_res_blocks = 2
  c.model.codebook_size = 8192
  c.model.code_dim = 3
  c.train.num_steps = 500_000
  c.train.learning_rate = 1e-4
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 0
  c.train.log_every = 1000
  c.train.eval_every = 50_000
  c.train.ckpt_every = 10_000
  c.train.sample_every = 10_000
  return c


def smoke(c):
  return _mnist.smoke(c)
