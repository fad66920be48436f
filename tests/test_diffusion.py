"""Diffusion: the forward process, posterior, schedules, bound, samplers, U-Net."""

import math

import chex
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE

from gen_jax import config as config_lib
from gen_jax import families
from gen_jax.errors import UserError
from gen_jax.families import base
from gen_jax.families import likelihoods
from gen_jax.families import schedules
from gen_jax.models import unet


def _family(overrides=(), exp="ddpm_mnist:smoke"):
  """The experiment's family; the smoke U-Net with one level (half the
  compilation; nothing here depends on the network's depth)."""
  one_level = ["model.channel_mults=(1,)"] if exp == "ddpm_mnist:smoke" else []
  return families.build(config_lib.get_config(exp, one_level + list(overrides)))


def _predict(family, params, rest, x, t, y=None, guidance_scale=1.0):
  """family.predict, compiled (eager U-Net calls are slow)."""
  fn = jax.jit(lambda p, r, x, t, y: family.predict(
      family.network(p, r), x, t, y, guidance_scale),
               compiler_options=FAST_COMPILE)
  return fn(params, rest, x, t, y)


def _state(family, batch_size=4):
  batch = {"image": jnp.zeros((batch_size, 28, 28, 1), jnp.uint8),
           "label": jnp.zeros((batch_size,), jnp.int32)}
  return jax.jit(family.init, compiler_options=FAST_COMPILE)(
      jax.random.key(0), batch)


def test_linear_schedule_alpha_bar_at_T():
  sched = schedules.make_schedule(schedules.make_betas("linear", 1000))
  # DDPM's linear schedule ends at abar_T = 4.04e-5 (sqrt: 6.35e-3).
  assert sched.alphas_cumprod[-1] == pytest.approx(4.0358e-5, rel=1e-3)
  assert sched.betas[0] == 1e-4 and sched.betas[-1] == pytest.approx(0.02)


def test_cosine_schedule():
  betas = schedules.make_betas("cosine", 1000)
  sched = schedules.make_schedule(betas)
  assert np.all(np.diff(sched.alphas_cumprod) < 0)
  assert betas.max() <= 0.999 and betas.min() > 0
  # abar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), at t = T/2.
  f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
  assert sched.alphas_cumprod[499] == pytest.approx(f(0.5) / f(0.0), rel=1e-6)


def test_forward_process_closed_form_matches_iterated_steps():
  sched = schedules.make_schedule(schedules.make_betas("linear", 1000))
  rng = np.random.default_rng(0)
  x0 = np.array([0.9, -0.4, 0.0])
  n, t = 200_000, 300
  x = np.broadcast_to(x0, (n, 3)).copy()
  for beta in sched.betas[:t]:  # q(x_t | x_{t-1}) = N(sqrt(1-b) x, b)
    x = math.sqrt(1 - beta) * x + math.sqrt(beta) * rng.standard_normal(x.shape)
  abar = sched.alphas_cumprod[t - 1]
  np.testing.assert_allclose(x.mean(0), math.sqrt(abar) * x0, atol=0.01)
  np.testing.assert_allclose(x.var(0), 1 - abar, rtol=0.01)
  # ... and q_sample draws from the same closed form.
  eps = jnp.asarray(rng.standard_normal((n, 1, 1, 3)), jnp.float32)
  xt = schedules.q_sample(sched, jnp.asarray(x0, jnp.float32)[None, None, None],
                          jnp.full((n,), t - 1), eps)
  np.testing.assert_allclose(np.asarray(xt).mean(0).ravel(),
                             math.sqrt(abar) * x0, atol=0.01)


def test_posterior_matches_bayes_rule():
  sched = schedules.make_schedule(schedules.make_betas("linear", 1000))
  x0, xt = 0.7, -0.2
  for t in (1, 10, 500, 999):
    beta, abar_prev = sched.betas[t], sched.alphas_cumprod_prev[t]
    # prior x_{t-1} | x_0 and likelihood x_t | x_{t-1}, both Gaussian.
    precision = 1 / (1 - abar_prev) + (1 - beta) / beta
    var = 1 / precision
    mean = var * (math.sqrt(abar_prev) * x0 / (1 - abar_prev)
                  + math.sqrt(1 - beta) * xt / beta)
    got_mean, got_logvar = schedules.q_posterior(
        sched, jnp.full((1, 1, 1, 1), x0), jnp.full((1, 1, 1, 1), xt),
        jnp.array([t]))
    assert float(got_mean[0, 0, 0, 0]) == pytest.approx(mean, rel=1e-5)
    assert math.exp(float(got_logvar[0, 0, 0, 0])) == pytest.approx(
        var, rel=1e-5)
    assert sched.posterior_variance[t] == pytest.approx(var, rel=1e-9)


