"""Normalizing flows: every bijector and whole flows invert to 1e-4 and their
log-determinants equal slogdet of the brute-force Jacobian; actnorm's
data-dependent init; the 1x1 conv's determinant; the family's bits/dim against
an independent computation; a 2-D flow's density integrates to one; the toy
densities' geometry; the train step on 1 vs 8 devices."""

import math

from conftest import FAST_COMPILE
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import config as config_lib
from gen_jax import families
from gen_jax.data import mixtures
from gen_jax.errors import UserError
from gen_jax.models import bijectors as bij
from gen_jax.models import flows


def _jit(fn):
  return jax.jit(fn, compiler_options=FAST_COMPILE)


def _perturbed(module: nnx.Module, scale: float = 0.3, seed: int = 7):
  """The module with every parameter moved off its (often zero) init, so no
  Jacobian term is trivially zero."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [p + scale * jax.random.normal(k, p.shape)
            for p, k in zip(leaves, keys)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)


def _check_bijector(layer, x, atol=1e-4):
  """Round trip, forward log-det vs slogdet(jacfwd) on example 0, and the
  inverse log-det being its negation."""
  z, logdet = _jit(layer.forward)(x)
  x_back, inv_logdet = _jit(layer.inverse)(z)
  np.testing.assert_allclose(x_back, x, atol=atol)
  np.testing.assert_allclose(inv_logdet, -logdet, rtol=1e-4, atol=1e-3)

  shape = x.shape[1:]

  def f(flat):
    out = layer.forward(flat.reshape((1,) + shape))[0]
    return out.reshape(-1)

  jac = _jit(jax.jacfwd(f))(x[0].reshape(-1))
  assert jac.shape[0] == jac.shape[1]  # dimension-preserving
  sign, expected = jnp.linalg.slogdet(jac)
  assert sign != 0
  np.testing.assert_allclose(logdet[0], expected, rtol=1e-4, atol=1e-3)


def _images(shape, seed=0, low=0.05, high=0.95):
  return jax.random.uniform(jax.random.key(seed), shape, minval=low,
                            maxval=high)


def _conv_net(c_in, c_out):
  return flows.ConvConditioner(c_in, 8, c_out, 0, rngs=nnx.Rngs(1))


@pytest.mark.parametrize("name", [
    "actnorm", "conv1x1", "coupling_checkerboard_tanh",
    "coupling_channel_sigmoid", "coupling_vector", "squeeze", "logit",
    "shift", "split_prior"])
def test_bijector_inverts_and_its_logdet_is_the_jacobians(name):
  x = _images((2, 4, 4, 2))
  if name == "actnorm":
    layer = _perturbed(bij.ActNorm(2))
  elif name == "conv1x1":
    layer = _perturbed(bij.Invertible1x1Conv(2, rngs=nnx.Rngs(0)), 0.1)
  elif name == "coupling_checkerboard_tanh":
    layer = _perturbed(bij.AffineCoupling(
        bij.checkerboard_mask((4, 4), 2, 1), _conv_net(3, 4), 2, "tanh"))
  elif name == "coupling_channel_sigmoid":
    x = _images((2, 4, 4, 3))
    layer = _perturbed(bij.AffineCoupling(
        bij.channel_mask(3, 0), _conv_net(1, 4), 3, "sigmoid"))
  elif name == "coupling_vector":
    x = _images((2, 3))  # features 0 and 2 kept, 1 transformed
    net = flows.MLPConditioner(2, 8, 2, rngs=nnx.Rngs(2))
    layer = _perturbed(bij.AffineCoupling(bij.checkerboard_mask((), 3, 0),
                                          net, 3, "tanh"))
  elif name == "squeeze":
    layer = bij.Squeeze()
  elif name == "logit":
    layer = bij.Logit(0.05)
  elif name == "shift":
    layer = bij.Shift(-0.5)
  else:
    layer = _perturbed(bij.GaussianSplitPrior(_conv_net(1, 2), 2), 0.1)
  _check_bijector(layer, x)


def test_masks_leave_their_kept_part_unchanged():
  x = _images((2, 4, 4, 2))
  for mask in (bij.checkerboard_mask((4, 4), 2, 0), bij.channel_mask(2, 1)):
    layer = _perturbed(bij.AffineCoupling(
        mask, _conv_net(*bij.coupling_io(mask, 2)), 2))
    z, _ = layer.forward(x)
    kept = jnp.broadcast_to(mask, x.shape[1:])[None] > 0
    np.testing.assert_array_equal(jnp.where(kept, z, 0), jnp.where(kept, x, 0))
    assert float(jnp.max(jnp.abs(jnp.where(kept, 0, z - x)))) > 1e-3
  np.testing.assert_array_equal(bij.checkerboard_mask((2, 2), 1, 0)[..., 0],
                                [[1, 0], [0, 1]])


def test_squeeze_moves_each_2x2_patch_into_channels():
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  s = bij.squeeze(x)
  assert s.shape == (1, 2, 2, 4)
  np.testing.assert_array_equal(s[0, 0, 0], [0, 1, 4, 5])
  np.testing.assert_array_equal(bij.unsqueeze(s), x)


@pytest.mark.parametrize("arch", ["realnvp", "glow", "coupling_mlp"])
def test_whole_flow_inverts_and_its_logdet_is_the_jacobians(arch):
  if arch == "coupling_mlp":
    shape, cfg = (2,), dict(preprocess="none", coupling_scale="tanh")
  else:
    shape = (4, 4, 1)
    cfg = dict(preprocess="logit" if arch == "realnvp" else "center",
               coupling_scale="tanh" if arch == "realnvp" else "sigmoid")
  model = flows.build(flows.FlowConfig(
      arch=arch, data_shape=shape, num_levels=2, steps_per_level=1, hidden=4,
      logit_alpha=0.05, **cfg), nnx.Rngs(0))
  x = _images((3,) + shape, seed=1)
  model.forward(x, init=True)
  _check_bijector(_perturbed(model, 0.05), x)


def _realnvp_cfg(steps_per_level):
  return flows.FlowConfig(
      arch="realnvp", data_shape=(4, 4, 1), num_levels=2,
      steps_per_level=steps_per_level, hidden=4, preprocess="logit",
      logit_alpha=0.05, coupling_scale="tanh")


def test_realnvp_couplings_follow_steps_per_level_and_invert():
  """Level 1: k checkerboard couplings, squeeze, k channel couplings; level 2
  (the last): k + 1 checkerboard couplings; each after an actnorm."""
  def kind(layer):
    if isinstance(layer, bij.AffineCoupling):
      return "checkerboard" if layer.pixel_mask else "channel"
    return type(layer).__name__
  coupling = lambda mask: ["ActNorm", mask]
  for k, num_couplings in ((2, 7), (3, 10)):  # 2k + (k + 1); 3: the paper's
    model = nnx.eval_shape(lambda: flows.build(_realnvp_cfg(k), nnx.Rngs(0)))
    kinds = [[kind(layer) for layer in level.layers]
             for level in model.levels]
    assert kinds[0] == (coupling("checkerboard") * k + ["Squeeze"] +
                        coupling("channel") * k)
    assert kinds[1] == coupling("checkerboard") * (k + 1)
    assert sum(name in ("checkerboard", "channel")
               for level in kinds for name in level) == num_couplings
  model = flows.build(_realnvp_cfg(2), nnx.Rngs(0))
  x = _images((3, 4, 4, 1), seed=1)
  model.forward(x, init=True)
  _check_bijector(_perturbed(model, 0.05), x)


def test_actnorm_data_init_gives_zero_mean_unit_variance():
  x = 3.0 + 2.5 * jax.random.normal(jax.random.key(0), (64, 5, 5, 3))
  x = x * jnp.array([1.0, 0.1, 4.0]).reshape(1, 1, 1, 3)
  layer = bij.ActNorm(3)
  layer.data_init(x)
  z, _ = layer.forward(x)
  np.testing.assert_allclose(jnp.mean(z, axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.var(z, axis=(0, 1, 2)), 1.0, rtol=1e-4)


def test_flow_init_runs_actnorm_data_init_at_every_depth():
  model = flows.build(flows.FlowConfig(
      arch="glow", data_shape=(8, 8, 1), num_levels=2, steps_per_level=2,
      hidden=8, preprocess="center"), nnx.Rngs(0))
  x = _images((32, 8, 8, 1))
  model.forward(x, init=True)
  # Feed the batch through the first level by hand up to its second actnorm.
  level = model.levels[0]
  h, _ = model.preprocess.forward(x)
  for layer in list(level.layers)[:4]:  # squeeze, actnorm, 1x1, coupling
    h, _ = layer.forward(h)
  z, _ = level.layers[4].forward(h)  # the second actnorm
  np.testing.assert_allclose(jnp.mean(z, axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(jnp.std(z, axis=(0, 1, 2)), 1.0, rtol=1e-3)


def test_1x1_conv_logdet_is_slogdet_of_its_matrix():
  layer = _perturbed(bij.Invertible1x1Conv(4, rngs=nnx.Rngs(3)), 0.2)
  w = layer.weight()
  x = _images((2, 3, 5, 4))
  _, logdet = layer.forward(x)
  np.testing.assert_allclose(logdet, 15 * jnp.linalg.slogdet(w)[1],
                             rtol=1e-5)
  # The LU factors multiply back to the matrix the layer applies.
  np.testing.assert_allclose(layer.forward(x)[0][0, 0, 0], w @ x[0, 0, 0],
                             rtol=1e-5)


def _family(arch, shape, **model):
  c = config_lib.base_config()
  c.family = "flow"
  c.data.image_shape = shape
  c.model = config_lib.load_module("_flow").model_defaults()
  c.model.arch = arch
  c.model.hidden = 8
  c.model.steps_per_level = 2
  c.model.update(model)
  return families.build(c)


def _perturbed_state(family, state, scale):
  model = _perturbed(family.network(state.params, state.rest), scale)
  return state.replace(params=nnx.split(model, nnx.Param, ...)[1])


def test_bits_per_dim_match_an_independent_computation():
  """bits/dim from the family's eval = the dequantization bound computed from
  scratch: -(log N(f(v)) + log|det J_f(v)|) + D log 256, with J_f by jacfwd."""
  family = _family("realnvp", (4, 4, 1), num_levels=1, num_blocks=1,
                   coupling_scale="tanh", preprocess="logit",
                   logit_alpha=0.05)
  image = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1)),
                      jnp.uint8)
  batch = {"image": image, "mask": jnp.ones((3,))}
  state = _perturbed_state(
      family, _jit(family.init)(jax.random.key(0), batch), 0.05)
  key = jax.random.key(5)
  sums = _jit(family.eval_step)(state, batch, key)
  model = family.network(state.params, state.rest)
  v = (image.astype(jnp.float32) + jax.random.uniform(key, image.shape)) / 256
  expected = []
  for i in range(3):
    def f(flat):
      return model.forward(flat.reshape(1, 4, 4, 1))[0].reshape(-1)
    z = _jit(f)(v[i].reshape(-1))
    _, logdet = jnp.linalg.slogdet(_jit(jax.jacfwd(f))(v[i].reshape(-1)))
    log_p = -0.5 * jnp.sum(z**2) - 8 * math.log(2 * math.pi) + logdet
    expected.append((-log_p + 16 * math.log(256)) / (16 * math.log(2)))
  np.testing.assert_allclose(float(sums["bits_per_dim"]) / 3,
                             np.mean(expected), rtol=1e-5)
  np.testing.assert_allclose(float(sums["nll"]),
                             np.sum(expected) * 16 * math.log(2), rtol=1e-5)


def test_2d_flow_density_integrates_to_one():
  family = _family("coupling_mlp", (2,), coupling_scale="tanh",
                   preprocess="none", hidden=16, steps_per_level=4)
  points = jnp.asarray(mixtures.splits("moons")[1]["image"][:256])
  state = _perturbed_state(
      family, family.init(jax.random.key(0), {"image": points}), 0.1)
  axis = np.linspace(-12, 12, 1201)
  xx, yy = np.meshgrid(axis, axis)
  grid = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
  log_p = family.log_density(state, grid)
  total = float(jnp.sum(jnp.exp(log_p))) * (axis[1] - axis[0]) ** 2
  assert abs(total - 1.0) < 2e-3, total


def test_temperature_zero_maps_every_key_to_one_sample():
  family = _family("glow", (8, 8, 1), num_levels=2)
  state = family.init(jax.random.key(0), None)
  cold = family._sample_jit(state, jax.random.key(1), 2, 0.0)
  np.testing.assert_allclose(cold[0], cold[1], atol=1e-6)
  warm = family._sample_jit(state, jax.random.key(1), 2, 1.0)
  assert float(jnp.max(jnp.abs(warm[0] - warm[1]))) > 0.05
  assert warm.shape == (2, 8, 8, 1)


def test_toy_densities_geometry():
  board = mixtures.splits("checkerboard")[0]["image"] / 2  # unit squares
  cells = np.floor(board).astype(int)
  assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)  # dark squares only
  _, counts = np.unique(cells, axis=0, return_counts=True)
  assert len(counts) == 8 and np.all(np.abs(counts / len(board) - 1 / 8)
                                     < 0.01)
  gauss = mixtures.splits("8gaussians")[0]["image"]
  radius = np.linalg.norm(gauss, axis=1)
  assert abs(np.median(radius) - 4 / math.sqrt(2)) < 0.1
  moons = mixtures.splits("moons")[0]["image"]
  assert moons.shape == (mixtures.NUM_TRAIN, 2) and moons.dtype == np.float32


@pytest.mark.parametrize("name", list(mixtures.DENSITIES))
def test_toy_true_densities_integrate_to_one_and_fit_their_samples(name):
  step = 0.1  # the midpoint rule is near exact for these smooth blurs
  axis = -6 + (np.arange(120) + 0.5) * step
  xx, yy = np.meshgrid(axis, axis)
  grid = np.stack([xx.ravel(), yy.ravel()], 1)
  mass = np.exp(mixtures.true_log_prob(name, grid)).sum() * step**2
  assert abs(mass - 1.0) < 1e-3, mass
  # The data is drawn from it: a wrong density would score its own samples
  # worse than a shifted copy of itself does.
  points = mixtures.splits(name)[1]["image"][:1000]
  own = mixtures.true_log_prob(name, points).mean()
  assert np.isfinite(own)
  assert own > mixtures.true_log_prob(name, points + 0.3).mean()


def test_glow_cifar10_is_the_papers_architecture_by_parameter_count():
  """L = 3 levels of K = 32 steps at 16x16x12, 8x8x24, 4x4x48 with 512-wide
  coupling networks that read half the channels and emit scale and shift for
  the other half, and learned priors at the two factor-outs: counted by hand
  against the model built from experiments/glow_cifar10.py (shapes only)."""
  family = families.build(config_lib.get_config("glow_cifar10"))
  model = nnx.eval_shape(lambda: flows.build(family.flow_cfg, nnx.Rngs(0)))
  params = nnx.split(model, nnx.Param, ...)[1]
  got = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
  h = 512

  def net(c_in, c_out):  # 3x3 -> 1x1 -> 3x3, with biases
    return 9 * c_in * h + h + h * h + h + 9 * h * c_out + c_out

  def step(c):  # actnorm, 1x1 conv (LU: two c x c factors and log|s|), coupling
    return 2 * c + 2 * c * c + c + net(c // 2, c)

  expected = sum(32 * step(c) for c in (12, 24, 48))
  expected += net(6, 12) + net(12, 24)  # the priors: mean and log-std
  assert got == expected == 44_823_076


@pytest.mark.parametrize("key,value,message", [
    ("train.dtype", "bfloat16", "float32 only"),
    ("model.steps_per_level", 0, "must be >= 1"),
])
def test_unsupported_options_are_refused(key, value, message):
  c = config_lib.get_config("glow_mnist:smoke")
  with c.unlocked():
    section, leaf = key.split(".")
    c[section][leaf] = value
  with pytest.raises(UserError, match=message):
    families.build(c)


def test_2d_flow_scores_are_its_exact_negative_log_density():
  """--mode=score's value for points: -(log N(f(x)) + log|det J_f(x)|),
  J_f by jacfwd; larger where the density is lower."""
  family = _family("coupling_mlp", (2,), coupling_scale="tanh",
                   preprocess="none", hidden=16, steps_per_level=4)
  points = jnp.asarray(mixtures.splits("moons")[1]["image"][:64])
  state = _perturbed_state(
      family, family.init(jax.random.key(0), {"image": points}), 0.1)
  x = jnp.concatenate([points[:4], jnp.array([[9.0, -9.0]])])
  out = _jit(family.score)(state, {"image": x}, jax.random.key(1))
  model = family.network(state.params, state.rest)
  for i in range(5):
    f = lambda p: model.forward(p[None])[0][0]
    z = f(x[i])
    logdet = jnp.linalg.slogdet(jax.jacfwd(f)(x[i]))[1]
    log_p = -0.5 * jnp.sum(z**2) - math.log(2 * math.pi) + logdet
    np.testing.assert_allclose(out["nll"][i], -log_p, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(out["dims"], 2.0)
  assert float(out["nll"][4]) > float(jnp.max(out["nll"][:4]))
  assert "exact" in family.score_notes()["nll"]
