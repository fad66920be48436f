r"""DCGAN on MNIST: non-saturating loss, batch norm in both networks.

The DCGAN paper's optimizer (Adam, lr 2e-4, beta1 0.5) and LeakyReLU(0.2)
discriminator, with widths and batch sized for a CPU run of about 15 minutes;
samples come from an EMA of the generator's weights. The final eval adds the
Fréchet distance on the project's MNIST classifier features and
precision/recall of 1,000 samples against the held-out digits.

  python -m gen_jax.main --exp=dcgan_mnist --workdir=runs/dcgan_mnist
  python -m gen_jax.main --exp=dcgan_mnist --workdir=runs/dcgan_mnist --mode=eval
  python -m gen_jax.main --exp=dcgan_mnist:smoke --workdir=/tmp/dcgan_smoke
"""

from gen_jax import config as config_lib

_gan = config_lib.load_module("_gan")


def get_config():
  c = config_lib.base_config()
  c.family = "gan"
  c.data.name = "mnist"
  c.data.batch_size = 64

  c.model = _gan.model_defaults()
  c.model.arch = "dcgan"
  c.model.loss = "non_saturating"
  c.model.latent_dim = 100
  c.model.g_channels = (128, 64)  # 7x7x128 -> 14x14x64 -> 28x28x1
  c.model.d_channels = (64, 128)  # 28 -> 14x14x64 -> 7x7x128 -> logit
  c.model.g_norm = "batch"
  c.model.d_norm = "batch"

  c.sample.update(_gan.sample_defaults())  # standing batch-norm statistics

  c.train.num_steps = 4000
  c.train.learning_rate = 2e-4
  c.train.d_learning_rate = 2e-4
  c.train.b1 = 0.5
  c.train.b2 = 0.999
  c.train.ema_decay = 0.999
  c.train.log_every = 200
  c.train.eval_every = 2000
  c.train.ckpt_every = 1000
  c.train.sample_every = 1000

  c.eval.num_samples = 64
  c.eval.quality_samples = 1000
  c.eval.quality_features = "mnist_classifier"
  return c


def smoke(c):
  c.model.g_channels = (16, 8)
  c.model.d_channels = (8, 16)
  c.eval.quality_samples = 0
  return c
