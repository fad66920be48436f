"""Samplers and the ODE likelihood against closed forms.

With Gaussian data N(mu, S) the denoiser is exact in closed form,
E[x_0 | x_t] = mu + a S C^-1 (x - a mu) with C = a^2 S + s^2 I, and the
probability-flow ODE is linear: it carries x_T to
mu + S^1/2 C_T^-1/2 (x_T - a_T mu) exactly. So every sampler's end point is
compared with the exact one, and its error must fall at the sampler's order
when the steps double; the likelihood must give log N(x; mu, S), and on a
2-D mixture of Gaussians the mixture's own log-density.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gen_jax.errors import UserError
from gen_jax.families import samplers
from gen_jax.families import schedules

MU = np.array([0.5, -1.0])
S = np.array([[1.0, 0.6], [0.6, 0.8]])

FM = samplers.Process(alpha=lambda t: 1.0 - t, sigma=lambda t: t, t_max=1.0,
                      t_min=0.0, prior_std=1.0)
EDM = samplers.Process(alpha=lambda t: jnp.ones_like(t), sigma=lambda t: t,
                       t_max=80.0, t_min=0.002,
                       prior_std=math.sqrt(80.0**2 + 0.25),
                       variance_exploding=True)
_ABAR = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
VP = samplers.Process(  # DDPM's discrete timesteps
    alpha=lambda t: jnp.sqrt(jnp.asarray(_ABAR, jnp.float32)[t]),
    sigma=lambda t: jnp.sqrt(1.0 - jnp.asarray(_ABAR, jnp.float32)[t]),
    t_max=999, t_min=0, prior_std=1.0)


def gaussian_denoiser(process, mu=MU, cov=S):
  mu, cov = jnp.asarray(mu, jnp.float32)[None], jnp.asarray(cov, jnp.float32)

  def denoise(x, t):
    a, s = process.alpha(t), process.sigma(t)
    c = a**2 * cov + s**2 * jnp.eye(mu.shape[1])
    r = jnp.linalg.solve(c, (x - a * mu).T).T
    return mu + a * r @ cov, s * r
  return denoise


def exact_end(process, x_T, t_end=None):
  """The ODE's exact map from t_max to t_end (default: to the data)."""
  def sqrtm(m):
    w, v = np.linalg.eigh(m)
    return v @ np.diag(np.sqrt(w)) @ v.T
  a_T = float(process.alpha(jnp.asarray(process.t_max)))
  s_T = float(process.sigma(jnp.asarray(process.t_max)))
  c_T = a_T**2 * S + s_T**2 * np.eye(2)
  a, c = 1.0, S
  if t_end is not None:
    a = float(process.alpha(t_end))
    c = a**2 * S + float(process.sigma(t_end))**2 * np.eye(2)
  return a * MU + (x_T - a_T * MU) @ np.linalg.inv(sqrtm(c_T)) @ sqrtm(c)


def fm_grid(n):
  return np.linspace(1.0, 0.0, n + 1, dtype=np.float32)


def karras_grid(n, sigma_min=0.002, sigma_max=80.0, rho=7.0):
  i = np.arange(n) / max(n - 1, 1)
  s = (sigma_max**(1 / rho) + i * (sigma_min**(1 / rho)
                                   - sigma_max**(1 / rho)))**rho
  return np.append(s, 0.0).astype(np.float32)


def sample(name, process, grid, x_T, options=samplers.Options(), key=0):
  sampler = samplers.SAMPLERS[name]
  chain = samplers.make_chain(sampler, process,
                              lambda: gaussian_denoiser(process), options)
  return np.asarray(samplers.run_chain(chain, sampler, (), jnp.asarray(x_T),
                                       grid, jax.random.key(key), 8))


def _x_T(process, n=512, seed=0):
  return (np.random.default_rng(seed).standard_normal((n, 2))
          * process.prior_std).astype(np.float32)


@pytest.mark.parametrize("name,order", [("euler", 1), ("heun", 2),
                                        ("dpm_solver++", 2)])
@pytest.mark.parametrize("process_name", ["fm", "edm"])
def test_fixed_step_samplers_converge_at_their_order(name, order,
                                                     process_name):
  process, grid = {"fm": (FM, fm_grid), "edm": (EDM, karras_grid)}[
      process_name]
  x_T = _x_T(process)
  exact = exact_end(process, x_T)
  errors = [np.abs(sample(name, process, grid(n), x_T) - exact).max()
            for n in (16, 32, 64)]
  assert errors[-1] < (0.2 if order == 1 else 0.015), errors
  assert errors[-2] / errors[-1] > 2**order * 0.7, errors


def test_dpm_solver_on_ddpm_timesteps():
  """DDPM's discrete process on its log-SNR-uniform timesteps: 2M from
  t = 999 to t = 0 matches the exact map to t = 0 (sigma = 0.01) and
  improves at second order."""
  x_T = _x_T(VP)
  exact = exact_end(VP, x_T, jnp.int32(0))
  errors = []
  for n in (20, 40, 80):
    grid = schedules.logsnr_timesteps(_ABAR, n)
    assert len(set(grid)) == n + 1 and grid[0] == 999 and grid[-1] == 0
    errors.append(np.abs(sample("dpm_solver++", VP, grid, x_T)
                         - exact).max())
  assert errors[-1] < 0.01 and errors[-2] / errors[-1] > 3, errors


