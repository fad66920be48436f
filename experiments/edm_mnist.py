r"""EDM (Karras et al. 2022) on MNIST: ddpm_mnist's U-Net, batch, optimizer
and steps, wrapped in EDM's preconditioning and trained with its sigma
distribution and loss weighting, so it compares with DDPM at equal compute.

Pictures and sample-quality evals use the deterministic Heun sampler on 18
Karras sigmas (35 network evaluations) unless --sampler/--num_steps say
otherwise (euler, heun, stochastic with --config.sample.churn, dpm_solver++,
adaptive). The final eval reports exact bits/dim through the
probability-flow ODE on 64 held-out digits; --mode=eval adds the Fréchet
distance on the MNIST classifier's features, precision and recall.

  python -m gen_jax.main --exp=edm_mnist --workdir=runs/edm_mnist
  python -m gen_jax.main --exp=edm_mnist --workdir=runs/edm_mnist --mode=sample --sampler=dpm_solver++ --num_steps=10
  python -m gen_jax.main --exp=edm_mnist --workdir=runs/edm_mnist --mode=sample --sampler=stochastic --config.sample.churn=40
  python -m gen_jax.main --exp=edm_mnist --workdir=runs/edm_mnist --mode=eval
  python -m gen_jax.main --exp=edm_mnist:smoke --workdir=/tmp/edm_smoke

Variant 'dit': a Diffusion Transformer (6 blocks, width 128, 4x4 patches) in
place of the U-Net, e.g. --exp=edm_mnist:dit.
"""

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


VARIANTS = ("dit",)


def get_config(variants=()):
  c = _continuous.edm_settings(_continuous.mnist("edm"))
  if "dit" in variants:
    config_lib.load_module("_dit").mnist(c)
  return c


def smoke(c):
  return _continuous.smoke(c)
