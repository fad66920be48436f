r"""VQ-VAE on MNIST: the first stage of vq_prior_mnist, ldm_mnist and
txt2img_mnist.

Two stride-2 convolutions (4x4) and two residual blocks compress a digit to
a 7x7 grid of codes from a codebook of 128 vectors of 4 dimensions, updated
by EMA (decay 0.99) with dead-code restarts; commitment cost 0.25, as in the
paper. The final eval reports reconstruction MSE and PSNR, codebook usage and
perplexity, and bits/dim with a uniform prior over the codes (the bound the
token prior of vq_prior_mnist tightens).

  python -m gen_jax.main --exp=vqvae_mnist --workdir=runs/vqvae_mnist
  python -m gen_jax.main --exp=vqvae_mnist --workdir=runs/vqvae_mnist --mode=eval
  python -m gen_jax.main --exp=vqvae_mnist:smoke --workdir=runs/vqvae_mnist_smoke

The paper's CIFAR-10 model is vqvae_cifar10 (not run here).
"""

from gen_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.family = "vqvae"
  c.data.name = "mnist"
  c.data.batch_size = 128

  c.model.channels = (32, 64)  # one 4x4 stride-2 convolution each: 28 -> 7
  c.model.num_res_blocks = 2
  c.model.codebook_size = 128  # K
  c.model.code_dim = 4  # D: a 7x7x4 latent (196 numbers for 784 pixels)
  c.model.commitment_cost = 0.25  # beta
  c.model.ema_codebook = True  # False: codes trained by the codebook loss
  c.model.ema_decay = 0.99  # gamma of the codebook's EMA and of code use
  # Codes used fewer times per step than this (on average) move to a random
  # encoder output of the batch; 0 turns restarts off.
  c.model.restart_threshold = 1.0

  c.train.num_steps = 2000
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 1000
  c.train.sample_every = 1000
  return c


def smoke(c):
  c.model.channels = (8, 16)
  c.model.num_res_blocks = 1
  c.model.codebook_size = 16
  return c
