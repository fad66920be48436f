"""The GAN family: losses, gradient penalty, spectral norm, update isolation,
sharding equivalence, the mixture data and the mode-collapse metrics."""

import dataclasses
import math

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import config as config_lib
from gen_jax import families
from gen_jax.data import mixtures
from gen_jax.errors import UserError
from gen_jax.evaluation import modes
from gen_jax.families import gan
from gen_jax.models import gan_nets
from gen_jax.models import layers

from conftest import train_on_devices


def _softplus(x):
  return math.log1p(math.exp(x))


def test_losses_on_known_inputs():
  d_real = jnp.array([2.0, -1.0])
  d_fake = jnp.array([0.5, -3.0])
  expected_d = {
      "non_saturating": [_softplus(-2.0) + _softplus(0.5),
                         _softplus(1.0) + _softplus(-3.0)],
      "wgan_gp": [0.5 - 2.0, -3.0 + 1.0],
      "hinge": [max(0, 1 - 2.0) + max(0, 1 + 0.5),
                max(0, 1 + 1.0) + max(0, 1 - 3.0)],
  }
  expected_g = {
      "non_saturating": [_softplus(-0.5), _softplus(3.0)],
      "wgan_gp": [-0.5, 3.0],
      "hinge": [-0.5, 3.0],
  }
  for loss in gan.LOSSES:
    np.testing.assert_allclose(
        gan.discriminator_loss(loss, d_real, d_fake), expected_d[loss],
        rtol=1e-6, err_msg=loss)
    np.testing.assert_allclose(gan.generator_loss(loss, d_fake),
                               expected_g[loss], rtol=1e-6, err_msg=loss)


def test_gradient_penalty_of_a_linear_critic_is_analytic():
  # critic(x) = <w, x> + b has gradient w everywhere: penalty (|w| - 1)^2.
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.normal(size=(7, 7, 1)) * 0.3, jnp.float32)
  critic = lambda x: jnp.sum(x * w[None], axis=(1, 2, 3)) + 0.7
  real = jnp.asarray(rng.normal(size=(5, 7, 7, 1)), jnp.float32)
  fake = jnp.asarray(rng.normal(size=(5, 7, 7, 1)), jnp.float32)
  penalty, norms = gan.gradient_penalty(critic, real, fake,
                                        jax.random.key(0))
  norm_w = float(jnp.sqrt(jnp.sum(w**2)))
  assert abs(norm_w - 1.0) > 0.5  # a penalty far from 0
  np.testing.assert_allclose(norms, np.full(5, norm_w), rtol=1e-5)
  np.testing.assert_allclose(penalty, np.full(5, (norm_w - 1.0)**2),
                             rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 3, 4, 8), (50, 20), (10, 64)])
def test_spectral_norm_converges_to_the_top_singular_value(shape):
  rng = np.random.default_rng(1)
  weight = jnp.asarray(rng.normal(size=shape), jnp.float32)
  sn = layers.SpectralNorm(shape[-1], rngs=nnx.Rngs(0))
  top = np.linalg.svd(np.asarray(weight).reshape(-1, shape[-1]),
                      compute_uv=False)[0]
  first = float(sn.sigma(weight))
  for _ in range(100):
    normalized = sn(weight)
  assert abs(first - top) > 1e-3 * top  # one step from a random u is not it
  np.testing.assert_allclose(float(sn.sigma(weight)), top, rtol=1e-4)
  after = np.linalg.svd(np.asarray(normalized).reshape(-1, shape[-1]),
                        compute_uv=False)[0]
  np.testing.assert_allclose(after, 1.0, rtol=1e-4)


def test_spectral_norm_layers_keep_u_as_state_not_params():
  cfg = gan_nets.GANNetConfig(arch="dcgan", g_channels=(8, 4),
                              d_channels=(4, 8), spectral_norm=True,
                              num_classes=10)
  d = gan_nets.DCGANDiscriminator(cfg, rngs=nnx.Rngs(0))
  params = nnx.state(d, nnx.Param)
  u = nnx.state(d, layers.SpectralState)
  # Two convs, the output layer and the projection embedding.
  assert len(jax.tree.leaves(u)) == 4
  assert not set(map(str, jax.tree_util.tree_flatten_with_path(params)[0])
                 ) & set(map(str, jax.tree_util.tree_flatten_with_path(u)[0]))
  before = jax.tree.leaves(u)
  d(jnp.zeros((2, 28, 28, 1)), jnp.array([1, 2]))
  after = jax.tree.leaves(nnx.state(d, layers.SpectralState))
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def _family(exp, *overrides):
  return families.build(config_lib.get_config(exp, list(overrides)))


