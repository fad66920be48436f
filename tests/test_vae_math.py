"""VAE objective: closed forms vs Monte Carlo, and the IWAE bound's properties."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from conftest import FAST_COMPILE
from gen_jax import config as config_lib
from gen_jax.families import likelihoods
from gen_jax.families import vae as vae_lib


class KLTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_closed_form_matches_monte_carlo(self):
    key = jax.random.key(0)
    mean = jnp.array([[0.5, -1.0, 2.0]])
    logvar = jnp.array([[0.3, -0.7, 0.1]])
    kl = self.variant(likelihoods.gaussian_kl)(mean, logvar)
    # MC estimate of E_q[log q(z) - log p(z)] with 400k samples.
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, (400_000, 3))
    log_q = likelihoods.gaussian_log_prob(z, mean, logvar)
    log_p = likelihoods.gaussian_log_prob(z, jnp.zeros((1, 3)), jnp.zeros((1, 3)))
    mc = jnp.mean(log_q - log_p)
    se = jnp.std(log_q - log_p) / math.sqrt(400_000)
    self.assertLess(abs(float(kl[0]) - float(mc)), 4 * float(se))
    # And against the scalar formula per dimension, written out.
    manual = sum(0.5 * (math.exp(lv) + m**2 - 1 - lv)
                 for m, lv in zip([0.5, -1.0, 2.0], [0.3, -0.7, 0.1]))
    np.testing.assert_allclose(float(kl[0]), manual, rtol=1e-6)

  def test_kl_is_zero_at_the_prior(self):
    np.testing.assert_allclose(
        likelihoods.gaussian_kl(jnp.zeros((2, 5)), jnp.zeros((2, 5))), 0.0)

  def test_log_probs_match_scipy(self):
    x = np.array([[0.1, -0.4, 1.3]], np.float32)
    mean = np.array([[0.0, 0.2, 1.0]], np.float32)
    logvar = np.array([[0.5, -0.3, 0.0]], np.float32)
    expected = stats.norm(mean, np.exp(0.5 * logvar)).logpdf(x).sum()
    np.testing.assert_allclose(likelihoods.gaussian_log_prob(x, mean, logvar)[0],
                               expected, rtol=1e-5)
    xb = np.array([[[[1.0], [0.0]]]], np.float32)  # [1, 1, 2, 1]
    logits = np.array([[[[0.3], [-1.2]]]], np.float32)
    p = 1 / (1 + np.exp(-logits))
    expected = stats.bernoulli(p).logpmf(xb).sum()
    np.testing.assert_allclose(likelihoods.bernoulli_log_prob(xb, logits)[0],
                               expected, rtol=1e-5)


def _tiny_vae(**model):
  c = config_lib.get_config("vae_mnist:smoke")
  c.model.channels = (4, 8)
  c.model.hidden_dim = 32
  c.model.latent_dim = 4
  c.model.update(model)
  return vae_lib.VAE(c)


class IWAETest(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.family = family = _tiny_vae()
    self.state = state = family.init(jax.random.key(1), None)
    self.model = family.network(state.params, state.rest)
    images = jax.random.randint(jax.random.key(2), (6, 28, 28, 1), 0, 256)
    self.x = family.preprocess(images.astype(jnp.uint8), jax.random.key(3))

  def iwae(self, k, chunk, keys):
    """IWAE log-likelihood [len(keys), B], one estimate per key."""
    family, state = self.family, self.state

    def one(x, key):
      model = family.network(state.params, state.rest)
      return family.iwae_log_likelihood(model, x, None, key, k, chunk)
    return jax.jit(jax.vmap(one, in_axes=(None, 0)))(self.x, keys)

  def test_k1_equals_single_sample_elbo(self):
    # With k = 1 the bound is log p(x, z) - log q(z | x) at one sample: the
    # ELBO's Monte-Carlo estimate with the same sample.
    key = jax.random.key(4)
    iwae = self.iwae(1, 1, key[None])[0]
    chunk_key = jax.random.split(key, 1)[0]
    mean, logvar = self.model.encoder(self.x)
    eps = jax.random.normal(chunk_key, (1,) + mean.shape)[0]
    z = mean + jnp.exp(0.5 * logvar) * eps
    log_px = likelihoods.bernoulli_log_prob(self.x, self.model.decoder(z))
    elbo_mc = (log_px + likelihoods.gaussian_log_prob(z, 0.0 * z, 0.0 * z)
               - likelihoods.gaussian_log_prob(z, mean, logvar))
    np.testing.assert_allclose(iwae, elbo_mc, rtol=1e-5)

  def test_k1_expectation_equals_analytic_elbo(self):
    n = 2000
    iwae_k1 = self.iwae(1, 1, jax.random.split(jax.random.key(7), n))
    family, state = self.family, self.state

    def elbo(key):  # analytic KL, one-sample reconstruction
      rec, kl = family.elbo_terms(family.network(state.params, state.rest),
                                  self.x, None, key)
      return -(rec + kl)
    elbos = jax.jit(jax.vmap(elbo))(jax.random.split(jax.random.key(8), n))
    # Both estimate the same ELBO; compare their means within 4 standard errors.
    diff = jnp.mean(iwae_k1, 0) - jnp.mean(elbos, 0)
    se = jnp.sqrt(jnp.var(iwae_k1, 0) / n + jnp.var(elbos, 0) / n)
    np.testing.assert_array_less(jnp.abs(diff), 4 * se + 1e-3)

  def test_bound_rises_with_k(self):
    keys = jax.random.split(jax.random.key(5), 20)
    values = {k: float(jnp.mean(self.iwae(k, min(k, 10), keys)))
              for k in (1, 10, 100)}
    self.assertLessEqual(values[1], values[10] + 0.05)
    self.assertLessEqual(values[10], values[100] + 0.05)
    self.assertLess(values[1], values[100])  # strictly, for an imperfect q

  def test_chunk_size_does_not_change_the_estimate(self):
    a = self.iwae(20, 4, jax.random.split(jax.random.key(6), 200))
    b = self.iwae(20, 20, jax.random.split(jax.random.key(9), 200))
    se = jnp.sqrt(jnp.var(a) / a.size + jnp.var(b) / b.size)
    self.assertLess(float(jnp.abs(jnp.mean(a) - jnp.mean(b))), 4 * float(se))


class GaussianLikelihoodTest(chex.TestCase):

  def test_bits_per_dim_conversion(self):
    family = _tiny_vae(likelihood="gaussian")
    nll = 500.0
    out = family.summarize_eval({"iwae_nll_k10": nll * 3, "count": 3.0})
    expected = (nll / 784 + math.log(256)) / math.log(2)
    np.testing.assert_allclose(out["bits_per_dim_k10"], expected, rtol=1e-9)

  def test_dequantized_data_in_unit_interval(self):
    family = _tiny_vae(likelihood="gaussian")
    images = jnp.array([0, 255], jnp.uint8).reshape(2, 1, 1, 1)
    x = family.preprocess(jnp.tile(images, (1, 28, 28, 1)), jax.random.key(0))
    self.assertGreaterEqual(float(x.min()), 0.0)
    self.assertLess(float(x.max()), 1.0)
    self.assertLess(float(x[0].max()), 1 / 256)


class TrainStepTest(chex.TestCase):

  def test_conditional_and_beta_steps_lower_the_loss(self):
    for model in ({"num_classes": 10}, {"beta": 4.0}):
      family = _tiny_vae(**model)
      state = family.init(jax.random.key(0), None)
      images = jax.random.randint(jax.random.key(1), (16, 28, 28, 1), 0, 256)
      batch = {"image": images.astype(jnp.uint8),
               "label": jnp.arange(16, dtype=jnp.int32) % 10}
      step = jax.jit(family.train_step)
      _, first = step(state, batch, jax.random.key(2))
      for i in range(30):
        state, metrics = step(state, batch, jax.random.key(2))
      self.assertLess(float(metrics["loss"]), float(first["loss"]))
      np.testing.assert_allclose(
          float(metrics["loss"]),
          float(metrics["rec"] + model.get("beta", 1.0) * metrics["kl"]),
          rtol=1e-5)
      self.assertEqual(int(state.step), 30)
      del i

  def test_bfloat16_computes_in_bfloat16_and_keeps_float32_params(self):
    """train.dtype=bfloat16: the same float32 parameters, every convolution
    and matrix product of the train step in bfloat16 (none in float32), and a
    loss that differs from float32's by a rounding-sized amount."""
    images = jax.random.randint(jax.random.key(3), (4, 28, 28, 1), 0, 256)
    batch = {"image": images.astype(jnp.uint8),
             "label": jnp.zeros(4, jnp.int32)}
    losses, states = {}, {}
    for dtype in ("float32", "bfloat16"):
      c = _tiny_vae().config
      c.unlock()
      c.train.dtype = dtype
      family = vae_lib.VAE(c)
      states[dtype] = state = family.init(jax.random.key(0), None)
      self.assertTrue(all(x.dtype == jnp.float32
                          for x in jax.tree.leaves(state.params)))
      step = jax.jit(family.train_step, compiler_options=FAST_COMPILE)
      lowered = step.lower(state, batch, jax.random.key(1))
      ops = [line for line in lowered.as_text().splitlines()
             if "stablehlo.convolution" in line
             or "stablehlo.dot_general" in line]
      self.assertGreaterEqual(len(ops), 10)  # forward and backward
      in_bf16 = ["bf16" in line for line in ops]
      if dtype == "bfloat16":
        self.assertTrue(all(in_bf16))
      else:
        self.assertFalse(any(in_bf16))
      _, metrics = step(state, batch, jax.random.key(1))
      losses[dtype] = float(metrics["loss"])
    chex.assert_trees_all_equal(states["float32"].params,
                                states["bfloat16"].params)
    gap = abs(losses["bfloat16"] - losses["float32"]) / losses["float32"]
    self.assertGreater(gap, 0.0)
    self.assertLess(gap, 1e-2)
