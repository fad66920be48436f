r"""A coupling flow on a 2-D toy density: moons, 8 Gaussians or checkerboard.

':moons' (default), ':8gaussians', ':checkerboard' (the toy densities of the
FFJORD paper's Fig. 2), each of which combines with smoke (a run of seconds),
e.g. ':checkerboard-smoke'; ':smoke' alone is moons. The flow is 8 steps of
[actnorm, invertible 2x2 linear map, affine coupling with a 2 x 64 MLP].
Reports the held-out NLL in nats per point (the data's own entropy is the
floor: 3.47 nats for the checkerboard, whose density is uniform on 32 units of
area) and draws the samples over the data and the model density as
pictures.

  python -m gen_jax.main --exp=flow_2d --workdir=runs/flow_2d_moons
  python -m gen_jax.main --exp=flow_2d:checkerboard --workdir=runs/flow_2d_checkerboard
  python -m gen_jax.main --exp=flow_2d:smoke --workdir=/tmp/flow_2d_smoke
"""

from gen_jax import config as config_lib
from gen_jax.data import mixtures

_flow = config_lib.load_module("_flow")

VARIANTS = tuple(mixtures.DENSITIES)


def get_config(variants=()):
  name = config_lib.one_of(variants, VARIANTS, default="moons")
  c = config_lib.base_config()
  c.family = "flow"
  c.data.name = name
  c.data.image_shape = (2,)
  c.data.num_classes = 0
  c.data.batch_size = 256
  c.data.eval_batch_size = 500

  c.model = _flow.model_defaults()
  c.model.arch = "coupling_mlp"
  c.model.steps_per_level = 8
  c.model.hidden = 64
  c.model.coupling_scale = "tanh"
  c.model.preprocess = "none"

  c.train.num_steps = 10_000
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 200
  c.train.grad_clip_norm = 10.0
  c.train.log_every = 500
  c.train.eval_every = 2500
  c.train.ckpt_every = 2500
  c.train.sample_every = 2500
  c.sample.temperature = 1.0
  return c


def smoke(c):
  c.eval.num_examples = -1
  c.data.eval_batch_size = 500
  c.model.steps_per_level = 2
  c.model.hidden = 16
  return c