def _batch(config, rng, size=None):
  size = size or config.data.batch_size
  shape = tuple(config.data.image_shape)
  return {"image": rng.integers(0, 256, (size,) + shape, np.uint8),
          "label": rng.integers(0, 10, (size,)).astype(np.int32)}


def _changed(a, b):
  return [not np.array_equal(x, y)
          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


def test_each_update_touches_only_its_own_network():
  family = _family("cgan_mnist:smoke")  # spectral norm + projection + cond BN
  batch = jax.tree.map(jnp.asarray,
                       _batch(family.config, np.random.default_rng(0), 16))
  state = family.init(jax.random.key(0), None)
  x = family.preprocess(batch["image"])

  after_d, _ = jax.jit(family._d_update)(state, x, batch["label"],
                                         jax.random.key(1))
  # (Some leaves of the updated network may have a zero gradient, e.g. the
  # output bias under the hinge loss while every |D| < 1.)
  assert not any(_changed(state.g_params, after_d.g_params))
  assert sum(_changed(state.d_params, after_d.d_params)) >= 5
  # The power iterations ran (the output layer's u is a 1-vector, always ±1).
  assert sum(_changed(state.d_rest, after_d.d_rest)) == 3

  after_g, _ = jax.jit(family._g_update, static_argnums=3)(
      state, batch["label"], jax.random.key(2), 16)
  assert not any(_changed(state.d_params, after_g.d_params))
  assert sum(_changed(state.g_params, after_g.g_params)) >= 5
  assert any(_changed(state.g_ema, after_g.g_ema))


@pytest.mark.parametrize("exp,overrides", [
    ("wgan_gp_mnist:smoke", []),  # 5 critic updates with the penalty
    # ResNets, spectral norm, projection, conditional BN (one critic update:
    # the ResNet step's compile time grows with each).
    ("sngan_cifar10:cond-smoke", ["model.n_critic=1", "data.batch_size=16"]),
])
def test_train_step_same_on_1_and_8_devices(exp, overrides):
  family = _family(exp, *overrides)
  config = family.config
  rng = np.random.default_rng(0)
  batches = [_batch(config, rng) for _ in range(2)]
  results = {n: train_on_devices(family, batches, n, ["d_loss", "g_loss"])
             for n in (1, 8)}
  np.testing.assert_allclose(results[1][0], results[8][0], rtol=1e-4,
                             atol=1e-5)
  chex.assert_trees_all_close(results[1][1], results[8][1], rtol=1e-4,
                              atol=1e-5)


def test_resnet_networks_have_the_paper_shapes():
  cfg = gan_nets.GANNetConfig(arch="resnet", data_shape=(32, 32, 3),
                              latent_dim=128, g_channels=(128,),
                              d_channels=(128,))
  model = nnx.eval_shape(lambda: gan_nets.GAN(cfg, rngs=nnx.Rngs(0)))
  g_def, g_state = nnx.split(model.generator)
  d_def, d_state = nnx.split(model.discriminator)
  z = jax.ShapeDtypeStruct((4, 128), jnp.float32)
  x = jax.eval_shape(lambda s, z: nnx.merge(g_def, s)(z), g_state, z)
  assert x.shape == (4, 32, 32, 3)
  d = jax.eval_shape(lambda s, x: nnx.merge(d_def, s)(x), d_state, x)
  assert d.shape == (4,)
  # Generator: dense 128 -> 4x4x128, three up blocks (two 3x3 convs, a 1x1
  # shortcut, two batch norms each), batch norm and a 3x3 conv to RGB; only
  # the last conv has a bias (every other layer feeds a batch norm).
  block = 2 * 9 * 128 * 128 + 128 * 128 + 2 * 2 * 128
  expected_g = 128 * 2048 + 3 * block + 2 * 128 + (9 * 128 * 3 + 3)
  assert gan_nets.num_params(model.generator) == expected_g


def test_mixtures_have_the_published_geometry():
  ring, grid = mixtures.MIXTURES["ring8"], mixtures.MIXTURES["grid25"]
  np.testing.assert_allclose(np.linalg.norm(ring.centers, axis=1), 1.0)
  assert ring.num_modes == 8 and ring.std == 0.01
  assert grid.num_modes == 25 and grid.std == 0.05
  assert sorted(set(np.round(grid.centers[:, 0], 6))) == [-4, -2, 0, 2, 4]
  train, held_out = mixtures.splits("grid25")
  assert train["image"].shape == (100_000, 2)
  assert held_out["image"].shape == (2_500, 2)
  offsets = train["image"] - grid.centers[train["label"]]
  np.testing.assert_allclose(offsets.std(0), 0.05, rtol=0.02)
  # Every held-out point is high quality: the metric's ceiling.
  result = modes.mode_metrics(held_out["image"], grid)
  assert result["modes_captured"] == 25
  assert result["high_quality_pct"] > 99.0


def test_mode_metrics_on_hand_placed_samples():
  ring = mixtures.MIXTURES["ring8"]
  c, s = ring.centers, ring.std
  outward = c / np.linalg.norm(c, axis=1, keepdims=True)
  samples = np.stack([
      c[0], c[1], c[2],  # exactly on three modes
      c[3] + 2.9 * s * outward[3],  # inside 3 std: mode 3 captured
      c[4] + 3.1 * s * outward[4],  # just outside: mode 4 not captured
      np.zeros(2),  # the centre of the ring: near no mode
  ])
  result = modes.mode_metrics(samples, ring)
  assert result["modes_captured"] == 4
  np.testing.assert_allclose(result["high_quality_pct"], 100 * 4 / 6)
  # Four modes with one high-quality sample each, of eight: KL = log 2.
  np.testing.assert_allclose(result["mode_kl"], math.log(2))


# --- sampling with standing batch-norm statistics ----------------------------


@pytest.mark.parametrize("exp", ["dcgan_mnist:smoke", "cgan_mnist:smoke"])
def test_a_sample_does_not_depend_on_its_batch(exp):
  family = _family(exp)  # the default standing statistics
  state = family.init(jax.random.key(0), None)
  z = jax.random.normal(jax.random.key(1), (64, family.net_cfg.latent_dim))
  y = jnp.arange(64) % 10 if family.num_classes else None
  batch = np.asarray(family.generate(state, z, y))
  assert batch.std(axis=0).mean() > 0.01  # different latents, different images
  for i in (0, 37):
    one = family.generate(state, z[i:i + 1], None if y is None else y[i:i + 1])
    np.testing.assert_allclose(one, batch[i:i + 1], atol=1e-5)


def _mlp_batch_stats(g, z_BL):
  """The batch mean and variance of each batch norm's input of the MLP
  generator `g` on one batch, in float64 numpy: {'norms/i': (mean, var)}."""
  h = np.asarray(z_BL, np.float64)
  stats = {}
  for i, (dense, norm) in enumerate(zip(g.dense, g.norms)):
    h = h @ np.asarray(dense.kernel[...], np.float64)
    if dense.bias is not None:
      h = h + np.asarray(dense.bias[...])
    mean, var = h.mean(axis=0), h.var(axis=0)
    stats[f"norms/{i}"] = (mean, var)
    h = ((h - mean) / np.sqrt(var + norm.eps) * np.asarray(norm.scale[...])
         + np.asarray(norm.offset[...]))
    h = np.maximum(h, 0.0)
  return stats


def test_standing_stats_average_the_batch_stats_of_the_sampling_weights():
  family = _family("gan_mog2d:smoke", "sample.standing_stats_batches=3",
                   "sample.standing_stats_batch_size=5",
                   "train.ema_decay=0.5")
  state = family.init(jax.random.key(0), None)
  rng = np.random.default_rng(0)

  def perturbed(params):  # scales, offsets and weights away from their init
    return jax.tree.map(
        lambda a: a + 0.3 * rng.normal(size=a.shape).astype(a.dtype), params)

  state = state.replace(g_params=perturbed(state.g_params),
                        g_ema=perturbed(state.g_params))

  def expected(params):
    g = nnx.merge(family.g_def, params, state.g_rest)
    per_batch = [_mlp_batch_stats(g, family.standing_batch(i)[0])
                 for i in range(3)]
    return {k: tuple(np.mean([b[k][j] for b in per_batch], axis=0)
                     for j in range(2)) for k in per_batch[0]}

  stats = family.standing_stats(state)
  want = expected(state.g_ema)
  assert family.standing_batch(0)[0].shape == (5, 2)
  assert sorted(stats) == sorted(want) == ["norms/0", "norms/1"]
  for k in want:
    for got, ref in zip(stats[k], want[k]):
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=k)
  # The EMA weights, not the raw ones (whose statistics differ).
  raw = expected(state.g_params)
  assert not np.allclose(raw["norms/1"][1], want["norms/1"][1], rtol=1e-2)
  # Not the statistics of the three batches pooled into one.
  g = nnx.merge(family.g_def, state.g_ema, state.g_rest)
  pooled = _mlp_batch_stats(g, jnp.concatenate(
      [family.standing_batch(i)[0] for i in range(3)]))
  assert not np.allclose(pooled["norms/1"][1], want["norms/1"][1], rtol=1e-2)


