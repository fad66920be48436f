r"""Glow on CIFAR-10 (Kingma & Dhariwal, 2018): the paper's setting.

L = 3 levels of K = 32 steps of [actnorm, invertible 1x1 conv (LU), affine
coupling], coupling networks 3x3 -> 1x1 -> 3x3 with 512 channels, factor-out
with learned priors, 8-bit data, batch 64, Adam lr 1e-3 with a linear
warm-up. The paper reports 3.35 bits/dim (affine coupling, 1x1 convolution).
Needs TFDS 'cifar10' prepared (tfds build cifar10 --file_format=array_record);
a GPU or TPU for the full model (44.8M parameters).

  python -m gen_jax.main --exp=glow_cifar10 --workdir=runs/glow_cifar10
  python -m gen_jax.main --exp=glow_cifar10 --workdir=runs/glow_cifar10 --mode=sample --temperature=0.7
  python -m gen_jax.main --exp=glow_cifar10:smoke --workdir=/tmp/glow_cifar10_smoke
"""

from gen_jax import config as config_lib

_flow = config_lib.load_module("_flow")


def get_config():
  c = config_lib.base_config()
  c.family = "flow"
  c.data.name = "cifar10"
  c.data.image_shape = (32, 32, 3)
  c.data.num_classes = 10
  c.data.batch_size = 64
  c.data.eval_batch_size = 500

  c.model = _flow.model_defaults()
  c.model.arch = "glow"
  c.model.num_levels = 3
  c.model.steps_per_level = 32
  c.model.hidden = 512
  c.model.coupling_scale = "sigmoid"
  c.model.preprocess = "center"

  c.train.num_steps = 400_000
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 5000
  c.train.grad_clip_norm = 50.0
  c.train.log_every = 500
  c.train.eval_every = 20_000
  c.train.ckpt_every = 5000
  c.train.sample_every = 20_000
  c.sample.temperature = 0.7  # the sample grid; bits/dim do not depend on it
  return c


def smoke(c):
  c.model.steps_per_level = 2
  c.model.hidden = 16
  return c
