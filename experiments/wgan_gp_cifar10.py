r"""WGAN-GP on CIFAR-10 with the ResNet generator and critic (Gulrajani et al.).

The settings of the paper's CIFAR-10 ResNet experiment: width 128 in both
networks, batch norm in the generator, no normalization in the critic,
lambda 10, 5 critic updates per generator update, Adam lr 2e-4 with betas
(0, 0.9) decayed linearly to 0 over 100,000 generator updates, batch 64 (the
reference code draws 128 latents per generator update; here 64). The paper
reports an Inception Score of 7.86 (unsupervised). Needs TFDS 'cifar10'
prepared and, for IS/FID, the Inception weights file.

  python -m gen_jax.main --exp=wgan_gp_cifar10 --workdir=runs/wgan_gp_cifar10 \
      --config.eval.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth
  python -m gen_jax.main --exp=wgan_gp_cifar10:smoke --workdir=/tmp/wgan_gp_cifar10_smoke
"""

from gen_jax import config as config_lib

_sngan_cifar10 = config_lib.load_module("sngan_cifar10")
smoke = _sngan_cifar10.smoke


def get_config():
  c = _sngan_cifar10.get_config()
  c.model.loss = "wgan_gp"
  c.model.gp_weight = 10.0
  c.model.spectral_norm = False
  c.model.g_channels = (128,)
  c.model.d_channels = (128,)
  c.train.num_steps = 100_000
  return c