def test_discretized_gaussian_is_a_distribution_over_256_values():
  values = jnp.linspace(-1.0, 1.0, 256)[:, None, None, None]
  for mean, log_scale in ((0.1, math.log(0.01)), (-0.95, math.log(0.3)),
                          (0.999, math.log(1e-3)), (0.2, 1.0)):
    logp = likelihoods.discretized_gaussian_log_likelihood(
        values, jnp.full_like(values, mean), jnp.full_like(values, log_scale))
    assert float(jnp.sum(jnp.exp(logp))) == pytest.approx(1.0, abs=1e-5)


def test_normal_kl_closed_form():
  kl = likelihoods.normal_kl(jnp.array(1.0), jnp.log(jnp.array(4.0)),
                           jnp.array(0.0), jnp.array(0.0))
  # KL(N(1, 4) || N(0, 1)) = 0.5 (4 + 1 - 1 - log 4)
  assert float(kl) == pytest.approx(0.5 * (4.0 - math.log(4.0)), rel=1e-6)


def test_stratified_bound_is_exact_at_full_strata_and_unbiased():
  fam = _family(["model.num_timesteps=12"])
  # A cheap closed-form "network", so many draws of the estimator are affordable.
  net = lambda x, t, y=None: 0.3 * x + 0.01 * t[:, None, None, None]
  # Small images: the estimator's arithmetic is per pixel, its draws many.
  x0 = jnp.linspace(-1, 1, 2 * 14 * 14).reshape(2, 14, 14, 1)

  def exact(k):  # every term of the sum
    keys = jax.random.split(k, 12)
    terms = [fam.vlb_term(net, x0, jnp.full((2,), t), keys[t])
             for t in range(12)]
    return sum(terms) + fam.prior_kl(x0)

  keys = jax.random.split(jax.random.key(3), 2000)
  draws = lambda f: jax.jit(jax.vmap(f), compiler_options=FAST_COMPILE)(keys)
  exact_draws = draws(exact)
  full_draws = draws(lambda k: fam.vlb(net, x0, k, 11))
  strat_draws = draws(lambda k: fam.vlb(net, x0, k, 3))
  exact_mean = jnp.mean(exact_draws, 0)
  np.testing.assert_allclose(jnp.mean(full_draws, 0), exact_mean, rtol=1e-3)
  # Unbiased: the stratified mean is within 4 standard errors of the exact one.
  stderr = jnp.sqrt(jnp.var(strat_draws, 0) / len(keys) +
                    jnp.var(exact_draws, 0) / len(keys))
  assert bool(jnp.all(jnp.abs(jnp.mean(strat_draws, 0) - exact_mean)
                      < 4 * stderr))
  assert float(jnp.min(jnp.var(strat_draws, 0))) > 0  # it does sample


def _abar(num_timesteps=100, beta_start=1e-4, beta_end=0.02):
  """abar_t of a linear schedule (default: ddpm_mnist:smoke's), float64,
  written out (t = 0..T-1)."""
  return np.cumprod(1 - np.linspace(beta_start, beta_end, num_timesteps))


def _uses_network(fam, module):
  """Makes `fam` run `module` in place of its U-Net (the family merges its
  `graphdef` with a state's parameters into the network it calls); returns
  a train state holding the module's parameters."""
  fam.graphdef, _, _ = nnx.split(module, nnx.Param, ...)
  return base.new_train_state(module, fam.optimizer,
                              fam.config.train.ema_decay)


