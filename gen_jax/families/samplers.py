"""Samplers of diffusion-type models as swappable parts, and the ODE solves.

Every model here noises data as x_t = alpha(t) x_0 + sigma(t) eps, with t
running from `t_max` (noise) to `t_min` (data) in the model's own time:
flow matching's t in [0, 1] (alpha = 1 - t, sigma = t), EDM's sigma in
[sigma_min, sigma_max] (alpha = 1), DDPM's integer timesteps (alpha =
sqrt(abar_t)). A model enters the samplers as a `Process` and a *denoiser*,
(x, t) -> (x_0 prediction, eps prediction), so the same sampler serves every
objective and network.

The probability-flow ODE is dx/dt = alpha'(t) x_0(x, t) + sigma'(t) eps(x, t)
(it moves x_t along its own conditional path with both predictions frozen,
so an Euler step is exactly a DDIM step). Fixed-step samplers (registry
`SAMPLERS`): 'euler', 'heun' (EDM's Algorithm 1: Heun with the correction
skipped on a step that ends at sigma = 0), 'stochastic' (EDM's Algorithm 2:
Heun after "churn" noise, on processes with alpha = 1), and 'dpm_solver++'
(DPM-Solver++(2M), Lu et al. 2022: multistep, second order in
lambda = log(alpha / sigma), on the x_0 prediction; needs only alpha and
sigma at the grid, so DDPM's discrete models use it too). They run as one
compiled `lax.scan` per chunk of steps, chunks of equal length (one compile),
with progress between chunks. 'adaptive' integrates the ODE with diffrax's
Tsit5 and a PID step-size controller; `log_likelihood` integrates it forward
with the instantaneous change of variables (Chen et al. 2018; Song et al.
2021) for exact likelihoods.
"""

import dataclasses
import math
from typing import Any, Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError

# (x [B, ...], t []) -> (x_0 prediction, eps prediction), both like x.
Denoiser = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


@dataclasses.dataclass(frozen=True)
class Process:
  """x_t = alpha(t) x_0 + sigma(t) eps between t_max (noise) and t_min."""
  alpha: Callable[[jax.Array], jax.Array]  # scalar t -> scalar
  sigma: Callable[[jax.Array], jax.Array]
  t_max: float
  t_min: float
  prior_std: float  # std of x at t_max: the chains' start, the ODE's prior
  variance_exploding: bool = False  # alpha == 1 (EDM)

  def drift(self, x0, eps, t):
    """The probability-flow ODE's dx/dt from the two predictions."""
    t = jnp.asarray(t, jnp.float32)
    return jax.grad(self.alpha)(t) * x0 + jax.grad(self.sigma)(t) * eps

  def velocity(self, denoise: Denoiser, x, t):
    return self.drift(*denoise(x, t), t)

  def prior_log_prob(self, x_B___: jax.Array) -> jax.Array:
    """log N(x; 0, prior_std^2 I) per example."""
    x = x_B___.reshape(x_B___.shape[0], -1)
    d = x.shape[1]
    return (-0.5 * jnp.sum(x**2, axis=1) / self.prior_std**2
            - 0.5 * d * math.log(2 * math.pi * self.prior_std**2))


@dataclasses.dataclass(frozen=True)
class Options:
  """Settings of the stochastic sampler (EDM's S_churn, S_tmin, S_tmax,
  S_noise) and the number of steps of the chain."""
  num_steps: int = 1
  churn: float = 0.0
  churn_tmin: float = 0.0
  churn_tmax: float = float("inf")
  s_noise: float = 1.0


# --- fixed-step samplers: carry = (x, extra); step(...) -> carry -------------


def _heun_from(process, denoise, x, t, t_next):
  """One Heun step; Euler when the step ends at sigma = 0."""
  d = process.velocity(denoise, x, t)
  x_euler = x + (t_next - t) * d

  def correct():
    d_next = process.velocity(denoise, x_euler, t_next)
    return x + (t_next - t) * 0.5 * (d + d_next)
  return jax.lax.cond(process.sigma(t_next) > 0, correct, lambda: x_euler)


def _euler(process, denoise, carry, t, t_next, i, key, options):
  del i, key, options
  x, extra = carry
  return x + (t_next - t) * process.velocity(denoise, x, t), extra


def _heun(process, denoise, carry, t, t_next, i, key, options):
  del i, key, options
  x, extra = carry
  return _heun_from(process, denoise, x, t, t_next), extra


