r"""Flow matching (rectified flow) on MNIST: ddpm_mnist's U-Net, batch,
optimizer and steps, trained to predict the velocity eps - x_0 of the linear
path x_t = (1 - t) x_0 + t eps, so it compares with DDPM at equal compute.

Pictures and sample-quality evals use Euler with 50 steps unless
--sampler/--num_steps say otherwise (euler, heun, dpm_solver++, adaptive).
The final eval reports exact bits/dim through the probability-flow ODE on 64
held-out digits; --mode=eval adds the Fréchet distance on the MNIST
classifier's features, precision and recall.

  python -m gen_jax.main --exp=fm_mnist --workdir=runs/fm_mnist
  python -m gen_jax.main --exp=fm_mnist --workdir=runs/fm_mnist --mode=sample --sampler=heun --num_steps=10
  python -m gen_jax.main --exp=fm_mnist --workdir=runs/fm_mnist --mode=sample --sampler=adaptive
  python -m gen_jax.main --exp=fm_mnist --workdir=runs/fm_mnist --mode=eval --sampler=euler --num_steps=20
  python -m gen_jax.main --exp=fm_mnist:smoke --workdir=/tmp/fm_smoke

Reflow (2-rectified flow): a second run of the same network that starts from
the first's weights and learns straight paths to its samples, drawn with
Heun's 10 steps in each training step (20 times a plain step's network
evaluations), so Euler with few steps suffices:

  python -m gen_jax.main --exp=fm_mnist --workdir=runs/fm_mnist_reflow \
      --config.model.reflow_from=runs/fm_mnist --config.train.num_steps=500
"""

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


def get_config():
  return _continuous.fm_settings(_continuous.mnist("flow_matching"))


def smoke(c):
  return _continuous.smoke(c)