class _Oracle(nnx.Module):
  """Outputs the training target of x_t for a known x_0, plus `error`.

  eps is recovered from x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps; the target
  is eps ('eps') or v = sqrt(abar) eps - sqrt(1 - abar) x_0 ('v').
  """

  def __init__(self, x0_BHWC, prediction, error=0.0):
    self.x0 = nnx.Variable(jnp.asarray(x0_BHWC, jnp.float32))
    self.abar = nnx.Variable(jnp.asarray(_abar(), jnp.float32))
    self.error = nnx.Param(jnp.asarray(error, jnp.float32))
    self.prediction = prediction

  def __call__(self, x_BHWC, t_B, y_B=None, dropout_key=None):
    del y_B, dropout_key
    abar = self.abar[...][t_B][:, None, None, None]
    x0 = self.x0[...]
    eps = (x_BHWC - jnp.sqrt(abar) * x0) / jnp.sqrt(1 - abar)
    if self.prediction == "eps":
      target = eps
    else:
      target = jnp.sqrt(abar) * eps - jnp.sqrt(1 - abar) * x0
    return target + self.error[...]


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_predict_inverts_the_training_target(prediction):
  """A network that outputs the true target (eps, or v = sqrt(abar) eps -
  sqrt(1 - abar) x_0) at x_t = q_sample(x_0, t, eps) makes `predict` return
  exactly that eps and x_0."""
  fam = _family([f"model.prediction={prediction}"])
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1, 1, (3, 4, 4, 2)).astype(np.float32)
  eps = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
  t = np.array([0, 40, 99])
  abar = _abar()[t][:, None, None, None]
  xt = schedules.q_sample(fam.sched, x0, jnp.asarray(t), eps)
  # (float32's 1 - abar at t = 0, 1e-4, is good to a few 1e-4 relative.)
  np.testing.assert_allclose(xt, np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps,
                             atol=1e-5)
  target = eps if prediction == "eps" else (np.sqrt(abar) * eps
                                            - np.sqrt(1 - abar) * x0)

  def net(x, t_B, y=None):
    assert y is None
    np.testing.assert_array_equal(x, xt)
    np.testing.assert_array_equal(t_B, t)
    return jnp.asarray(target, jnp.float32)
  eps_pred, x0_pred = fam.predict(net, xt, jnp.asarray(t))
  np.testing.assert_allclose(eps_pred, eps, atol=1e-5)
  np.testing.assert_allclose(x0_pred, x0, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_loss_is_zero_at_the_true_target_only(prediction):
  """loss_terms' per-example squared error: ~0 for a network that outputs the
  true target of the x_t it is given, `error`^2 for one that is off by
  `error`, and > 0 for the other parameterization's target."""
  fam = _family([f"model.prediction={prediction}"])
  images = jax.random.randint(jax.random.key(0), (6, 28, 28, 1), 0, 256
                              ).astype(jnp.uint8)
  batch = {"image": images, "label": jnp.zeros((6,), jnp.int32)}
  x0 = np.asarray(images, np.float32) / 127.5 - 1

  def loss(oracle, training=True):
    return np.asarray(fam.loss_terms(oracle, batch, jax.random.key(1),
                                     training))
  assert loss(_Oracle(x0, prediction)).max() < 1e-8
  assert loss(_Oracle(x0, prediction), training=False).max() < 1e-8
  np.testing.assert_allclose(loss(_Oracle(x0, prediction, error=0.1)), 0.01,
                             rtol=1e-3)
  other = {"eps": "v", "v": "eps"}[prediction]
  assert loss(_Oracle(x0, other)).min() > 1e-4


def test_random_flip_mirrors_some_training_images_only():
  """With data.random_flip, training draws a horizontal mirror per image: the
  network sees x_t of the mirrored x_0 for some rows and of x_0 for the
  others; eval (training=False) never flips."""
  fam = _family(["data.random_flip=True"])
  b = 16
  images = jax.random.randint(jax.random.key(0), (b, 28, 28, 1), 0, 256
                              ).astype(jnp.uint8)
  batch = {"image": images, "label": jnp.zeros((b,), jnp.int32)}
  x0 = np.asarray(images, np.float32) / 127.5 - 1

  def loss(x0_seen, training):
    return np.asarray(fam.loss_terms(_Oracle(x0_seen, "eps"), batch,
                                     jax.random.key(2), training))
  as_is, mirrored = loss(x0, True) < 1e-8, loss(x0[:, :, ::-1], True) < 1e-8
  np.testing.assert_array_equal(as_is, ~mirrored)  # each row one or the other
  assert 0 < mirrored.sum() < b
  assert np.all(loss(x0, False) < 1e-8)
  fam = _family()  # data.random_flip=False: training does not flip either
  assert np.all(loss(x0, True) < 1e-8)


def test_guidance_scale_zero_is_the_unconditional_model():
  fam = _family(["model.num_classes=10"])
  state = _state(fam)
  # Non-trivial class embedding and output layer, so the test can fail.
  rng = np.random.default_rng(2)
  params = jax.tree.map(
      lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(p.dtype),
      state.params)
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  t, y = jnp.array([3, 30, 60, 90]), jnp.array([1, 2, 3, 4])
  predict = lambda y, s=1.0: _predict(fam, params, state.rest, x, t, y, s)[0]
  eps_guided = predict(y, 0.0)
  eps_uncond = predict(jnp.full((4,), 10))
  eps_cond = predict(y)
  np.testing.assert_allclose(eps_guided, eps_uncond, atol=1e-5)
  assert float(jnp.max(jnp.abs(eps_cond - eps_uncond))) > 1e-3
  eps_3 = predict(y, 3.0)
  np.testing.assert_allclose(eps_3, eps_uncond + 3 * (eps_cond - eps_uncond),
                             atol=1e-4)


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
  for eta, same in ((0.0, True), (1.0, False)):
    fam = _family([f"sample.eta={eta}", "sample.sampler=ddim",
                   "sample.num_steps=4"])
    state = _state(fam)
    _, ts, t_prevs = fam._plan()
    run = fam._chunk_fn("ddim")
    x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    outs = [run(state.params, state.rest, jnp.array(x), None, ts, t_prevs,
                jax.random.key(k)) for k in (1, 2)]
    assert bool(jnp.all(outs[0] == outs[1])) == same
  a = fam.sample(state, jax.random.key(5), 2)
  b = fam.sample(state, jax.random.key(5), 2)
  np.testing.assert_array_equal(a, b)  # a fixed key fixes the samples


class _KnownNet(nnx.Module):
  """A stand-in eps-network with a closed form: w x + c cos(t / 3)."""

  W, C = 0.6, 0.4

  def __init__(self):
    self.w = nnx.Param(jnp.asarray(self.W, jnp.float32))
    self.c = nnx.Param(jnp.asarray(self.C, jnp.float32))

  def __call__(self, x_BHWC, t_B, y_B=None, dropout_key=None):
    del y_B, dropout_key
    return (self.w[...] * x_BHWC
            + self.c[...] * jnp.cos(t_B / 3.0)[:, None, None, None])


# A short chain (T = 10, abar_T = 0.34) whose x_0 predictions often leave
# [-1, 1]; _reference_chain writes out the same schedule.
SHORT_CHAIN = ("model.num_timesteps=10", "model.beta_start=1e-3",
               "model.beta_end=0.2", "sample.steps_per_call=5")


def _reference_chain(x, ts, t_prevs, noise, sampler, variance, eta, clip):
  """The reverse steps ts -> t_prevs of _KnownNet's sampler, float64 numpy,
  from the papers' equations; `noise(t)` is the z of the step from t."""
  betas = np.linspace(1e-3, 0.2, 10)  # SHORT_CHAIN's schedule
  alphas = 1 - betas
  abar = np.cumprod(alphas)
  for t, t_prev in zip(ts, t_prevs):
    eps = _KnownNet.W * x + _KnownNet.C * math.cos(t / 3)
    x0 = (x - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
    if clip:  # eps is re-derived from the clipped x_0
      x0 = np.clip(x0, -1, 1)
      eps = (x - math.sqrt(abar[t]) * x0) / math.sqrt(1 - abar[t])
    abar_prev = abar[t_prev] if t_prev >= 0 else 1.0
    if sampler == "ddpm":  # Ho et al. (2020), eqs. 6-7
      assert t_prev == t - 1
      mean = (math.sqrt(abar_prev) * betas[t] / (1 - abar[t]) * x0
              + math.sqrt(alphas[t]) * (1 - abar_prev) / (1 - abar[t]) * x)
      var = (betas[t] if variance == "fixed_large"
             else (1 - abar_prev) / (1 - abar[t]) * betas[t])
      x = (mean + math.sqrt(var) * noise(t)) if t > 0 else mean
    else:  # Song et al. (2021), eqs. 12 and 16
      sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar[t])
                              * (1 - abar[t] / abar_prev))
      x = (math.sqrt(abar_prev) * x0
           + math.sqrt(1 - abar_prev - sigma**2) * eps + sigma * noise(t))
  return x