def _stochastic(process, denoise, carry, t, t_next, i, key, options):
  """EDM's Algorithm 2: raise the noise level to t_hat = t (1 + gamma) by
  adding fresh noise, then a Heun step from t_hat."""
  del i
  x, extra = carry
  o = options
  gamma = jnp.where((t >= o.churn_tmin) & (t <= o.churn_tmax),
                    min(o.churn / o.num_steps, math.sqrt(2.0) - 1.0), 0.0)
  t_hat = t * (1.0 + gamma)
  noise = jax.random.normal(key, x.shape) * o.s_noise
  x_hat = x + jnp.sqrt(jnp.maximum(t_hat**2 - t**2, 0.0)) * noise
  return _heun_from(process, denoise, x_hat, t_hat, t_next), extra


def _dpm_solver_pp(process, denoise, carry, t, t_next, i, key, options):
  """DPM-Solver++(2M): x' = (sigma'/sigma) x - alpha' expm1(-h) D, with D
  the x_0 prediction extrapolated from the previous step's (first order on
  the first step and on a final step to sigma = 0, where h is infinite)."""
  del key, options
  x, (x0_prev, h_prev) = carry
  x0, _ = denoise(x, t)
  lam = lambda s: jnp.log(process.alpha(s)) - jnp.log(process.sigma(s))
  sigma, sigma_next = process.sigma(t), process.sigma(t_next)
  h = lam(t_next) - lam(t)
  second = (i > 0) & (sigma_next > 0)
  r = h_prev / jnp.where(second, h, 1.0)
  d = jnp.where(second, x0 + (x0 - x0_prev) / (2.0 * jnp.where(second, r, 1.0)),
                x0)
  x_next = (sigma_next / sigma) * x - process.alpha(t_next) * jnp.expm1(-h) * d
  return x_next, (x0, h)


@dataclasses.dataclass(frozen=True)
class Sampler:
  name: str
  step: Callable[..., Any]
  # Network evaluations of a chain of n steps that ends at sigma = 0.
  evaluations: Callable[[int], int]
  needs_variance_exploding: bool = False
  init_extra: Callable[[jax.Array], Any] = lambda x: ()


SAMPLERS = {
    "euler": Sampler("euler", _euler, lambda n: n),
    "heun": Sampler("heun", _heun, lambda n: 2 * n - 1),
    "stochastic": Sampler("stochastic", _stochastic, lambda n: 2 * n - 1,
                          needs_variance_exploding=True),
    "dpm_solver++": Sampler(
        "dpm_solver++", _dpm_solver_pp, lambda n: n,
        init_extra=lambda x: (jnp.zeros_like(x), jnp.ones((), jnp.float32))),
}
ADAPTIVE = "adaptive"


def check(name: str, process_name: str, process: Process | None,
          allowed: tuple[str, ...]) -> None:
  """Refuses in one line a sampler the model cannot use."""
  if name not in allowed:
    raise UserError(f"--sampler={name}: not one of {', '.join(allowed)} "
                    f"(for {process_name}).")
  sampler = SAMPLERS.get(name)
  if sampler and sampler.needs_variance_exploding and not (
      process and process.variance_exploding):
    raise UserError(f"--sampler={name}: EDM's churn needs alpha(t) = 1; "
                    f"{process_name} is not such a process.")


def chunk_length(num_steps: int, steps_per_call: int) -> int:
  """The longest run of steps <= steps_per_call that divides the chain, so
  every compiled call has the same length (one compile per sampler)."""
  top = max(1, min(steps_per_call, num_steps))
  return max(d for d in range(1, top + 1) if num_steps % d == 0)


def make_chain(sampler: Sampler, process: Process,
               make_denoiser: Callable[..., Denoiser], options: Options):
  """Jitted (args, carry, ts, t_nexts, indices, key) -> carry: one run of
  steps; `make_denoiser(*args)` builds the denoiser from arrays (the
  network's parameters, the labels)."""
  def run(args, carry, ts, t_nexts, indices, key):
    return _steps(sampler, process, make_denoiser(*args), carry, ts, t_nexts,
                  indices, key, options)
  return jax.jit(run, donate_argnums=1)


def _steps(sampler, process, denoise, carry, ts, t_nexts, indices, key,
           options):
  """The sampler's steps ts[i] -> t_nexts[i] as one scan -> carry."""
  def body(carry, inputs):
    t, t_next, i = inputs
    return sampler.step(process, denoise, carry, t, t_next, i,
                        jax.random.fold_in(key, i), options), None
  return jax.lax.scan(body, carry, (ts, t_nexts, indices))[0]