def test_samples_have_the_data_mean_and_covariance():
  for process, grid, name in ((FM, fm_grid(32), "heun"),
                              (EDM, karras_grid(32), "dpm_solver++")):
    x = sample(name, process, grid, _x_T(process, 20000))
    np.testing.assert_allclose(x.mean(0), MU, atol=0.04)
    np.testing.assert_allclose(np.cov(x.T), S, atol=0.05)


def test_stochastic_sampler_keeps_the_marginals():
  """Churn adds noise and removes it again: with the exact denoiser the
  samples still have the data's moments, but differ from the ODE's."""
  x_T = _x_T(EDM, 20000)
  opts = samplers.Options(num_steps=160, churn=30.0, churn_tmin=0.01,
                          churn_tmax=50.0, s_noise=1.0)
  x = sample("stochastic", EDM, karras_grid(160), x_T, opts)
  np.testing.assert_allclose(x.mean(0), MU, atol=0.04)
  np.testing.assert_allclose(np.cov(x.T), S, atol=0.06)
  ode = sample("heun", EDM, karras_grid(160), x_T)
  assert np.abs(x - ode).mean() > 0.1
  same = sample("stochastic", EDM, karras_grid(160), x_T,
                samplers.Options(num_steps=160))  # no churn: Heun
  np.testing.assert_allclose(same, ode, atol=1e-5)


def test_adaptive_solver_and_its_evaluation_count():
  for process in (FM, EDM):
    calls = []
    base = gaussian_denoiser(process)

    def counted(x, t):
      jax.debug.callback(lambda: calls.append(1))
      return base(x, t)
    x_T = _x_T(process, 64)
    x, evals, steps = jax.jit(lambda x: samplers.solve_adaptive(
        process, counted, x, 1e-5, 1e-5))(jnp.asarray(x_T))
    np.testing.assert_allclose(x, exact_end(process, x_T), atol=2e-3)
    assert int(evals) == len(calls) and 5 < int(steps) < 200


def test_unusable_samplers_are_refused():
  with pytest.raises(UserError, match="alpha"):
    samplers.check("stochastic", "flow matching", FM,
                   ("euler", "stochastic"))
  with pytest.raises(UserError, match="not one of euler, heun"):
    samplers.check("rk4", "flow matching", FM, ("euler", "heun"))
  assert samplers.chunk_length(35, 25) == 7
  assert samplers.chunk_length(18, 25) == 18
  assert samplers.chunk_length(1000, 25) == 25


@pytest.mark.parametrize("process", [FM, EDM], ids=["fm", "edm"])
def test_ode_likelihood_of_a_gaussian_is_exact(process):
  # EDM's prior N(0, sigma_max^2 + 0.25) ignores the data's mean, an error
  # of O(|mu| / sigma_max) nats: its data are centred here.
  mu = MU if process is FM else np.zeros(2)
  x = np.array([[0.3, -0.7], [2.0, 0.1], [-1.0, -2.5]], np.float32)
  logp, _, _ = jax.jit(lambda x: samplers.log_likelihood(
      process, gaussian_denoiser(process, mu), x, jax.random.key(0),
      exact_trace=True))(jnp.asarray(x))
  want = scipy.stats.multivariate_normal(mu, S).logpdf(x)
  np.testing.assert_allclose(logp, want, atol=2e-3)


def test_hutchinson_trace_is_exact_for_a_diagonal_jacobian():
  """Rademacher probes: v^T A v = tr A when A is diagonal, so one probe
  gives the exact likelihood of a diagonal Gaussian; Gaussian probes or a
  wrong scale would not."""
  mu, var = np.array([0.2, -0.4, 1.0]), np.array([0.5, 2.0, 1.3])
  x = np.array([[0.0, 1.0, -1.0], [1.5, -0.2, 0.3]], np.float32)
  logp, _, _ = samplers.log_likelihood(
      FM, gaussian_denoiser(FM, mu, np.diag(var)), jnp.asarray(x),
      jax.random.key(3), exact_trace=False, num_probes=1)
  want = scipy.stats.multivariate_normal(mu, np.diag(var)).logpdf(x)
  np.testing.assert_allclose(logp, want, atol=2e-3)


def test_ode_likelihood_of_a_2d_mixture():
  """Mixture data: the exact denoiser weighs each component's Gaussian
  denoiser by its posterior; the ODE must return the mixture's log-density."""
  means = np.array([[-1.5, 0.0], [1.5, 0.5]], np.float32)
  var = 0.3
  weights = np.array([0.3, 0.7], np.float32)

  def denoise(x, t):
    a, s = FM.alpha(t), FM.sigma(t)
    c = a**2 * var + s**2
    d2 = jnp.sum((x[:, None] - a * means[None]) ** 2, -1)  # [B, K]
    post = jax.nn.softmax(jnp.log(weights)[None] - 0.5 * d2 / c, axis=1)
    r = (x[:, None] - a * means[None]) / c  # [B, K, 2]
    x0 = jnp.einsum("bk,bkd->bd", post, means[None] + a * var * r)
    eps = jnp.einsum("bk,bkd->bd", post, s * r)
    return x0, eps
  x = np.array([[-1.4, 0.2], [0.0, 0.3], [2.0, 1.0]], np.float32)
  logp, _, _ = samplers.log_likelihood(FM, denoise, jnp.asarray(x),
                                       jax.random.key(0), exact_trace=True)
  dens = sum(w * scipy.stats.multivariate_normal(m, var * np.eye(2)).pdf(x)
             for w, m in zip(weights, means))
  np.testing.assert_allclose(logp, np.log(dens), atol=5e-3)
