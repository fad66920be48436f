r"""SNGAN on CIFAR-10 (Miyato et al., 2018): the ResNet networks, spectral
normalization in the discriminator, hinge loss.

The paper's ResNet setting: generator width 256, discriminator width 128,
5 discriminator updates per generator update, Adam lr 2e-4 with betas
(0, 0.9) decayed linearly to 0, batch 64, 50,000 generator updates. The paper
reports Inception Score 8.22 and FID 21.7 (unconditional). ':cond' is the
class-conditional model of Miyato & Koyama (2018): conditional batch norm and a
projection discriminator (reported: IS 8.62, FID 17.5). Needs TFDS 'cifar10'
prepared (tfds build cifar10) and, for FID/IS, the Inception weights file.

Arguments (combine with '-', e.g. ':cond-smoke'): cond (class-conditional),
smoke (a run of seconds).

  python -m gen_jax.main --exp=sngan_cifar10 --workdir=runs/sngan_cifar10 \
      --config.eval.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth
  python -m gen_jax.main --exp=sngan_cifar10:cond --workdir=runs/sngan_cifar10_cond
  python -m gen_jax.main --exp=sngan_cifar10:smoke --workdir=/tmp/sngan_smoke
"""

from gen_jax import config as config_lib

_gan = config_lib.load_module("_gan")

VARIANTS = ("cond",)


def get_config(variants=()):
  c = config_lib.base_config()
  c.family = "gan"
  c.data.name = "cifar10"
  c.data.image_shape = (32, 32, 3)
  c.data.batch_size = 5 * 64  # 5 discriminator updates of 64
  c.data.eval_batch_size = 500

  c.model = _gan.model_defaults()
  c.model.arch = "resnet"
  c.model.loss = "hinge"
  c.model.n_critic = 5
  c.model.latent_dim = 128
  c.model.g_channels = (256,)
  c.model.d_channels = (128,)
  c.model.g_norm = "batch"
  c.model.d_norm = "none"
  c.model.spectral_norm = True

  c.sample.update(_gan.sample_defaults())  # standing batch-norm statistics

  c.train.num_steps = 50_000
  c.train.learning_rate = 2e-4
  c.train.d_learning_rate = 2e-4
  c.train.lr_schedule = "linear"
  c.train.b1 = 0.0
  c.train.b2 = 0.9
  c.train.ema_decay = 0.0  # the paper samples from the raw generator
  c.train.log_every = 100
  c.train.eval_every = 5000
  c.train.ckpt_every = 2500
  c.train.sample_every = 2500

  c.eval.num_samples = 100
  c.eval.quality_samples = 50_000
  c.eval.quality_features = "inception_v3"
  if "cond" in variants:
    c.model.num_classes = 10
  return c


def smoke(c):
  c.data.batch_size = 5 * 8
  c.data.eval_batch_size = 40
  c.eval.num_examples = 40
  c.model.g_channels = (16,)
  c.model.d_channels = (16,)
  c.eval.quality_samples = 0
  return c
