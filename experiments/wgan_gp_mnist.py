r"""WGAN-GP on MNIST: Wasserstein loss with gradient penalty (Gulrajani et al.).

The paper's Algorithm 1 settings: lambda 10, 5 critic updates per generator
update, Adam lr 1e-4 with betas (0, 0.9); DCGAN-style networks with batch norm
in the generator and no normalization in the critic (the penalty is per
example, so the critic must not mix examples). A train step is one generator
update; its batch of 5 x 32 digits feeds the five critic updates.

  python -m gen_jax.main --exp=wgan_gp_mnist --workdir=runs/wgan_gp_mnist
  python -m gen_jax.main --exp=wgan_gp_mnist:smoke --workdir=/tmp/wgan_gp_smoke
"""

from gen_jax import config as config_lib

_dcgan_mnist = config_lib.load_module("dcgan_mnist")


def get_config():
  c = _dcgan_mnist.get_config()
  c.data.batch_size = 5 * 32

  c.model.loss = "wgan_gp"
  c.model.n_critic = 5
  c.model.gp_weight = 10.0
  c.model.d_norm = "none"

  c.train.num_steps = 2000
  c.train.learning_rate = 1e-4
  c.train.d_learning_rate = 1e-4
  c.train.b1 = 0.0
  c.train.b2 = 0.9
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 500
  c.train.sample_every = 500
  return c


def smoke(c):
  _dcgan_mnist.smoke(c)
  c.data.batch_size = 5 * 8
  return c
