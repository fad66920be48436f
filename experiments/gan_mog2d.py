r"""The mode-collapse benchmark: a GAN on a 2-D Gaussian mixture.

':ring8' (default) is 8 modes on the unit circle (std 0.01), ':grid25' a 5x5
grid of modes 2 apart (std 0.05); either combines with smoke (a run of
seconds), e.g. ':grid25-smoke'; ':smoke' alone is ring8. The protocol and
networks are those of the PacGAN experiments, which reuse the unrolled-GAN /
VEEGAN mixtures: 100,000 training points, batch 100; generator
N(0, I_2) -> 4 x 400 (batch norm, ReLU) -> 2; discriminator 3 x 200 maxout
units of 5 pieces -> 1; Adam lr 1e-4, beta1 0.8, for both. The final eval
draws 2,500 samples and reports the modes captured (modes with at least one
high-quality sample) and the percentage of high-quality samples (within 3
standard deviations of their nearest mode). The paper trains 400 epochs
(400,000 steps); the default here is 25,000 steps (--config.train.num_steps to
change). benchmarks/mode_collapse.py runs several seeds of both mixtures and
prints the table beside the published one.

  python -m gen_jax.main --exp=gan_mog2d --workdir=runs/gan_mog2d_ring8
  python -m gen_jax.main --exp=gan_mog2d:grid25 --workdir=runs/gan_mog2d_grid25
  python -m gen_jax.main --exp=gan_mog2d:smoke --workdir=/tmp/gan_mog2d_smoke
"""

from gen_jax import config as config_lib

_gan = config_lib.load_module("_gan")

VARIANTS = ("ring8", "grid25")


def get_config(variants=()):
  mixture = config_lib.one_of(variants, VARIANTS, default="ring8")
  c = config_lib.base_config()
  c.family = "gan"
  c.data.name = mixture
  c.data.image_shape = (2,)
  c.data.num_classes = 0
  c.data.batch_size = 100
  c.data.eval_batch_size = 500

  c.model = _gan.model_defaults()
  c.model.arch = "mlp"
  c.model.loss = "non_saturating"
  c.model.latent_dim = 2
  c.model.g_hidden = (400, 400, 400, 400)
  c.model.d_hidden = (200, 200, 200)
  c.model.maxout = 5
  c.model.g_norm = "batch"

  c.sample.update(_gan.sample_defaults())  # standing batch-norm statistics

  c.train.num_steps = 25_000
  c.train.learning_rate = 1e-4
  c.train.d_learning_rate = 1e-4
  c.train.b1 = 0.8
  c.train.b2 = 0.999
  c.train.ema_decay = 0.0  # the papers sample the raw generator
  c.train.log_every = 1000
  c.train.eval_every = 5000
  c.train.ckpt_every = 5000
  c.train.sample_every = 5000

  c.eval.quality_samples = 2500
  c.eval.quality_features = "mixture_modes"
  return c


def smoke(c):
  c.data.batch_size = 100
  c.data.eval_batch_size = 500
  c.eval.num_examples = -1
  c.model.g_hidden = (32, 32)
  c.model.d_hidden = (32, 32)
  return c
