"""Flow matching, EDM and the DiT: the losses against hand computations, EDM's
preconditioning, the exact likelihood of a network that outputs zero, and
the DiT's adaLN-Zero identity and padding."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import FAST_COMPILE
from gen_jax import checkpointing
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import train
from gen_jax.errors import UserError
from gen_jax.families import edm
from gen_jax.models import dit as dit_lib

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
LABELS = np.array([1, 4, 9], np.int32)


# A one-level U-Net, where the network's size does not matter: half the
# compilation.
_ONE_LEVEL = {e: ("model.channel_mults=(1,)",) for e in (
    "fm_mnist:smoke", "edm_mnist:smoke")}


def _family(exp, *overrides):
  return families.build(config_lib.get_config(exp, list(overrides)))


class FakeNet:
  """A network with a known output: 0.3 x + t / 1000 + y (or 10 for the
  null class), recording the times it was called with."""

  def __init__(self):
    self.times = []

  def __call__(self, x, t, y=None, dropout_key=None):
    self.times.append(t)
    y_term = 0.0 if y is None else y.astype(jnp.float32)
    return 0.3 * x + (t / 1000.0 + y_term)[:, None, None, None]


def _draws(family, key, b):
  """The training draws loss_terms makes from `key`, in its order."""
  obj_key, label_key, _, _ = jax.random.split(key, 4)
  return obj_key, label_key


@pytest.mark.parametrize("time_sampling", ["uniform", "logit_normal"])
def test_flow_matching_loss_by_hand(time_sampling):
  family = _family("fm_mnist:smoke", f"model.time_sampling={time_sampling}",
                   "model.logit_mean=0.5", "model.logit_std=0.8")
  key = jax.random.key(7)
  got = family.loss_terms(FakeNet(), {"image": IMAGES}, key, training=True)
  obj_key, _ = _draws(family, key, 3)
  t_key, eps_key, _ = jax.random.split(obj_key, 3)
  if time_sampling == "uniform":
    t = np.asarray(jax.random.uniform(t_key, (3,)))
  else:
    t = 1 / (1 + np.exp(-(0.5 + 0.8 * np.asarray(
        jax.random.normal(t_key, (3,))))))
  eps = np.asarray(jax.random.normal(eps_key, IMAGES.shape))
  x0 = IMAGES / 127.5 - 1.0
  tb = t[:, None, None, None]
  xt = (1 - tb) * x0 + tb * eps
  v = 0.3 * xt + tb  # the fake net sees 1000 t
  want = ((v - (eps - x0)) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_edm_loss_and_preconditioning_by_hand():
  family = _family("edm_mnist:smoke", "model.num_classes=10",
                   "model.label_dropout=0.0")
  key = jax.random.key(3)
  batch = {"image": IMAGES, "label": LABELS}
  got = family.loss_terms(FakeNet(), batch, key, training=True)
  obj_key, _ = _draws(family, key, 3)
  s_key, n_key = jax.random.split(obj_key)
  sigma = np.exp(-1.2 + 1.2 * np.asarray(jax.random.normal(s_key, (3,))))
  n = np.asarray(jax.random.normal(n_key, IMAGES.shape))
  x0 = IMAGES / 127.5 - 1.0
  sd = 0.5
  s = sigma[:, None, None, None]
  x = x0 + s * n
  c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / np.sqrt(s**2 + sd**2)
  c_in = 1 / np.sqrt(s**2 + sd**2)
  f = 0.3 * c_in * x + (np.log(s) / 4) / 1000 + LABELS[:, None, None, None]
  d = c_skip * x + c_out * f
  weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
  want = weight * ((d - x0) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=1e-4)


def test_edm_preconditioning_identities():
  """c_skip -> 1 and c_out -> 0 as sigma -> 0 (D is the identity on clean
  data); lambda(sigma) c_out^2 = 1 (the loss weighs F's error by one at
  every sigma); c_in makes a N(0, s_d^2) sample plus noise unit-variance."""
  sd = 0.5
  sigma = jnp.array([1e-6, 0.002, 0.5, 1.0, 80.0])
  c_skip, c_out, c_in, c_noise = edm.preconditioning(sigma, sd)
  np.testing.assert_allclose(c_skip[0], 1.0, atol=1e-10)
  np.testing.assert_allclose(c_out[0], 0.0, atol=1e-5)
  weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
  np.testing.assert_allclose(weight * c_out**2, 1.0, rtol=1e-5)
  np.testing.assert_allclose(c_in**2 * (sd**2 + sigma**2), 1.0, rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)
  family = _family("edm_mnist:smoke")
  x = jnp.asarray(RNG.standard_normal((2, 28, 28, 1)), jnp.float32)
  state = _init(family)
  d = jax.jit(lambda s, x: family.denoise(
      family.network(s.params, s.rest), x, jnp.full((2,), 1e-7)),
              compiler_options=FAST_COMPILE)(state, x)
  np.testing.assert_allclose(d, x, atol=1e-5)


def test_karras_sigmas():
  s = edm.karras_sigmas(18, 0.002, 80.0, 7.0)
  assert len(s) == 19 and s[-1] == 0
  np.testing.assert_allclose([s[0], s[17]], [80.0, 0.002], rtol=1e-5)
  # rho = 1: evenly spaced.
  np.testing.assert_allclose(np.diff(edm.karras_sigmas(
      5, 1.0, 5.0, 1.0))[:-1], -1.0, rtol=1e-6)


@pytest.mark.parametrize("exp", ["fm_mnist:smoke", "edm_mnist:smoke",
                                 "fm_dit_mnist:smoke"])
def test_ode_bits_per_dim_of_a_network_that_outputs_zero(exp):
  """Both networks start with a zero output. Flow matching's velocity is
  then 0 and its model N(0, I); EDM's denoiser is c_skip x, the exact one for
  N(0, s_d^2) data. Either way the ODE must give that Gaussian's density of
  the dequantized digits, converted to bits with the 2/256 Jacobian."""
  family = _family(exp, "eval.ode_rows=2", "eval.ode_tolerance=1e-5",
                   "eval.ode_trace=hutchinson", *_ONE_LEVEL.get(exp, ()))
  state = _init(family)
  key = jax.random.key(5)
  batch = {"image": IMAGES[:2], "label": LABELS[:2],
           "mask": np.ones(2, np.float32)}
  out = _final_eval(family)(state, batch, key)
  result = family.summarize_eval(jax.device_get(out))
  _, ode_key = jax.random.split(key)
  u_key, _ = jax.random.split(ode_key)
  x = 2 * (IMAGES[:2] + np.asarray(jax.random.uniform(
      u_key, IMAGES[:2].shape))) / 256 - 1
  std = 1.0 if family.config.family == "flow_matching" else 0.5
  logp = scipy.stats.norm(0, std).logpdf(x).reshape(2, -1).sum(1)
  d = 784
  bits = -(logp + d * math.log(2 / 256)) / (d * math.log(2))
  np.testing.assert_allclose(result["ode_bits_per_dim"], bits.mean(),
                             rtol=2e-4)
  assert result["ode_evaluations"] > 1


def test_bad_settings_are_refused():
  with pytest.raises(UserError, match="alpha"):
    _family("fm_mnist:smoke", "sample.sampler=stochastic")
  with pytest.raises(UserError, match="not one of euler, heun"):
    _family("edm_mnist:smoke", "sample.sampler=ddim")
  with pytest.raises(UserError, match="time_sampling"):
    _family("fm_mnist:smoke", "model.time_sampling=beta")
  with pytest.raises(UserError, match="sigma_min"):
    _family("edm_mnist:smoke", "model.sigma_min=100.0")
  with pytest.raises(UserError, match="model.width=30"):
    _family("fm_dit_mnist:smoke", "model.width=30")
  with pytest.raises(UserError, match="network"):
    _family("fm_mnist:smoke", "model.network=mlp")


def _dit(shape=(28, 28, 1), p=4, classes=10, dtype="float32"):
  cfg = dit_lib.DiTConfig(image_shape=shape, patch_size=p, width=32, depth=2,
                          num_heads=4, num_classes=classes, dtype=dtype)
  return dit_lib.DiT(cfg, rngs=nnx.Rngs(0))


def _perturb(module, scale=0.05):
  """Gives every parameter random values (the zero-initialized included)."""
  graph, params, rest = nnx.split(module, nnx.Param, ...)
  rng = np.random.default_rng(1)
  params = jax.tree.map(
      lambda p: p + scale * rng.standard_normal(p.shape).astype(p.dtype),
      params)
  return nnx.merge(graph, params, rest)


def _final_eval(family):
  return jax.jit(lambda s, b, k: family.eval_step(s, b, k, final=True),
                 compiler_options=FAST_COMPILE)


def _init(family, seed=0):
  return jax.jit(family.init, static_argnums=1,
                 compiler_options=FAST_COMPILE)(jax.random.key(seed), None)


def test_dit_adaln_zero_starts_as_the_identity():
  net = _dit()
  x = jnp.asarray(RNG.standard_normal((2, 49, 32)), jnp.float32)
  c = jnp.asarray(RNG.standard_normal((2, 32)), jnp.float32)
  for block in net.blocks:
    np.testing.assert_array_equal(block(x, c), x)
  images = jnp.asarray(RNG.standard_normal((2, 28, 28, 1)), jnp.float32)
  t, y = jnp.array([10.0, 500.0]), jnp.array([3, 10])
  np.testing.assert_array_equal(net(images, t, y), 0.0)
  moved = _perturb(net)
  assert np.abs(moved.blocks[0](x, c) - x).max() > 1e-3
  assert np.abs(moved(images, t, y)).max() > 1e-3


def test_dit_padding_never_reaches_the_image():
  """27x27 on 4x4 patches: padded to 28x28; the output keeps the input's
  shape and its pixels do not depend on what the padding holds."""
  net = _perturb(_dit(shape=(27, 27, 1)))
  x = jnp.asarray(RNG.standard_normal((2, 27, 27, 1)), jnp.float32)
  t, y = jnp.array([10.0, 500.0]), jnp.array([3, 1])
  out = net(x, t, y)
  assert out.shape == x.shape
  garbage = jnp.asarray(RNG.standard_normal((2, 28, 28, 1)) * 50, jnp.float32)
  padded = garbage.at[:, :27, :27].set(x)
  np.testing.assert_allclose(net.padded(padded, t, y)[:, :27, :27], out,
                             atol=1e-5)
  # ... while every real pixel matters, the last row included.
  changed = net(x.at[:, 26, 26].add(1.0), t, y)
  assert np.abs(changed - out).max() > 1e-4
  # Class and time reach the output.
  assert np.abs(net(x, t, jnp.array([4, 1])) - out)[0].max() > 1e-4
  assert np.abs(net(x, t + 100.0, y) - out).max() > 1e-4


def test_dit_bfloat16_compute():
  x = jnp.asarray(RNG.standard_normal((2, 28, 28, 1)), jnp.float32)
  t, y = jnp.array([10.0, 500.0]), jnp.array([3, 1])
  f32 = _perturb(_dit())(x, t, y)
  bf16 = _perturb(_dit(dtype="bfloat16"))(x, t, y)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.05 * float(jnp.abs(f32).max()))


def test_dit_sizes_follow_the_paper():
  cfg = dit_lib.DiTConfig.named("S", image_shape=(32, 32, 3), patch_size=2)
  net = nnx.eval_shape(lambda: dit_lib.DiT(cfg, rngs=nnx.Rngs(0)))
  count = sum(p.size for p in jax.tree.leaves(nnx.state(net, nnx.Param)))
  # DiT-S/2: 33M parameters at 256 tokens (the paper's, less its learned
  # sigma and its 1000-class table: within 2%).
  assert 31e6 < count < 34e6, count


@pytest.mark.parametrize("sampler,steps", [
    ("heun", 60), ("euler", 200), ("dpm_solver++", 60), ("adaptive", 0),
    ("stochastic", 60)])
def test_every_sampler_draws_the_model_of_a_zero_network(sampler, steps):
  """EDM's network at initialization outputs zero, so its denoiser is
  c_skip x: exactly the model of N(0, 0.5^2) data. Every sampler must draw
  pixels with that distribution: (x + 1) / 2 clipped to [0, 1]. (Enough
  steps that the discretization error stays below 1%: Heun's 18 give a
  standard deviation of 0.528, not 0.5, on this Gaussian.)"""
  family = _family("edm_mnist:smoke", f"sample.sampler={sampler}",
                   f"sample.num_steps={steps}", "sample.tolerance=1e-4",
                   "sample.churn=20", "sample.churn_tmin=0.0",
                   "model.channel_mults=(1,)")
  state = _init(family)
  images = np.asarray(family.sample(state, jax.random.key(1), 16))
  x = np.clip((np.random.default_rng(0).normal(0, 0.5, 10**6) + 1) / 2, 0, 1)
  assert images.shape == (16, 28, 28, 1)
  assert abs(images.mean() - x.mean()) < 0.01, images.mean()
  assert abs(images.std() - x.std()) < 0.01, images.std()
  info = family.last_sampling
  want = {"heun": 119, "euler": 200, "dpm_solver++": 60, "stochastic": 119}
  assert info["evaluations"] == want.get(sampler, info["evaluations"]) > 6


def test_reflow_learns_straight_paths_to_the_teachers_samples(tmp_path):
  """A reflow run starts student and teacher from the teacher run's EMA
  weights; its loss is the flow-matching loss between noise z and the
  teacher's Euler sample from z (written out here), not the data; a train
  step moves the student and leaves the teacher."""
  teacher_dir = tmp_path / "teacher"  # a "trained" run: random weights
  teacher_config = config_lib.get_config("fm_mnist:smoke",
                                         ["model.channel_mults=(1,)"])
  teacher_family = families.build(teacher_config)
  fresh = _init(teacher_family, 1)
  moved = nnx.state(_perturb(teacher_family.network(fresh.params, fresh.rest),
                             0.02), nnx.Param)
  train.prepare_workdir(str(teacher_dir), teacher_config)
  ckpt = checkpointing.Checkpointer(teacher_dir)
  ckpt.save(1, fresh.replace(ema_params=moved))
  ckpt.close()
  family = _family("fm_mnist:smoke", f"model.reflow_from={teacher_dir}",
                   "model.reflow_sampler=euler", "model.reflow_steps=3",
                   "train.lr_schedule=constant", "train.warmup_steps=0",
                   "model.channel_mults=(1,)")
  state = family.warm_start(_init(family, 9), None)
  saved = checkpointing.load_state(teacher_dir)
  net = family.network(state.params, state.rest)
  teacher_w = nnx.state(net.teacher, nnx.Param)
  for a, b in zip(jax.tree.leaves(teacher_w), jax.tree.leaves(
      saved["ema_params"])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(teacher_w)):
    np.testing.assert_array_equal(a, b)

  student = _perturb(net.student, 0.01)  # tell the two apart
  nnx.update(net.student, nnx.state(student, nnx.Param))
  key = jax.random.key(4)
  got = nnx.jit(lambda net: family.loss_terms(net, {"image": IMAGES}, key,
                                              training=False))(net)
  obj_key, _ = _draws(family, key, 3)
  t_key, eps_key, _ = jax.random.split(obj_key, 3)
  t = np.asarray(jax.random.uniform(t_key, (3,)))[:, None, None, None]
  z = np.asarray(jax.random.normal(eps_key, IMAGES.shape))
  apply = nnx.jit(lambda m, x, t: m(x, t))
  x1 = z
  for a, b in ((1.0, 2 / 3), (2 / 3, 1 / 3), (1 / 3, 0.0)):
    x1 = x1 + (b - a) * np.asarray(apply(
        net.teacher, jnp.asarray(x1, jnp.float32), jnp.full((3,), 1000.0 * a)))
  xt = (1 - t) * x1 + t * z
  v = np.asarray(apply(net.student, jnp.asarray(xt, jnp.float32),
                       jnp.asarray(1000.0 * t[:, 0, 0, 0])))
  want = ((v - (z - x1)) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=2e-4)

  after, _ = jax.jit(family.train_step, compiler_options=FAST_COMPILE)(
      state, {"image": IMAGES}, jax.random.key(0))
  for a, b in zip(jax.tree.leaves(after.rest), jax.tree.leaves(state.rest)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(after.params), jax.tree.leaves(state.params)))
  with pytest.raises(UserError, match="same network"):
    _family("fm_mnist:smoke", f"model.reflow_from={teacher_dir}",
            "model.channel_mults=(1,)", "model.channels=16")


def test_an_ode_solve_out_of_steps_reports_nan(monkeypatch):
  """Bits/dim from a solve that ran out of steps would be a wrong number:
  the eval reports NaN instead."""
  from gen_jax.families import continuous  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(continuous, "_ODE_MAX_STEPS", 2)
  family = _family("edm_mnist:smoke", "eval.ode_rows=2",
                   "eval.ode_tolerance=1e-6", "model.channel_mults=(1,)")
  batch = {"image": IMAGES[:2], "mask": np.ones(2, np.float32)}
  out = _final_eval(family)(_init(family), batch, jax.random.key(0))
  result = family.summarize_eval(jax.device_get(out))
  assert np.isnan(result["ode_bits_per_dim"]) and np.isfinite(result["loss"])
