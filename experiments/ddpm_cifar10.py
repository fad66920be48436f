r"""DDPM on CIFAR-10, the configuration of Ho et al. (2020).

The paper's 35.7M-parameter U-Net (channels 128, multipliers 1,2,2,2, two
residual blocks per level, attention at 16x16, dropout 0.1), linear schedule
1e-4..0.02 over T=1000, eps-prediction with the simple loss, Adam lr 2e-4
(5,000 warm-up steps), batch 128, gradient clipping at 1, EMA 0.9999, 800k
steps, random horizontal flips; samples by ancestral sampling with
sigma_t^2 = beta_t. The paper reports FID 3.17 and NLL <= 3.75 bits/dim.
Needs TFDS 'cifar10' prepared (tfds build cifar10) and, for FID, the
Inception weights file.

  python -m gen_jax.main --exp=ddpm_cifar10 --workdir=runs/ddpm_cifar10
  python -m gen_jax.main --exp=ddpm_cifar10 --workdir=runs/ddpm_cifar10 --mode=eval \
      --config.eval.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth
  python -m gen_jax.main --exp=ddpm_cifar10:smoke --workdir=/tmp/ddpm_cifar10_smoke
"""

from gen_jax import config as config_lib


def get_config():
  c = config_lib.load_module("ddpm_mnist").get_config()
  c.data.name = "cifar10"
  c.data.image_shape = (32, 32, 3)
  c.data.batch_size = 128
  c.data.random_flip = True

  c.model.patch_size = 1
  c.model.channels = 128
  c.model.channel_mults = (1, 2, 2, 2)
  c.model.num_res_blocks = 2
  c.model.attention_resolutions = (16,)
  c.model.dropout = 0.1
  c.model.num_groups = 32

  c.train.num_steps = 800_000
  c.train.learning_rate = 2e-4
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 5000
  c.train.grad_clip_norm = 1.0
  c.train.ema_decay = 0.9999
  c.train.log_every = 1000
  c.train.eval_every = 50_000
  c.train.ckpt_every = 10_000
  c.train.sample_every = 50_000

  c.sample.sampler = "ddpm"
  c.sample.num_steps = 0  # the full chain of T steps
  c.eval.vlb_timesteps = 1000  # exact bound: every t
  c.eval.periodic_vlb_timesteps = 10
  c.eval.quality_samples = 50_000
  c.eval.quality_features = "inception_v3"
  return c


def smoke(c):
  c.model.channels = 16
  c.model.channel_mults = (1, 2)
  c.model.num_res_blocks = 1
  c.model.num_groups = 8
  c.model.num_timesteps = 100
  c.sample.sampler = "ddim"
  c.sample.num_steps = 5
  c.eval.vlb_timesteps = 4
  c.eval.periodic_vlb_timesteps = 2
  c.eval.quality_samples = 0
  return c