@pytest.mark.parametrize("sampler,variance,eta,clip", [
    ("ddpm", "fixed_large", 0.0, True), ("ddpm", "fixed_small", 0.0, True),
    ("ddpm", "fixed_large", 0.0, False), ("ddim", "fixed_large", 0.0, True),
    ("ddim", "fixed_large", 1.0, True), ("ddim", "fixed_large", 1.0, False)])
def test_reverse_steps_match_the_papers_equations(sampler, variance, eta,
                                                  clip):
  """One reverse step from the middle of the chain, the last step, and
  `sample`'s whole chain (its noise: x_T from the first half of the key, the
  z of the step from t from fold_in(second half, t); chunks of 5 steps)
  against _reference_chain."""
  steps = 0 if sampler == "ddpm" else 4
  fam = _family([*SHORT_CHAIN, f"model.variance={variance}",
                 f"sample.sampler={sampler}", f"sample.num_steps={steps}",
                 f"sample.eta={eta}", f"sample.clip_denoised={clip}"])
  state = _uses_network(fam, _KnownNet())
  ts = (list(range(9, -1, -1)) if sampler == "ddpm"
        else [int(t) for t in schedules.ddim_timesteps(10, steps)])
  t_prevs = ts[1:] + [-1]
  shape = (3, 28, 28, 1)

  def reference(x, key, ts, t_prevs, clip=clip):
    noise = lambda t: np.asarray(
        jax.random.normal(jax.random.fold_in(key, t), shape), np.float64)
    return _reference_chain(np.asarray(x, np.float64), ts, t_prevs, noise,
                            sampler, variance, eta, clip)

  run = fam._chunk_fn(sampler)
  x = jax.random.normal(jax.random.key(4), shape)
  key = jax.random.key(3)
  for i in (1, len(ts) - 1):
    got = run(state.params, state.rest, jnp.array(x), None,
              jnp.asarray(ts[i:i + 1]), jnp.asarray(t_prevs[i:i + 1]), key)
    want = reference(x, key, ts[i:i + 1], t_prevs[i:i + 1])
    np.testing.assert_allclose(got, want, atol=1e-5)
  # The x_0 predictions do leave [-1, 1], so clipping matters here.
  assert np.abs(reference(x, key, ts[1:2], t_prevs[1:2], clip=True)
                - reference(x, key, ts[1:2], t_prevs[1:2], clip=False)
                ).max() > 0.05

  images = fam.sample(state, jax.random.key(5), shape[0])
  noise_key, chain_key = jax.random.split(jax.random.key(5))
  x_T = jax.random.normal(noise_key, shape)
  want = np.clip((reference(x_T, chain_key, ts, t_prevs) + 1) / 2, 0, 1)
  np.testing.assert_allclose(images, want, atol=1e-5)