def test_samples_of_one_are_not_constant():
  # The MLP generator's batch norm normalizes over the batch axis alone: from
  # a batch of one's own statistics, every sample is the same point.
  family = _family("gan_mog2d:smoke")
  state = family.init(jax.random.key(0), None)
  points = np.concatenate([family.sample(state, jax.random.key(i), 1)
                           for i in range(4)])
  assert np.all(np.ptp(points, axis=0) > 1e-3), points
  off = _family("gan_mog2d:smoke", "sample.standing_stats_batches=0")
  points = np.concatenate([off.sample(state, jax.random.key(i), 1)
                           for i in range(4)])
  np.testing.assert_allclose(points, np.broadcast_to(points[:1], (4, 2)),
                             atol=1e-6)


# --- architecture options ----------------------------------------------------


@pytest.mark.parametrize("shape", [(28, 28, 1), (12, 12, 3), (32, 20, 3)])
def test_resnet_refuses_images_not_multiples_of_8(shape):
  with pytest.raises(UserError, match=r"image_shape.*multiples of 8"):
    _family("sngan_cifar10:smoke", f"data.image_shape={shape}")


@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 16, 3), (24, 40, 3)])
def test_resnet_works_below_32_pixels(shape):
  family = _family("sngan_cifar10:cond-smoke", f"data.image_shape={shape}")
  model = nnx.eval_shape(lambda: gan_nets.GAN(family.net_cfg,
                                              rngs=nnx.Rngs(0)))
  g_def, g_state = nnx.split(model.generator)
  d_def, d_state = nnx.split(model.discriminator)
  z = jax.ShapeDtypeStruct((4, family.net_cfg.latent_dim), jnp.float32)
  y = jax.ShapeDtypeStruct((4,), jnp.int32)
  x = jax.eval_shape(lambda s, z, y: nnx.merge(g_def, s)(z, y), g_state, z, y)
  assert x.shape == (4,) + shape
  d = jax.eval_shape(lambda s, x, y: nnx.merge(d_def, s)(x, y), d_state, x, y)
  assert d.shape == (4,)


