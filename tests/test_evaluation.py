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


def _train_config(**kw):
  train = ml_collections.ConfigDict(dict(
      learning_rate=0.1, lr_schedule="constant", warmup_steps=0, num_steps=10,
      grad_clip_norm=0.0, weight_decay=0.0, b1=0.9, b2=0.999,
      final_lr_fraction=0.0))
  train.update(kw)
  return train


def test_cosine_schedule_follows_the_closed_form():
  """After the warm-up, lr = peak (final + (1 - final) (1 + cos(pi p)) / 2)
  at progress p through the decay, then peak * final. Checked off the
  midpoint too: at p = 1/2 cosine and linear decay agree."""
  peak, final, warmup, total = 2.0, 0.1, 10, 110
  lr = optim.learning_rate_schedule(_train_config(
      learning_rate=peak, lr_schedule="cosine", warmup_steps=warmup,
      num_steps=total, final_lr_fraction=final))
  steps = np.array([10, 20, 35, 60, 85, 100, 110, 150])
  progress = np.minimum((steps - warmup) / (total - warmup), 1.0)
  expected = peak * (final + (1 - final) * 0.5 * (1 + np.cos(np.pi * progress)))
  np.testing.assert_allclose([lr(s) for s in steps], expected, rtol=1e-5)
  np.testing.assert_allclose([lr(0), lr(5)], [0.0, peak / 2], atol=1e-6)
  assert abs(float(lr(35)) - peak * (1 - 0.9 * 0.25)) > 0.1  # not linear


def test_grad_clip_norm_rescales_large_gradients_to_the_clip():
  """train.grad_clip_norm = c: the updates from gradients of global norm > c
  are those from the gradients rescaled to norm c (both leaves by one
  factor); gradients within the clip pass unchanged. The second step's
  update depends on the clip through Adam's moments."""
  params = {"kernel": np.zeros((2, 3), np.float32),
            "bias": np.zeros((3,), np.float32)}
  rng = np.random.default_rng(0)
  small = {k: 0.1 * rng.standard_normal(v.shape).astype(np.float32)
           for k, v in params.items()}
  large = {k: 30.0 * rng.standard_normal(v.shape).astype(np.float32)
           for k, v in params.items()}
  norm = lambda g: np.sqrt(sum(np.sum(x**2) for x in g.values()))
  assert norm(small) < 1.0 < 20.0 < norm(large)

  def updates(grad_clip_norm, grads_per_step):
    opt = optim.make_optimizer(_train_config(grad_clip_norm=grad_clip_norm))
    state, out = opt.init(params), []
    for grads in grads_per_step:
      u, state = opt.update(grads, state, params)
      out.append(u)
    return out

  clipped = updates(1.0, [small, large])
  rescaled = {k: v / norm(large) for k, v in large.items()}
  expected = updates(0.0, [small, rescaled])
  for got, want in zip(clipped, expected):
    for k in params:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-8)
  unclipped = updates(0.0, [small, large])[1]
  assert max(np.abs(unclipped[k] - clipped[1][k]).max() for k in params) > 0.01