@pytest.mark.parametrize("clip", [True, False])
def test_dpm_solver_pp_matches_the_papers_update(clip):
  """`sample` with 'dpm_solver++' against DPM-Solver++(2M) written out from
  Lu et al. (2022, Algorithm 2) in float64 on _KnownNet's predictions."""
  fam = _family([*SHORT_CHAIN, "sample.sampler=dpm_solver++",
                 "sample.num_steps=4", f"sample.clip_denoised={clip}"])
  state = _uses_network(fam, _KnownNet())
  abar = np.cumprod(1 - np.linspace(1e-3, 0.2, 10))
  grid = schedules.logsnr_timesteps(abar, 4)
  shape = (3, 28, 28, 1)
  images = fam.sample(state, jax.random.key(5), shape[0])
  noise_key, _ = jax.random.split(jax.random.key(5))
  x = np.asarray(jax.random.normal(noise_key, shape), np.float64)
  lam = lambda t: 0.5 * math.log(abar[t] / (1 - abar[t]))
  x0_prev = h_prev = None
  for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
    eps = _KnownNet.W * x + _KnownNet.C * math.cos(t / 3)
    x0 = (x - math.sqrt(1 - abar[t]) * eps) / math.sqrt(abar[t])
    if clip:
      x0 = np.clip(x0, -1, 1)
    h = lam(t_next) - lam(t)
    d = x0
    if i:
      r = h_prev / h
      d = (1 + 1 / (2 * r)) * x0 - x0_prev / (2 * r)
    x = (math.sqrt((1 - abar[t_next]) / (1 - abar[t])) * x
         - math.sqrt(abar[t_next]) * math.expm1(-h) * d)
    x0_prev, h_prev = x0, h
  np.testing.assert_allclose(images, np.clip((x + 1) / 2, 0, 1), atol=1e-5)