def _count(module, kind):
  return sum(isinstance(m, kind) for _, m in nnx.iter_modules(module))


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_g_norm_and_d_norm_do_what_they_say(arch):
  shape = (8, 8, 3)
  cfg = gan_nets.GANNetConfig(arch=arch, data_shape=shape, latent_dim=8,
                              g_channels=(8, 8), d_channels=(8, 8))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3,) + shape), jnp.float32)
  z = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
  for g_norm in ("batch", "none"):
    g = gan_nets.GAN(dataclasses.replace(cfg, g_norm=g_norm),
                     rngs=nnx.Rngs(0)).generator
    assert (_count(g, layers.BatchNorm) > 0) == (g_norm == "batch")
    # Without batch norm the convs and the dense layer have biases.
    biased = [m for _, m in nnx.iter_modules(g)
              if isinstance(m, (layers.Conv, layers.Dense))
              and m.bias is not None]
    assert len(biased) == (1 if g_norm == "batch" else
                           _count(g, (layers.Conv, layers.Dense)))
    assert g(z).shape == (3,) + shape
  for d_norm in ("batch", "layer", "none"):
    d = gan_nets.GAN(dataclasses.replace(cfg, d_norm=d_norm),
                     rngs=nnx.Rngs(0)).discriminator
    n_bn, n_ln = _count(d, layers.BatchNorm), _count(d, nnx.LayerNorm)
    assert (n_bn > 0, n_ln > 0) == (d_norm == "batch", d_norm == "layer")
    # Only batch norm mixes examples: row 0's output then depends on row 2.
    out = d(x)
    other = d(x.at[2].multiply(3.0))
    assert out.shape == (3,)
    assert (not np.allclose(out[0], other[0])) == (d_norm == "batch"), d_norm


@pytest.mark.parametrize("exp,override,message", [
    ("dcgan_mnist:smoke", "model.g_norm=layer", "g_norm 'layer'"),
    ("sngan_cifar10:smoke", "model.d_norm=group", "d_norm 'group'"),
    ("gan_mog2d:smoke", "model.d_norm=layer", "'mlp' discriminator"),
    ("dcgan_mnist:smoke", "sample.standing_stats_batch_size=1", "must be >= 2"),
])
def test_unsupported_options_are_one_line_errors(exp, override, message):
  with pytest.raises(UserError, match=message) as e:
    _family(exp, override)
  assert "\n" not in str(e.value)
