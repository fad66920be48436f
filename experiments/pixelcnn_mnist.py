r"""Gated PixelCNN on 8-bit MNIST: 256-way softmax per pixel, exact bits/dim.

Vertical and horizontal stacks (no blind spot), gated tanh * sigmoid units,
a residual horizontal stack; a 7x7 first layer (mask A), then 3x3 layers.
Reports the exact held-out NLL (nats per image) and bits/dim. Samples are
drawn pixel by pixel in one compiled loop, with a cache of the features later
pixels read (per pixel, the network's work at that pixel only).

Arguments (combine with '-', e.g. ':cond-smoke'):
  binarized: one Bernoulli logit per pixel on dynamically binarized MNIST
    (NLL in nats, the binarized-MNIST literature's figure).
  cond: class-conditional, p(x | y) (sample grids: one row per class).
  smoke: a run of seconds.

  python -m gen_jax.main --exp=pixelcnn_mnist --workdir=runs/pixelcnn_mnist
  python -m gen_jax.main --exp=pixelcnn_mnist --workdir=runs/pixelcnn_mnist --mode=eval
  python -m gen_jax.main --exp=pixelcnn_mnist --workdir=runs/pixelcnn_mnist --mode=sample
  python -m gen_jax.main --exp=pixelcnn_mnist:cond --workdir=runs/pixelcnn_mnist_cond
  python -m gen_jax.main --exp=pixelcnn_mnist:binarized --workdir=runs/pixelcnn_mnist_bin
  python -m gen_jax.main --exp=pixelcnn_mnist:smoke --workdir=/tmp/pixelcnn_smoke
"""

from gen_jax import config as config_lib


VARIANTS = ("binarized", "cond")


def get_config(variants=()):
  c = config_lib.base_config()
  c.family = "pixelcnn"
  c.data.name = "mnist"
  c.data.batch_size = 32
  c.data.eval_batch_size = 250

  # The paper (van den Oord et al. 2016, "Conditional Image Generation with
  # PixelCNN Decoders") reports about 0.81 bits/dim on 8-bit MNIST with a
  # larger network trained far longer on all 60,000 digits. This one (178k
  # parameters; 8 gated layers of 32 features, a 7x7 first layer, so each
  # pixel sees 11 rows up and 10 columns either side) is sized for a 2-core
  # CPU. Measured on the 4,000 embedded training digits (offline), on 2 cores
  # shared with other training jobs (load ~7): 1.165 bits/dim
  # (nll 633.0 nats) on the 1,000 held-out digits after 1,500 steps (train
  # 1.163: underfit, not overfit); 0.75 steps/s, 42 min wall, 1.2 CPU-s per
  # step; 16 samples in 74 s with the full-pass sampler (784 network passes
  # each). benchmarks/pixelcnn_sampling.py (random weights, 16 images, 2
  # cores): 0.025 s per image cached, 2.4 s full-pass.
  c.model.arch = "gated"  # 'gated' | 'plain' (masked convs, has a blind spot)
  c.model.likelihood = "categorical"  # 'categorical' (256-way) | 'bernoulli'
  c.model.channels = 32
  c.model.num_layers = 8
  c.model.first_kernel = 7
  c.model.kernel = 3
  c.model.head_channels = 64
  c.model.num_classes = 0  # > 0: class-conditional

  c.train.num_steps = 1500
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.train.sample_every = 1500

  # 0: the whole image in one compiled call; > 0: this many rows per call
  # (the same compiled loop), with progress reported in between.
  c.sample.rows_per_call = 0
  # True: cache the features later pixels read, so each pixel costs the
  # network's work at one pixel; False: the whole network at every pixel
  # (784 passes per image; the same images, for comparison).
  c.sample.cached = True
  c.eval.num_samples = 16  # images in the sample grid
  if "binarized" in variants:
    c.model.likelihood = "bernoulli"
  if "cond" in variants:
    c.model.num_classes = 10
    c.eval.num_samples = 20  # 10 classes x 2
  return c


def smoke(c):
  c.model.channels = 8
  c.model.num_layers = 2
  c.model.head_channels = 8
  c.eval.num_samples = 10 if c.model.num_classes else 4  # cond: one per class
  return c
