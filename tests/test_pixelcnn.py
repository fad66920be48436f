"""PixelCNN: masks, gradient causality, no blind spot, exact normalization,
the compiled samplers (cached and full-pass) against a per-position loop and
each other, the cache's logits against the full network's."""

import itertools
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import config as config_lib
from gen_jax import families
from gen_jax.errors import UserError
from gen_jax.families import base
from gen_jax.models import pixelcnn
from gen_jax.models import pixelcnn_cache

from conftest import FAST_COMPILE


def _family(*overrides, exp="pixelcnn_mnist:smoke"):
  return families.build(config_lib.get_config(exp, list(overrides)))


# Parameters are drawn by numpy (XLA:CPU compiles each random draw of an
# initializer for about a second), networks compiled without optimization.
def _jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def _random_like(abstract, seed=0, scale=1.0):
  """Random arrays of `abstract`'s shapes: kernels [kh, kw, I, O] ~
  N(0, scale^2 / fan_in), biases and class tables ~ N(0, scale^2 / 4). Masked
  taps get values too (masks apply at every call)."""
  rng = np.random.default_rng(seed)

  def draw(s):
    std = scale / (math.sqrt(math.prod(s.shape[:-1])) if len(s.shape) == 4
                   else 2.0)
    return jnp.asarray(rng.normal(size=s.shape) * std, s.dtype)
  return jax.tree.map(draw, abstract)


def _state(family, scale=1.0):
  """A train state with random parameters (no optimizer state)."""
  abstract = jax.eval_shape(family.init, jax.random.key(0), None)
  return base.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=_random_like(abstract.params, scale=scale), opt_state=None,
      ema_params=None,
      rest=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract.rest))


def _net(shape, arch="gated", features=24, layers=4, levels=4, classes=0,
         first_kernel=3, dtype="float32"):
  cfg = pixelcnn.PixelCNNConfig(
      image_shape=shape, arch=arch, channels=features, num_layers=layers,
      first_kernel=first_kernel, kernel=3, head_channels=features,
      outputs_per_subpixel=levels, num_classes=classes, dtype=dtype)
  graphdef, abstract = nnx.split(nnx.eval_shape(
      lambda: pixelcnn.make(cfg, nnx.Rngs(0))))
  return nnx.merge(graphdef, _random_like(abstract))


def _jacobians(net, shape, classes=0, num=3):
  """[num, D, D]: d(projected logits at sub-pixel p) / d(input at q), p and q
  in the model's order (raster, channel fastest), at `num` random inputs."""
  rng = np.random.default_rng(0)
  proj = jnp.asarray(rng.normal(size=(4,)), jnp.float32)
  y = jnp.ones((1,), jnp.int32) if classes else None

  def f(x_HWC):
    return net(x_HWC[None], y)[0] @ proj  # [H, W, C]

  x = jnp.asarray(rng.uniform(-1, 1, (num, *shape)), jnp.float32)
  d = math.prod(shape)
  return np.asarray(_jit(jax.vmap(jax.jacrev(f)))(x)).reshape(num, d, d)


