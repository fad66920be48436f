"""Config builders shared by the GAN experiments (not an experiment).

Experiment files load this with `config_lib.load_module("_gan")`.
"""

import ml_collections

from gen_jax.families import gan


def model_defaults() -> ml_collections.ConfigDict:
  """Every `config.model` key of the GAN family; experiments edit these."""
  m = ml_collections.ConfigDict()
  m.arch = "dcgan"  # 'dcgan' | 'resnet' | 'mlp'
  m.loss = "non_saturating"  # 'non_saturating' | 'wgan_gp' | 'hinge'
  m.n_critic = 1  # discriminator updates per generator update
  m.gp_weight = 10.0  # lambda of wgan_gp
  m.latent_dim = 100
  m.g_channels = (128, 64)  # dcgan / resnet (see models/gan_nets.py)
  m.d_channels = (64, 128)
  m.g_hidden = (128, 128)  # mlp
  m.d_hidden = (128, 128)
  m.maxout = 1  # mlp discriminator maxout pieces (1: ReLU)
  m.g_norm = "batch"  # 'batch' | 'none'
  m.d_norm = "none"  # 'batch' | 'layer' | 'none'
  m.spectral_norm = False  # discriminator weights
  m.num_classes = 0  # > 0: conditional BN generator + projection critic
  return m


def sample_defaults() -> ml_collections.ConfigDict:
  """The GAN family's own `config.sample` keys; experiments add them to the
  shared ones with `c.sample.update(_gan.sample_defaults())`."""
  s = ml_collections.ConfigDict()
  # Batches of fresh latents whose generator batch-norm statistics, averaged,
  # normalize every sample ("standing statistics"). 0: each sampled batch
  # normalizes with its own statistics, so a sample depends on its batch.
  s.standing_stats_batches = gan.STANDING_STATS_BATCHES
  # Latents per standing-statistics batch. 0: the per-update training batch
  # (data.batch_size / model.n_critic), the batch size whose statistics the
  # generator was trained with.
  s.standing_stats_batch_size = gan.STANDING_STATS_BATCH_SIZE
  return s