def test_ddim_timesteps():
  np.testing.assert_array_equal(schedules.ddim_timesteps(1000, 4),
                                [999, 749, 499, 249])
  np.testing.assert_array_equal(schedules.ddim_timesteps(10, 10),
                                np.arange(9, -1, -1))


def test_ema_decay_warms_up_and_touches_only_params():
  fam = _family(["train.ema_decay=0.99"])
  state = _state(fam, 8)
  batch = {"image": jax.random.randint(jax.random.key(0), (8, 28, 28, 1), 0,
                                       256).astype(jnp.uint8),
           "label": jnp.zeros((8,), jnp.int32)}
  new, _ = jax.jit(fam.train_step, compiler_options=FAST_COMPILE)(
      state, batch, jax.random.key(1))
  decay = min(0.99, 1 / 10)  # (1 + n) / (10 + n) at n = 0
  expected = base.ema_update(state.ema_params, new.params, decay)
  chex.assert_trees_all_close(new.ema_params, expected, atol=1e-7)
  assert (jax.tree.structure(new.ema_params) ==
          jax.tree.structure(new.params))
  np.testing.assert_allclose(
      base.ema_update(jnp.array(1.0), jnp.array(3.0), 0.9), 1.2, rtol=1e-6)


def test_unet_shapes():
  cfg = unet.UNetConfig(image_shape=(28, 28, 1), channels=8,
                        channel_mults=(1, 2, 2), num_res_blocks=1,
                        attention_resolutions=(7,), num_groups=4,
                        num_classes=10)
  net = nnx.eval_shape(lambda: unet.UNet(cfg, rngs=nnx.Rngs(0)))
  out = nnx.eval_shape(lambda m: m(
      jnp.zeros((2, 28, 28, 1)), jnp.array([0, 999]), jnp.array([3, 10]),
      dropout_key=jax.random.key(0)), net)
  assert out.shape == (2, 28, 28, 1) and out.dtype == jnp.float32
  emb = unet.timestep_embedding(jnp.array([0.0, 5.0]), 16)
  assert emb.shape == (2, 16)
  np.testing.assert_allclose(emb[0], [0.0] * 8 + [1.0] * 8, atol=1e-7)


def test_ddpm_cifar10_network_has_the_papers_parameter_count():
  cfg = unet.UNetConfig.ddpm_cifar10()
  abstract = nnx.eval_shape(lambda: unet.UNet(cfg, rngs=nnx.Rngs(0)))
  params = nnx.state(abstract, nnx.Param)
  count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  assert count == 35_746_307  # "35.7M" in Ho et al. (2020), Appendix B
  out = jax.eval_shape(lambda m: m(jnp.zeros((2, 32, 32, 3)), jnp.zeros(2)),
                       abstract)
  assert out.shape == (2, 32, 32, 3)


def test_ancestral_sampling_runs_the_full_chain_with_progress():
  fam = _family(["sample.sampler=ddpm", "sample.num_steps=0",
                 "model.num_timesteps=30", "sample.steps_per_call=8"])
  state = _state(fam)
  calls = []
  images = fam.sample(state, jax.random.key(0), 3, progress=lambda d, t:
                      calls.append((d, t)))
  assert calls == [(8, 30), (16, 30), (24, 30), (30, 30)]
  assert images.shape == (3, 28, 28, 1)
  assert float(images.min()) >= 0 and float(images.max()) <= 1
  assert float(jnp.std(images)) > 0


def test_ancestral_needs_the_full_chain():
  with pytest.raises(UserError, match="full chain"):
    _family(["sample.sampler=ddpm", "sample.num_steps=10"])
  with pytest.raises(UserError, match="ddpm, ddim"):
    _family(["sample.sampler=euler"])
