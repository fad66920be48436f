"""VQ-VAE: straight-through gradients, the codebook and commitment losses,
the EMA codebook update and dead-code restarts against hand computations,
and the family's step keeping what the quantizer updates."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax.errors import UserError
from gen_jax.families import vqvae as vqvae_family
from gen_jax.models import vqvae

RNG = np.random.default_rng(0)


def _quantizer(ema: bool, k=5, d=3, threshold=0.0, decay=0.9):
  cfg = vqvae.VQVAEConfig(codebook_size=k, code_dim=d, ema=ema,
                          ema_decay=decay, restart_threshold=threshold)
  q = vqvae.VectorQuantizer(cfg, rngs=nnx.Rngs(0))
  q.codebook[...] = jnp.asarray(RNG.normal(size=(k, d)), jnp.float32)
  if ema:
    q.ema_sums[...] = q.codebook[...] * q.ema_counts[...][:, None]
  return q


def _nearest(z_ND, e_KD):
  return np.argmin(((z_ND[:, None] - e_KD[None]) ** 2).sum(-1), axis=1)


def test_nearest_code_straight_through_and_losses_by_hand():
  q = _quantizer(ema=False)
  z = RNG.normal(size=(2, 2, 2, 3)).astype(np.float32)
  e = np.asarray(q.codebook[...])
  idx = _nearest(z.reshape(-1, 3), e)
  z_q, got_idx, losses = q(jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(got_idx).reshape(-1), idx)
  np.testing.assert_allclose(z_q, e[idx].reshape(z.shape), atol=1e-6)
  sq = np.mean((z.reshape(-1, 3) - e[idx]) ** 2)
  np.testing.assert_allclose(losses["commitment"], sq, rtol=1e-5)
  np.testing.assert_allclose(losses["codebook"], sq, rtol=1e-5)

  # Straight through: d z_q / d z_e is the identity.
  w = RNG.normal(size=z.shape).astype(np.float32)
  g = jax.grad(lambda z: jnp.sum(q(z)[0] * w))(jnp.asarray(z))
  np.testing.assert_allclose(g, w, atol=1e-6)
  # Commitment: 2 (z - e_idx) / n in z, nothing in the codes.
  g = jax.grad(lambda z: q(z)[2]["commitment"])(jnp.asarray(z))
  want = 2 * (z.reshape(-1, 3) - e[idx]) / z.size
  np.testing.assert_allclose(np.asarray(g).reshape(-1, 3), want, rtol=1e-4,
                             atol=1e-7)

  # The codebook loss moves each used code towards its vectors:
  # d/d e_k = sum_{i: idx_i = k} 2 (e_k - z_i) / n; unused codes get 0.
  graphdef, params, rest = nnx.split(q, nnx.Param, ...)
  def codebook_loss(params):
    return nnx.merge(graphdef, params, rest)(jnp.asarray(z))[2]["codebook"]
  g = np.asarray(jax.grad(codebook_loss)(params)["codebook"][...])
  want = np.zeros_like(e)
  for i, k in enumerate(idx):
    want[k] += 2 * (e[k] - z.reshape(-1, 3)[i]) / z.size
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-7)


def test_ema_update_by_hand():
  q = _quantizer(ema=True, decay=0.9)
  n0, m0 = np.asarray(q.ema_counts[...]), np.asarray(q.ema_sums[...])
  usage0 = np.asarray(q.usage[...])
  z = RNG.normal(size=(1, 4, 4, 3)).astype(np.float32)
  flat = z.reshape(-1, 3)
  idx = _nearest(flat, np.asarray(q.codebook[...]))
  q(jnp.asarray(z), jax.random.key(0), training=True)
  onehot = np.eye(5)[idx]
  n = 0.9 * n0 + 0.1 * onehot.sum(0)
  m = 0.9 * m0 + 0.1 * onehot.T @ flat
  smoothed = (n + 1e-5) / (n.sum() + 5e-5) * n.sum()
  np.testing.assert_allclose(q.ema_counts[...], n, rtol=1e-6)
  np.testing.assert_allclose(q.ema_sums[...], m, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(q.codebook[...], m / smoothed[:, None],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(q.usage[...], 0.9 * usage0 + 0.1 * onehot.sum(0),
                             rtol=1e-6)


def test_dead_codes_restart_at_encoder_outputs_and_live_ones_stay():
  q = _quantizer(ema=True, threshold=0.5, decay=0.9)
  # Codes 0 and 1 stay in use; 2, 3 and 4 are far from every z and unused.
  e = np.array(q.codebook[...])
  e[2:] = 100.0 + np.arange(3)[:, None]
  q.codebook[...] = jnp.asarray(e)
  q.ema_sums[...] = jnp.asarray(e)
  q.usage[...] = jnp.asarray([5.0, 5.0, 0.1, 0.1, 5.0])  # 4: still "alive"
  z = np.concatenate([e[0] + 0.01, e[1] - 0.01]).reshape(1, 1, 2, 3)
  z = z.astype(np.float32)
  q(jnp.asarray(z), jax.random.key(3), training=True)
  book = np.asarray(q.codebook[...])
  for k in (2, 3):  # restarted at one of the batch's vectors
    assert min(np.abs(book[k] - row).max() for row in z.reshape(-1, 3)) < 1e-6
    assert q.usage[...][k] == pytest.approx(2 / 5)  # n / K
    assert q.ema_counts[...][k] == 1.0
  np.testing.assert_allclose(book[4], e[4], rtol=1e-6)  # used enough
  assert np.abs(book[0] - e[0]).max() < 0.1  # EMA-moved, not restarted


def _family(*overrides):
  return families.build(config_lib.get_config("vqvae_mnist:smoke",
                                              list(overrides)))


def test_the_step_keeps_the_codebook_the_loss_updated():
  family = _family("model.restart_threshold=0")
  images = RNG.integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
  batch = {"image": images, "label": np.zeros(4, np.int32)}
  state = jax.jit(family.init, compiler_options=FAST_COMPILE)(
      jax.random.key(0), batch)
  new, metrics = jax.jit(family.train_step, compiler_options=FAST_COMPILE)(
      state, batch, jax.random.key(1))
  # The EMA counts moved towards this batch's assignments: their total is
  # decay * old + (1 - decay) * (codes assigned) = 0.99 * 16 + 0.01 * 4*49.
  total = float(jnp.sum(new.rest["quantizer"]["ema_counts"][...]))
  assert total == pytest.approx(0.99 * 16 + 0.01 * 4 * 49, rel=1e-5)
  assert not np.allclose(new.rest["quantizer"]["codebook"][...],
                         state.rest["quantizer"]["codebook"][...])
  assert "quantizer" not in new.params  # EMA codes are not parameters
  assert np.isfinite(float(metrics["loss"]))


def test_eval_reports_usage_perplexity_and_the_bound():
  family = _family()
  counts = np.array([3.0, 1.0] + [0.0] * 14)
  out = family.summarize_eval({"mse": 2.0, "psnr": 40.0, "commitment": 1.0,
                               "bits_per_dim_uniform_prior": 18.0,
                               "code_counts": counts, "count": 2.0})
  assert out["codebook_usage"] == 2 / 16
  p = np.array([0.75, 0.25])
  assert out["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))
  assert out["mse"] == 1.0
  # Bits/dim of a density on [-1, 1]^D: -log2 of (p / 2^D) per bin of 1/256.
  nll = jnp.asarray([1000.0])
  want = (1000.0 / 784 - np.log(2) + np.log(256)) / np.log(2)
  np.testing.assert_allclose(vqvae_family.bits_per_dim(nll, 784), want,
                             rtol=1e-6)


def test_options_the_quantizer_cannot_use_are_refused():
  with pytest.raises(UserError, match="ema_codebook"):
    _family("model.ema_codebook=False", "model.restart_threshold=1.0")
  with pytest.raises(UserError, match="codebook_size"):
    _family("model.codebook_size=0")
  with pytest.raises(UserError, match="commitment_cost"):
    _family("model.commitment_cost=-1.0")
