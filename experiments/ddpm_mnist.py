r"""DDPM on MNIST: a small U-Net, linear schedule (T=1000), eps-prediction.

Trains in about 20 minutes on a 2-core CPU. Pictures and sample-quality evals
use DDIM with 50 steps (eta=0) unless --sampler/--num_steps say otherwise.
Reports the simple loss and the variational bound in bits/dim; --mode=eval adds
the Fréchet distance on the project's MNIST classifier features, precision and
recall.

  python -m gen_jax.main --exp=ddpm_mnist --workdir=runs/ddpm_mnist
  python -m gen_jax.main --exp=ddpm_mnist --workdir=runs/ddpm_mnist --mode=sample --sampler=ddpm  # all 1000 steps
  python -m gen_jax.main --exp=ddpm_mnist --workdir=runs/ddpm_mnist --mode=sample --sampler=ddim --num_steps=20
  python -m gen_jax.main --exp=ddpm_mnist --workdir=runs/ddpm_mnist --mode=sample --sampler=dpm_solver++ --num_steps=20
  python -m gen_jax.main --exp=ddpm_mnist --workdir=runs/ddpm_mnist --mode=eval
  python -m gen_jax.main --exp=ddpm_mnist:smoke --workdir=/tmp/ddpm_smoke

Variant 'dit': a Diffusion Transformer (6 blocks, width 128, 4x4 patches) in
place of the U-Net, e.g. --exp=ddpm_mnist:dit.
"""

from gen_jax import config as config_lib


VARIANTS = ("dit",)


def get_config(variants=()):
  c = config_lib.base_config()
  c.family = "diffusion"
  c.data.name = "mnist"
  c.data.batch_size = 64

  c.model.schedule = "linear"  # 'linear' | 'cosine'
  c.model.num_timesteps = 1000
  c.model.beta_start = 1e-4
  c.model.beta_end = 0.02
  c.model.prediction = "eps"  # 'eps' | 'v'
  c.model.variance = "fixed_large"  # 'fixed_large' (beta_t) | 'fixed_small'
  c.model.network = "unet"  # 'unet' | 'dit' (see experiments/_continuous.py)
  # On 2x2 pixel patches (space-to-depth), so the U-Net's levels are 14x14
  # and 7x7: a quarter of the activation memory of a 28x28 first level, which
  # is what bounds a CPU step.
  c.model.patch_size = 2
  c.model.channels = 32
  c.model.channel_mults = (1, 2)  # 14x14, 7x7
  c.model.num_res_blocks = 2
  c.model.attention_resolutions = (7,)
  c.model.dropout = 0.0
  c.model.num_groups = 8
  c.model.num_classes = 0  # > 0: class-conditional
  c.model.label_dropout = 0.1  # null-label rate, for classifier-free guidance

  c.train.num_steps = 1500
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.grad_clip_norm = 1.0
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.ckpt_every = 250
  c.train.sample_every = 500

  # 'ddpm' (ancestral, T steps) | 'ddim' | 'dpm_solver++' (DPM-Solver++(2M))
  c.sample.sampler = "ddim"
  c.sample.num_steps = 50  # 0: T (ddpm, ddim), 20 (dpm_solver++)
  c.sample.eta = 0.0  # DDIM: 0 deterministic, 1 DDPM-like
  c.sample.guidance_scale = 1.0  # classifier-free guidance (conditional)
  c.sample.clip_denoised = True
  c.sample.steps_per_call = 25  # reverse steps per compiled call (progress)

  c.eval.num_samples = 64
  c.eval.vlb_timesteps = 50  # final eval: strata of t = 1..T-1 per image
  c.eval.periodic_vlb_timesteps = 5
  c.eval.quality_samples = 1000
  c.eval.quality_features = "mnist_classifier"
  if "dit" in variants:
    config_lib.load_module("_dit").mnist(c)
  return c


def smoke(c):
  if c.model.network == "dit":
    config_lib.load_module("_dit").smoke(c)
  else:
    c.model.channels = 8
    c.model.num_groups = 4
    c.model.num_res_blocks = 1
  c.model.num_timesteps = 100
  c.sample.num_steps = 5
  c.eval.vlb_timesteps = 4
  c.eval.periodic_vlb_timesteps = 2
  c.eval.quality_samples = 0
  return c
