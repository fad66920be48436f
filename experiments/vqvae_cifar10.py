r"""VQ-VAE on CIFAR-10 with the paper's architecture (van den Oord et al.
2017, section 4.1): two 4x4 stride-2 convolutions and two residual blocks
(ReLU, 3x3 conv, ReLU, 1x1 conv), 256 hidden units, an 8x8 grid of codes
(32 -> 8), commitment 0.25, Adam 2e-4, batch 128, 250k steps. The paper does
not state K or the code size for CIFAR-10; K = 512 is its ImageNet
codebook's, D = 64 that of DeepMind's reference notebook. The paper's
figure: 4.67 bits/dim (an ELBO bound, with a PixelCNN prior; VAE 4.51,
VIMCO 5.14); here the prior is vq_prior over this run. Needs TFDS cifar10
(not run here).

  python -m gen_jax.main --exp=vqvae_cifar10 --workdir=runs/vqvae_cifar10
"""

from gen_jax import config as config_lib

_mnist = config_lib.load_module("vqvae_mnist")


def get_config():
  c = _mnist.get_config()
  c.data.name = "cifar10"
  c.data.image_shape = (32, 32, 3)
  c.model.channels = (256, 256)
  c.model.num_res_blocks = 2
  c.model.codebook_size = 512
  c.model.code_dim = 64
  c.train.num_steps = 250_000
  c.train.learning_rate = 2e-4
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 0
  c.train.log_every = 1000
  c.train.eval_every = 25_000
  c.train.ckpt_every = 10_000
  c.train.sample_every = 25_000
  return c


def smoke(c):
  return _mnist.smoke(c)
