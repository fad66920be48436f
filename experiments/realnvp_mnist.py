r"""RealNVP on 8-bit MNIST: bits/dim of the dequantized images.

Multi-scale (Dinh et al., 2017): logit preprocessing (alpha = 1e-6); level 1 at
28x28x1: 3 checkerboard couplings, squeeze, 3 channel couplings, factor out
half; level 2 at 14x14x2: 4 checkerboard couplings (steps_per_level = 3).
Affine couplings with tanh-bounded log-scales, actnorm before each (in place
of the paper's batch norm). Coupling networks: 3x3 -> 1x1 -> 3x3 with 32
channels; the paper's residual networks are --config.model.num_blocks=N
(about 10x slower per step on a CPU, whose 3x3 convolutions at 28x28
dominate). Anchor: 1.06 bits/dim on full MNIST (as reported in the FFJORD
paper's table).

  python -m gen_jax.main --exp=realnvp_mnist --workdir=runs/realnvp_mnist
  python -m gen_jax.main --exp=realnvp_mnist:smoke --workdir=/tmp/realnvp_mnist_smoke
"""

from gen_jax import config as config_lib

_flow = config_lib.load_module("_flow")


def get_config():
  c = config_lib.base_config()
  c.family = "flow"
  c.data.name = "mnist"
  c.data.batch_size = 64

  c.model = _flow.model_defaults()
  c.model.arch = "realnvp"
  c.model.num_levels = 2
  c.model.steps_per_level = 3  # couplings of each kind per level (last: + 1)
  c.model.hidden = 32
  c.model.num_blocks = 0
  c.model.coupling_scale = "tanh"
  c.model.preprocess = "logit"
  c.model.logit_alpha = 1e-6

  c.train.num_steps = 2000
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 200
  c.train.grad_clip_norm = 50.0
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 500
  c.train.sample_every = 1000
  c.sample.temperature = 1.0
  return c


def smoke(c):
  c.model.hidden = 8
  return c
