r"""EDM on CIFAR-10, the unconditional setting of Karras et al. (2022).

The paper's DDPM++ network size (channels 128, multipliers 2,2,2, four
residual blocks per level, attention at 16x16, dropout 0.13) as this
project's U-Net; its preconditioning, sigma distribution (ln sigma ~
N(-1.2, 1.2^2)), loss weighting and sigma_data 0.5; Adam lr 1e-3 after a
10 Mimg linear warm-up, batch 512, 200 Mimg (390,625 steps), EMA with a
half-life of 0.5 Mimg (decay 0.99929 per step); sampling by the
deterministic Heun sampler on 18 Karras sigmas (rho 7), 35 network
evaluations. The paper reports FID 1.97 (VP, unconditional; 1.79
class-conditional, `--config.model.num_classes=10`).

Differences from the paper: its DDPM++ is score_sde's architecture
(BigGAN-style resampling blocks, skip connections scaled by 1/sqrt(2)),
here the DDPM U-Net at the same widths and depths; its non-leaky
augmentation pipeline (probability 0.12) is not implemented. Needs TFDS
'cifar10' prepared (tfds build cifar10), an accelerator and, for FID, the
Inception weights file.

  python -m gen_jax.main --exp=edm_cifar10 --workdir=runs/edm_cifar10
  python -m gen_jax.main --exp=edm_cifar10 --workdir=runs/edm_cifar10 --mode=eval \
      --config.eval.inception_weights=/path/to/pt_inception-2015-12-05-6726825d.pth
  python -m gen_jax.main --exp=edm_cifar10:smoke --workdir=/tmp/edm_cifar10_smoke
"""

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


def get_config():
  c = _continuous.edm_settings(_continuous.cifar10(
      "edm", channel_mults=(2, 2, 2), num_res_blocks=4, dropout=0.13))
  c.model.label_dropout = 0.0
  c.data.batch_size = 512
  c.train.num_steps = 390_625  # 200 Mimg
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 19_531  # 10 Mimg
  c.train.grad_clip_norm = 0.0
  c.train.ema_decay = 0.99929  # half-life 0.5 Mimg = 977 steps
  return c


def smoke(c):
  return _continuous.cifar10_smoke(c)
