r"""Rectified flow (1-rectified flow) on CIFAR-10, after Liu et al. (2023).

Flow matching on the linear path with uniform t and velocity prediction,
on a DDPM++-sized U-Net (channels 128, multipliers 1,2,2,2, four residual
blocks per level, attention at 16x16, dropout 0.1) trained as score_sde's
DDPM++ configurations that the paper builds on: Adam lr 2e-4 with 5,000
warm-up steps, batch 128, gradient clipping at 1, EMA 0.9999, here 400k
steps; sampling with the adaptive ODE solver (tolerance 1e-5; the paper
uses scipy's RK45 at 1e-3). The paper reports FID 2.58 with 127 network
evaluations for 1-rectified flow. The U-Net is this project's DDPM U-Net at
those sizes, not score_sde's DDPM++ blocks. Needs TFDS 'cifar10' prepared,
an accelerator and, for FID, the Inception weights file.

  python -m gen_jax.main --exp=fm_cifar10 --workdir=runs/fm_cifar10
  python -m gen_jax.main --exp=fm_cifar10 --workdir=runs/fm_cifar10 --mode=sample --sampler=euler --num_steps=100
  python -m gen_jax.main --exp=fm_cifar10:smoke --workdir=/tmp/fm_cifar10_smoke
"""

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


def get_config():
  c = _continuous.fm_settings(_continuous.cifar10(
      "flow_matching", channel_mults=(1, 2, 2, 2), num_res_blocks=4,
      dropout=0.1))
  c.model.label_dropout = 0.0
  c.data.batch_size = 128
  c.train.num_steps = 400_000
  c.train.learning_rate = 2e-4
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 5000
  c.train.grad_clip_norm = 1.0
  c.train.ema_decay = 0.9999
  c.sample.sampler = "adaptive"
  c.sample.tolerance = 1e-5
  return c


def smoke(c):
  _continuous.cifar10_smoke(c)
  c.sample.sampler = "euler"
  return c