def run_chain(chain, sampler: Sampler, args, x, grid: np.ndarray,
              key: jax.Array, steps_per_call: int,
              progress: Callable[[int, int], None] | None = None):
  """Runs `chain` (from make_chain) over the time grid [n + 1] -> x."""
  n = len(grid) - 1
  chunk = chunk_length(n, steps_per_call)
  carry = (x, sampler.init_extra(x))
  grid = jnp.asarray(grid)
  for start in range(0, n, chunk):
    stop = start + chunk
    carry = chain(args, carry, grid[start:stop], grid[start + 1:stop + 1],
                  jnp.arange(start, stop), key)
    if progress is not None:
      jax.block_until_ready(carry)  # report work done, not dispatched
      progress(stop, n)
  return carry[0]


def integrate(name: str, process: Process, denoise: Denoiser, x: jax.Array,
              grid: np.ndarray, key: jax.Array, options: Options,
              tolerance: float = 1e-5, max_steps: int = 2048) -> jax.Array:
  """x at t_max -> the sample, in one traced computation (for use inside a
  loss or any jitted function): a fixed-step sampler over `grid`, or the
  adaptive solver at `tolerance`."""
  if name == ADAPTIVE:
    return solve_adaptive(process, denoise, x, tolerance, tolerance,
                          max_steps)[0]
  sampler = SAMPLERS[name]
  grid = jnp.asarray(grid)
  return _steps(sampler, process, denoise, (x, sampler.init_extra(x)),
                grid[:-1], grid[1:], jnp.arange(len(grid) - 1), key,
                options)[0]


# --- the ODE solved by diffrax -------------------------------------------------


def _solve(vector_field, y0, t0, t1, rtol, atol, max_steps):
  sol = diffrax.diffeqsolve(
      diffrax.ODETerm(vector_field), diffrax.Tsit5(), t0=t0, t1=t1,
      dt0=None, y0=y0,
      stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
      max_steps=max_steps, throw=False)
  y1 = jax.tree.map(lambda a: a[-1], sol.ys)
  # Tsit5 is FSAL: 6 new evaluations per attempted step, plus the first.
  return y1, sol.stats["num_steps"] * 6 + 1, sol.stats["num_steps"]


def solve_adaptive(process: Process, denoise: Denoiser, x: jax.Array,
                   rtol: float, atol: float, max_steps: int = 2048):
  """x at t_max -> (x at t_min, network evaluations, steps taken)."""
  return _solve(lambda t, y, args: process.velocity(denoise, y, t), x,
                process.t_max, process.t_min, rtol, atol, max_steps)


def divergence_exact(f: Callable[[jax.Array], jax.Array], x_BD: jax.Array):
  """(f(x), the trace of df/dx per example) by one JVP per dimension, for a
  per-example f on flat [B, D] inputs."""
  d = x_BD.shape[1]
  eye = jnp.eye(d, dtype=x_BD.dtype)
  fx, cols = jax.vmap(lambda e: jax.jvp(f, (x_BD,), (
      jnp.broadcast_to(e, x_BD.shape),)), out_axes=(None, 0))(eye)
  return fx, jnp.einsum("ibi->b", cols)  # cols[i, b, :] = J_b e_i


def divergence_hutchinson(f, x_BD: jax.Array, probes_PBD: jax.Array):
  """(f(x), E_v[v^T (df/dx) v] over the given probes) per example."""
  fx, jv = jax.vmap(lambda v: jax.jvp(f, (x_BD,), (v,)),
                    out_axes=(None, 0))(probes_PBD)
  return fx, jnp.mean(jnp.sum(probes_PBD * jv, axis=2), axis=0)


def log_likelihood(process: Process, denoise: Denoiser, x0: jax.Array,
                   key: jax.Array, *, exact_trace: bool, num_probes: int = 1,
                   rtol: float = 1e-5, atol: float = 1e-5,
                   max_steps: int = 2048):
  """log p(x0) per example (nats) under the probability-flow ODE:
  log p_tmax(x_tmax) + integral over [t_min, t_max] of div f(x_t, t) dt.

  The trace is exact (one JVP per dimension; for small D) or Hutchinson's
  estimate with `num_probes` Rademacher probes held fixed along the path.
  Returns (log p, network evaluations, steps taken).
  """
  shape = x0.shape
  flat = x0.reshape(shape[0], -1)
  probes = (None if exact_trace else jax.random.rademacher(
      key, (num_probes, *flat.shape), jnp.float32))

  def vector_field(t, state, args):
    x, _ = state
    f = lambda z: process.velocity(denoise, z.reshape(shape), t).reshape(
        z.shape)
    if exact_trace:
      dx, div = divergence_exact(f, x)
    else:
      dx, div = divergence_hutchinson(f, x, probes)
    return dx, div

  (x_end, delta), evals, steps = _solve(
      vector_field, (flat, jnp.zeros(shape[0], jnp.float32)), process.t_min,
      process.t_max, rtol, atol, max_steps)
  return process.prior_log_prob(x_end) + delta, evals, steps
