r"""LDM-4 on CelebA-HQ 256 (Rombach et al. 2022, Table 1: FID 5.11 with
DDIM, 200 steps in the repository's table, 500 in the paper's; precision
0.72, recall 0.49): DDPM (linear schedule 0.0015 -> 0.0195, T = 1000,
eps-prediction) on the 64x64x3 latents of vqvae_celebahq, with the paper's
U-Net (Table 12: 224 channels, multipliers 1, 2, 3, 4, two residual blocks
per level, attention at 32, 16 and 8), Adam at 9.6e-5, batch 48, 410k
steps, EMA 0.9999. Differences: the U-Net's attention is single-head (the
paper's: heads of 32 channels), the stage 1 is gen_jax's VQ-VAE (see
vqvae_celebahq), and the latents are divided by their measured standard
deviation (the paper leaves VQ-regularized latents unscaled, their variance
being close to 1). Needs TFDS celeb_a_hq/256 (not run here).

  python -m gen_jax.main --exp=vqvae_celebahq --workdir=runs/vqvae_celebahq
  python -m gen_jax.main --exp=ldm_celebahq --workdir=runs/ldm_celebahq
"""

from gen_jax import config as config_lib

_ddpm = config_lib.load_module("ddpm_mnist")
_latent = config_lib.load_module("_latent")


def get_config():
  c = _ddpm.get_config()
  _latent.autoencoder(c, "runs/vqvae_celebahq", "vqvae_celebahq")
  c.data.name = "celeb_a_hq/256"
  c.data.image_shape = (256, 256, 3)
  c.data.batch_size = 48
  c.model.beta_start = 0.0015
  c.model.beta_end = 0.0195
  c.model.patch_size = 1
  c.model.channels = 224
  c.model.channel_mults = (1, 2, 3, 4)  # latents 64, 32, 16, 8
  c.model.num_res_blocks = 2
  c.model.attention_resolutions = (32, 16, 8)
  c.model.num_groups = 32
  c.model.dropout = 0.0
  c.train.num_steps = 410_000
  c.train.learning_rate = 9.6e-5
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 0
  c.train.grad_clip_norm = 0.0
  c.train.ema_decay = 0.9999
  c.train.log_every = 1000
  c.train.eval_every = 50_000
  c.train.ckpt_every = 10_000
  c.train.sample_every = 10_000
  c.sample.num_steps = 200  # DDIM, eta 0
  c.sample.clip_denoised = False  # latents are not bounded
  c.eval.quality_samples = 50_000
  c.eval.quality_features = "inception_v3"
  return c


def smoke(c):
  c.model.channels = 16
  c.model.channel_mults = (1, 2)
  c.model.attention_resolutions = (32,)
  c.model.num_groups = 8
  c.model.num_res_blocks = 1
  _latent.autoencoder(c, "runs/vqvae_celebahq_smoke", "vqvae_celebahq:smoke")
  return c
