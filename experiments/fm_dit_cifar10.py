r"""Class-conditional flow matching on CIFAR-10 with DiT-S/2 (Peebles & Xie
2023): width 384, 12 blocks, 6 heads, 2x2 patches (256 tokens), adaLN-Zero
conditioning on time and class, 10% label dropout, classifier-free guidance
1.5; the paper's optimizer (AdamW lr 1e-4, no weight decay, batch 256, EMA
0.9999, 400k steps), with flow matching's velocity objective on logit-normal
times (Esser et al. 2024) in place of DDPM's.

The DiT paper trains on ImageNet 256x256 in a VAE's latent space (DiT-S/2:
FID 68.4 at 400k steps without guidance; DiT-XL/2: 2.27 with guidance 1.5),
which needs the latent space of the next step of this project. This setting
runs the same backbone on CIFAR-10 pixels, which a user can prepare with
`tfds build cifar10`; the paper has no number for it.

  python -m gen_jax.main --exp=fm_dit_cifar10 --workdir=runs/fm_dit_cifar10
  python -m gen_jax.main --exp=fm_dit_cifar10 --workdir=runs/fm_dit_cifar10 --mode=sample --sampler=heun --num_steps=25
  python -m gen_jax.main --exp=fm_dit_cifar10:smoke --workdir=/tmp/fm_dit_cifar10_smoke
"""

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


def get_config():
  c = _continuous.fm_settings(_continuous.cifar10(
      "flow_matching", channel_mults=(1,), num_res_blocks=1, dropout=0.0))
  config_lib.load_module("_dit").dit(c, width=384, depth=12, num_heads=6,
                                     patch_size=2)
  c.model.num_classes = 10
  c.model.label_dropout = 0.1
  c.model.time_sampling = "logit_normal"
  c.data.batch_size = 256
  c.data.random_flip = True
  c.train.num_steps = 400_000
  c.train.learning_rate = 1e-4
  c.train.lr_schedule = "constant"
  c.train.warmup_steps = 0
  c.train.grad_clip_norm = 0.0
  c.train.ema_decay = 0.9999
  c.sample.guidance_scale = 1.5
  c.eval.num_samples = 100
  return c


def smoke(c):
  _continuous.cifar10_smoke(c)
  c.eval.num_samples = 100
  return c
