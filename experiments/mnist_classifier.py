r"""MNIST classifier: the feature network for Fréchet distance on MNIST.

A small CNN (24- and 48-channel stages of two 3x3 convs and a max-pool, a 128-d
ReLU feature layer, 10 logits) trained with cross-entropy on images shifted by
up to 2 px. Reports held-out accuracy and NLL; `gen_jax.evaluation.features.
MnistClassifierFeatures(workdir)` then reads its features and logits.

  python -m gen_jax.main --exp=mnist_classifier --workdir=runs/mnist_classifier
  python -m gen_jax.main --exp=mnist_classifier --workdir=runs/mnist_classifier --mode=eval
  python -m gen_jax.main --exp=mnist_classifier --workdir=runs/mnist_classifier --mode=sample
  python -m gen_jax.main --exp=mnist_classifier:smoke --workdir=/tmp/mnist_classifier_smoke
"""

from gen_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.family = "classifier"
  c.data.name = "mnist"
  # On XLA:CPU a conv step costs as much per example at 64 as at 32, and 2-3x
  # more at 128: small batches buy more updates for the same time.
  c.data.batch_size = 32

  c.model.channels = (24, 48)
  c.model.feature_dim = 128
  c.model.dropout = 0.1

  c.train.num_steps = 1200  # 9.6 epochs of the 4,000 embedded digits
  c.train.learning_rate = 2e-3
  c.train.lr_schedule = "cosine"
  c.train.warmup_steps = 100
  c.train.ema_decay = 0.99
  c.train.augment_shift = 2  # pixels; 0 disables the random shifts
  c.train.log_every = 200
  c.train.eval_every = 600
  c.train.ckpt_every = 600
  c.train.sample_every = 1200
  return c


def smoke(c):
  c.model.channels = (8, 16)
  c.model.feature_dim = 32
  return c
