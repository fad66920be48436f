r"""VAE on dynamically binarized MNIST (the default experiment).

Convolutional encoder/decoder, 32-d Gaussian latent, Bernoulli likelihood.
Reports the ELBO and the IWAE NLL estimate (k=1000) on the held-out split.

  python -m gen_jax.main --exp=vae_mnist --workdir=runs/vae_mnist
  python -m gen_jax.main --exp=vae_mnist --workdir=runs/vae_mnist --mode=eval
  python -m gen_jax.main --exp=vae_mnist --workdir=runs/vae_mnist --mode=sample
  python -m gen_jax.main --exp=vae_mnist:smoke --workdir=/tmp/vae_smoke
"""

from gen_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.family = "vae"
  c.data.name = "mnist"
  c.data.batch_size = 128

  c.model.latent_dim = 32
  c.model.channels = (16, 32)
  c.model.hidden_dim = 256
  c.model.likelihood = "bernoulli"  # 'bernoulli' | 'gaussian'
  c.model.beta = 1.0
  c.model.num_classes = 0  # > 0: label-conditional VAE

  c.train.num_steps = 4000
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 200
  c.train.log_every = 200
  c.train.eval_every = 2000
  c.train.ckpt_every = 1000
  c.train.sample_every = 2000

  c.eval.num_importance_samples = 1000  # final eval and --mode=eval
  c.eval.periodic_importance_samples = 50  # evals during training
  return c


def smoke(c):
  c.eval.num_importance_samples = 20
  c.eval.periodic_importance_samples = 5
  return c
