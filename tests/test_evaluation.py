"""Shared pieces: sample grids, EMA, optimizer schedules."""

import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from gen_jax import optim
from gen_jax.evaluation import grids
from gen_jax.families import base


def test_grid_places_images_row_major(tmp_path):
  images = np.stack([np.full((3, 2, 1), v, np.float32) for v in (0.0, 0.5, 1.0)])
  grid = grids.make_grid(images, ncols=2, pad=1)
  assert grid.shape == (2 * 4 + 1, 2 * 3 + 1, 1)
  assert grid[1, 1, 0] == 0.0 and grid[1, 4, 0] == 0.5 and grid[5, 1, 0] == 1.0
  assert grid[5, 4, 0] == 1.0  # the empty cell stays white
  grids.save_png(tmp_path / "g.png", grid, scale=3)
  png = np.asarray(Image.open(tmp_path / "g.png"))
  assert png.shape == (27, 21) and png[3, 12] == 128


def test_ema_update_is_the_exponential_average():
  ema = {"w": jnp.zeros(3)}
  for _ in range(3):
    ema = base.ema_update(ema, {"w": jnp.ones(3)}, 0.9)
  np.testing.assert_allclose(ema["w"], 1 - 0.9**3, rtol=1e-6)


def test_learning_rate_schedules():
  train = ml_collections.ConfigDict(dict(
      learning_rate=1.0, lr_schedule="cosine", warmup_steps=10, num_steps=110,
      grad_clip_norm=0.0, weight_decay=0.0, b1=0.9, b2=0.999,
      final_lr_fraction=0.0))
  lr = optim.learning_rate_schedule(train)
  np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
  train.lr_schedule = "constant"
  lr = optim.learning_rate_schedule(train)
  np.testing.assert_allclose([lr(5), lr(10), lr(1000)], [0.5, 1.0, 1.0])
  train.lr_schedule = "linear"
  lr = optim.learning_rate_schedule(train)
  np.testing.assert_allclose([lr(5), lr(10), lr(60), lr(110)],
                             [0.5, 1.0, 0.5, 0.0], atol=1e-6)
  # A GAN critic's 5 updates per step: the same curve over train steps.
  lr5 = optim.learning_rate_schedule(train, peak=2.0, updates_per_step=5)
  np.testing.assert_allclose([lr5(25), lr5(50), lr5(300), lr5(550)],
                             [1.0, 2.0, 1.0, 0.0], atol=1e-6)
  # A run shorter than its warm-up warms up over half of it, then decays.
  train.update(num_steps=8, lr_schedule="cosine")
  lr = optim.learning_rate_schedule(train)
  np.testing.assert_allclose([lr(0), lr(2), lr(4), lr(8)],
                             [0.0, 0.5, 1.0, 0.0], atol=1e-6)
  # Decay to a fraction of the peak (cosine: the midpoint is halfway there).
  train.update(num_steps=110, final_lr_fraction=0.1)
  lr = optim.learning_rate_schedule(train)
  np.testing.assert_allclose([lr(10), lr(60), lr(110)], [1.0, 0.55, 0.1],
                             atol=1e-6)
  train.lr_schedule = "linear"
  lr = optim.learning_rate_schedule(train)
  np.testing.assert_allclose([lr(60), lr(110)], [0.55, 0.1], atol=1e-6)


def test_weight_decay_spares_biases_and_scales():
  train = ml_collections.ConfigDict(dict(
      learning_rate=0.1, lr_schedule="constant", warmup_steps=0, num_steps=10,
      grad_clip_norm=0.0, weight_decay=0.5, b1=0.9, b2=0.999,
      final_lr_fraction=0.0))
  opt = optim.make_optimizer(train)
  params = {"kernel": np.ones((2, 3), np.float32),
            "bias": np.ones((3,), np.float32)}
  zero = {k: np.zeros_like(v) for k, v in params.items()}
  updates, _ = opt.update(zero, opt.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * params["kernel"])
  np.testing.assert_array_equal(updates["bias"], 0.0)