def test_masks_known_values():
  # Centre tap, C = 3 (features f serve channel f % 3): 'A' strictly earlier
  # channels, 'B' also the same one.
  np.testing.assert_array_equal(pixelcnn.centre_mask(3, 3, 3, "A"),
                                [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
  np.testing.assert_array_equal(pixelcnn.centre_mask(3, 6, 3, "B"),
                                [[1, 1, 1, 1, 1, 1], [0, 1, 1, 0, 1, 1],
                                 [0, 0, 1, 0, 0, 1]])
  # A 3x3 kernel on one channel: the rows above, the pixel to the left, and
  # the centre only for 'B'.
  a = pixelcnn.kernel_mask((3, 3, 1, 1), (1, 1), 1, "A")[..., 0, 0]
  b = pixelcnn.kernel_mask((3, 3, 1, 1), (1, 1), 1, "B")[..., 0, 0]
  np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_pixelcnn_is_causal_with_no_blind_spot(channels):
  # 4 layers of 3x3 on a 5x5 image: the stacks reach 4 rows up and 4 columns
  # either side, so every earlier sub-pixel is in the receptive field. The
  # class bias is on (3 classes) for colour.
  shape = (5, 5, channels)
  classes = 3 if channels == 3 else 0
  jac = _jacobians(_net(shape, "gated", classes=classes), shape, classes)
  later = np.triu(np.ones(jac.shape[1:], bool))  # [p, q]: q >= p
  assert np.all(jac[:, later] == 0.0)  # exactly zero, not merely small
  # Nonzero for every earlier sub-pixel (at one input at least: a ReLU of
  # the head may be off for all of a pixel's features at one input).
  depends = np.any(jac != 0.0, axis=0)
  assert np.all(depends[~later]), np.argwhere(~later & ~depends)


@pytest.mark.parametrize("channels", [1, 3])
def test_plain_pixelcnn_is_causal_but_has_the_blind_spot(channels):
  # The gated test above can fail: stacked masked 3x3 convolutions never see
  # (i - 1, j + 2) and everything right of it, at any depth.
  shape = (5, 5, channels)
  jac = _jacobians(_net(shape, "plain", layers=6), shape)
  later = np.triu(np.ones(jac.shape[1:], bool))
  assert np.all(jac[:, later] == 0.0)
  depends = np.any(jac != 0.0, axis=0).reshape(5, 5, channels, 5, 5, channels)
  assert not np.any(depends[1, 1, :, 0, 3:])  # the blind spot of (1, 1)
  assert np.all(depends[1, 1, :, 0, :3]) and np.all(depends[1, 1, :, 1, 0])
  assert np.all(depends[2, 2, :, :2, :4])  # what it does see (rows above)


def _enumerate_images(shape, levels):
  values = itertools.product(range(levels), repeat=math.prod(shape))
  return jnp.asarray(np.array(list(values), np.int32).reshape(-1, *shape))


@pytest.mark.parametrize("likelihood,shape", [
    ("bernoulli", (2, 2, 1)),  # 16 images
    ("categorical", (1, 1, 2)),  # 65,536 two-channel pixels
])
def test_probabilities_sum_to_one(likelihood, shape):
  family = _family(f"model.likelihood={likelihood}", "model.channels=6",
                   "model.head_channels=6", "model.num_classes=2",
                   f"data.image_shape={shape}".replace(" ", ""))
  state = _state(family)
  params = state.params
  images = _enumerate_images(shape, family.levels)

  @_jit
  def log_p(images, label):
    model = family.network(params, state.rest)
    return family.log_prob(model, images,
                           jnp.full((images.shape[0],), label, jnp.int32))

  for label in (0, 1):
    p = np.exp(np.asarray(log_p(images, label), np.float64))
    # Far from uniform, and far from a point mass (which would sum to ~1
    # whatever the model).
    assert p.max() > 10 * p.min() and p.max() < 0.5
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-5)


def _reference_sample(family, state, key, labels, shape):
  """The sampler written as a Python loop over positions: (images, the sum
  of log p of each drawn value, read off the logits when it was drawn)."""
  model_fn = _jit(lambda x, y: family.network(state.params, state.rest)(
      family.network_input(x), y))
  draw = _jit(lambda p, logits: jax.random.categorical(
      jax.random.fold_in(key, p), logits, axis=-1))
  h, w, c = shape
  x = np.zeros((len(labels), h, w, c), np.int32)
  log_p = np.zeros(len(labels))
  for p in range(h * w * c):
    i, j, ch = p // (w * c), (p // c) % w, p % c
    logits = np.asarray(model_fn(x, labels))[:, i, j, ch]  # [B, 256]
    value = np.asarray(draw(p, logits))
    log_p += (logits - np.log(np.sum(np.exp(logits), -1, keepdims=True)))[
        np.arange(len(labels)), value]
    x[:, i, j, ch] = value
  return x, log_p


def test_compiled_sampler_matches_the_per_position_loop():
  shape = (3, 4, 3)
  family = _family("model.num_classes=3", "model.channels=6",
                   "model.head_channels=6", "sample.rows_per_call=2",
                   f"data.image_shape={shape}".replace(" ", ""))
  state = _state(family)
  labels = np.array([0, 1, 2, 1])
  key = jax.random.key(7)
  calls = []
  images = family.sample(state, key, 4, labels,
                         progress=lambda d, t: calls.append((d, t)))
  assert calls == [(2, 3), (3, 3)]  # rows done, after each compiled call
  assert images.shape == (4, *shape)
  expected, log_p = _reference_sample(family, state, key, labels, shape)
  np.testing.assert_array_equal(np.rint(np.asarray(images) * 255), expected)
  # Causality seen from the sampler: the teacher-forced log-likelihood of
  # the finished image equals the sum of the log-probabilities at drawing.
  model = family.network(state.params, state.rest)
  np.testing.assert_allclose(
      _jit(family.log_prob)(model, jnp.asarray(expected), jnp.asarray(labels)),
      log_p, rtol=1e-5)
  # One call for the whole image draws the same images, and so does the
  # full-pass sampler.
  family.config.unlock()
  family.config.sample.rows_per_call = 0
  np.testing.assert_array_equal(
      family.sample(state, key, 4, labels), images)
  family.config.sample.cached = False
  np.testing.assert_array_equal(
      families.build(family.config).sample(state, key, 4, labels), images)


@pytest.mark.parametrize("arch,channels,classes,likelihood,rows", [
    ("gated", 1, 0, "categorical", 3),
    ("gated", 1, 2, "bernoulli", 0),
    ("plain", 3, 2, "categorical", 0),
])
def test_cached_sampler_draws_the_full_pass_samplers_images(
    arch, channels, classes, likelihood, rows):
  # (Colour, conditional, gated: the test above.)
  shape = (5, 6, channels)
  overrides = [f"model.arch={arch}", f"model.num_classes={classes}",
               f"model.likelihood={likelihood}", "model.channels=6",
               "model.head_channels=6", f"sample.rows_per_call={rows}",
               f"data.image_shape={shape}".replace(" ", "")]
  cached = _family(*overrides)
  # Categorical: large weights, peaked distributions whose draws follow
  # their logits (at scale 1, a wrong vertical input at one row changed no
  # draw here). Bernoulli: at that scale nearly every pixel would be 1.
  state = _state(cached, scale=3.0 if likelihood == "categorical" else 1.0)
  key = jax.random.key(3)
  images = np.asarray(cached.sample(state, key, 3))
  assert len(np.unique(images)) > 1  # not a constant picture
  full = _family(*overrides, "sample.cached=False")
  np.testing.assert_array_equal(full.sample(state, key, 3), images)


def _cached_logits(net, x_BHWC, y_B, top=0, seed=0):
  """The cache's logits at every sub-pixel of rows top.. of the network input
  x: each from the image as drawn up to it, every later sub-pixel (and, from
  `start`, every row >= top) holding random values. [B, H, W, C(, L)],
  NaN above row top."""
  b, h, w, c = x_BHWC.shape
  cache = pixelcnn_cache.make(net)
  start = _jit(lambda x, top: cache.start(x, top, y_B))
  pixel = _jit(lambda s, i, j, row: cache.pixel(s, i, j, row, y_B))
  end_row = _jit(lambda s, i, row: cache.end_row(s, i, row, y_B))
  rng = np.random.default_rng(seed)
  x = np.asarray(x_BHWC)
  noise = lambda shape: rng.normal(0, 3, shape).astype(np.float32)
  partial = np.concatenate([x[:, :top], noise((b, h - top, w, c))], axis=1)
  state = start(jnp.asarray(partial), top)
  out = []
  for i in range(top, h):
    for p in range(w * c):  # the sub-pixels of row i: p = j * C + ch
      j, ch = divmod(p, c)
      drawn = (np.arange(w * c) < p).reshape(1, w, c)
      row = np.where(drawn, x[:, i], noise((b, w, c)))
      logits, state = pixel(state, i, j, jnp.asarray(row))
      out.append(np.asarray(logits)[:, ch])
    state = end_row(state, i, x_BHWC[:, i])
  out = np.stack(out, axis=1).reshape(b, h - top, w, c, *out[0].shape[1:])
  return np.concatenate([np.full_like(out[:, :top], np.nan), out], axis=1)


@pytest.mark.parametrize("arch,channels,classes,dtype", [
    ("gated", 1, 0, "float32"),
    ("gated", 3, 3, "float32"),
    ("gated", 3, 3, "bfloat16"),
    ("plain", 3, 2, "float32"),
])
def test_cached_logits_equal_the_full_networks(arch, channels, classes,
                                               dtype):
  # A 5x5 first kernel (the others 3x3): the first layer's rows and columns
  # differ from the later layers'.
  shape = (5, 6, channels)
  net = _net(shape, arch, features=6, layers=2, levels=4, classes=classes,
             first_kernel=5, dtype=dtype)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(-1, 1, (2, *shape)), jnp.float32)
  y = jnp.asarray([0, classes - 1], jnp.int32) if classes else None
  # The full network's logits at p depend on x at < p only (the causality
  # tests above), so one pass over the finished image is the reference.
  expected = np.asarray(_jit(net)(x, y))
  tol = 1e-5 if dtype == "float32" else 1e-2
  np.testing.assert_allclose(_cached_logits(net, x, y), expected, atol=tol)
  # From a cache started at row 2 (`sample.rows_per_call`).
  np.testing.assert_allclose(_cached_logits(net, x, y, top=2)[:, 2:],
                             expected[:, 2:], atol=tol)
  state = _jit(lambda x: pixelcnn_cache.make(net).start(x, 0, y))(x)
  assert {a.dtype for a in jax.tree.leaves(state)} == {jnp.dtype(dtype)}


