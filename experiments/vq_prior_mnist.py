r"""A Transformer prior over vqvae_mnist's codes: "a Transformer generates
images". Each digit is its 7x7 grid of codes in raster order after a class
token, so the prior is class-conditional; samples are drawn code by code with
the KV-cache decoder and decoded by the VQ-VAE.

Reports the held-out codes' bits per token and the bits/dim bound of the
two-stage model (VQ-VAE decoder + this prior; the VQ-VAE's own eval gives
the bound with a uniform prior). --mode=eval adds the Fréchet distance,
precision, recall and class accuracy under the MNIST classifier.

  python -m gen_jax.main --exp=vqvae_mnist --workdir=runs/vqvae_mnist
  python -m gen_jax.main --exp=vq_prior_mnist --workdir=runs/vq_prior_mnist
  python -m gen_jax.main --exp=vq_prior_mnist --workdir=runs/vq_prior_mnist --mode=sample --labels=7 --num_samples=64 --temperature=0.8  # + 64 sevens as .npz
  python -m gen_jax.main --exp=vq_prior_mnist --workdir=runs/vq_prior_mnist --mode=eval
  python -m gen_jax.main --exp=vq_prior_mnist:smoke --workdir=runs/vq_prior_mnist_smoke  # after vqvae_mnist:smoke
"""

from gen_jax import config as config_lib

_latent = config_lib.load_module("_latent")


def get_config():
  c = config_lib.base_config()
  c.family = "vq_prior"
  c.data.name = "mnist"
  c.data.batch_size = 64
  _latent.autoencoder(c, "runs/vqvae_mnist", "vqvae_mnist")

  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.mlp_width = 0  # 0: 4 x width
  c.model.dropout = 0.1
  c.model.num_classes = 10  # > 0: a class token starts each sequence

  c.train.num_steps = 3000
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 1000
  c.train.sample_every = 1000

  c.sample.temperature = 1.0
  c.sample.top_k = 0  # 0: all codes
  c.sample.top_p = 1.0

  c.eval.num_samples = 100
  c.eval.quality_samples = 1000
  c.eval.quality_features = "mnist_classifier"
  return c


def smoke(c):
  c.model.num_layers = 1
  c.model.width = 32
  c.eval.quality_samples = 0
  _latent.autoencoder(c, "runs/vqvae_mnist_smoke", "vqvae_mnist:smoke")
  return c