def test_binarized_sampler_and_eval_sums():
  family = _family("model.likelihood=bernoulli", "model.channels=4",
                   "model.head_channels=4", "data.image_shape=(4,4,1)")
  state = _state(family)
  images = np.asarray(family.sample(state, jax.random.key(1), 64))
  assert set(np.unique(images)) == {0.0, 1.0}
  batch = {"image": jnp.asarray(images * 255, jnp.uint8),
           "label": jnp.zeros((64,), jnp.int32),
           "mask": jnp.asarray(np.arange(64) < 40, jnp.float32)}
  sums = _jit(family.eval_step)(state, batch, jax.random.key(2))
  assert "bits_per_dim" not in sums  # only for the 8-bit data
  model = family.network(state.params, state.rest)
  # 0/255 pixels binarize to themselves whatever the key.
  nll = -_jit(family.log_prob)(model, batch["image"].astype(jnp.int32) // 255)
  np.testing.assert_allclose(sums["nll"], float(jnp.sum(nll[:40])),
                             rtol=1e-5)
  assert float(sums["count"]) == 40


def test_eval_reports_exact_bits_per_dim():
  family = _family("data.image_shape=(8,8,1)")
  state = _state(family)
  image = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 1))
  batch = {"image": jnp.asarray(image, jnp.uint8),
           "label": jnp.zeros((6,), jnp.int32)}
  eval_step = _jit(family.eval_step)
  out = family.summarize_eval({k: float(v) for k, v in eval_step(
      state, batch, jax.random.key(2)).items()})
  # Against the log-softmax written out in float64.
  model = family.network(state.params, state.rest)
  logits = np.asarray(_jit(lambda m, x: m(family.network_input(x)))(
      model, jnp.asarray(image)), np.float64)  # [6, 8, 8, 1, 256]
  log_z = np.log(np.sum(np.exp(logits), axis=-1))
  picked = np.take_along_axis(logits, image[..., None], axis=-1)[..., 0]
  nll = -np.sum((picked - log_z).reshape(6, -1), axis=1)
  np.testing.assert_allclose(out["nll"], nll.mean(), rtol=1e-5)
  np.testing.assert_allclose(out["bits_per_dim"],
                             nll.mean() / (64 * math.log(2)), rtol=1e-5)
  # A zero output layer is uniform over 256 values: exactly 8 bits/dim.
  model.head.out.kernel[...] = jnp.zeros(model.head.out.kernel.shape)
  model.head.out.bias[...] = jnp.zeros(model.head.out.bias.shape)
  _, params, _ = nnx.split(model, nnx.Param, ...)
  sums = eval_step(state.replace(params=params), batch, jax.random.key(2))
  np.testing.assert_allclose(float(sums["bits_per_dim"]) / 6, 8.0, rtol=1e-6)


@pytest.mark.parametrize("override,message", [
    ("model.likelihood=gaussian", "categorical, bernoulli"),
    ("model.arch=lstm", "gated, plain"),
    ("model.channels=10", "multiple of the 3 image channels"),
    ("model.kernel=4", "odd"),
    ("model.num_layers=0", ">= 1"),
    ("sample.cached=maybe", "expected a bool"),
])
def test_bad_config_values_are_one_line_errors(override, message):
  with pytest.raises(UserError, match=message) as info:
    _family("data.image_shape=(8,8,3)", "model.head_channels=9",
            "model.channels=9", override)
  assert "\n" not in str(info.value)


def test_experiment_arguments():
  cond = config_lib.get_config("pixelcnn_mnist:cond-binarized")
  assert cond.model.num_classes == 10
  assert cond.model.likelihood == "bernoulli"
  with pytest.raises(UserError, match="binarized, cond, smoke"):
    config_lib.get_config("pixelcnn_mnist:large")
