"""Every family on a data x fsdp mesh of 8 devices: its parameters and
optimizer moments really lie split over 'fsdp', and two steps give the numbers
of one device; the EMA follows one definition everywhere; a 'model' axis is
refused by families that cannot use it."""

import jax
import numpy as np
import pytest

from conftest import train_on_devices
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import parallel
from gen_jax.data import tokenizers
from gen_jax.data import translation
from gen_jax.errors import UserError
from gen_jax.families import base

FSDP = 4  # the 8 devices as data 2 x fsdp 4
EMA = 0.9

# (experiment, metric compared, overrides): one per family and architecture.
CASES = {
    "vae": ("vae_mnist:smoke", "loss", ()),
    "classifier": ("mnist_classifier:smoke", "loss", ()),
    "flow": ("glow_mnist:smoke", "bits_per_dim", ()),
    "pixelcnn": ("pixelcnn_mnist:cond-smoke", "loss", ()),
    "diffusion": ("ddpm_mnist:smoke", "loss", ()),
    # (one U-Net level: the network is the diffusion case's; the point is
    # each objective's step)
    "flow_matching": ("fm_mnist:smoke", "loss", ("model.channel_mults=(1,)",)),
    "edm": ("edm_mnist:smoke", "loss", ("model.channel_mults=(1,)",)),
    "ddpm_dit": ("ddpm_mnist:dit-smoke", "loss", ()),
    "transformer": ("transformer_code:smoke", "loss", ("data.seq_len=16",)),
    "lstm": ("lstm_code:smoke", "loss", ("data.seq_len=16",)),
    "gan": ("dcgan_mnist:smoke", "g_loss", ()),
    # The EMA codebook's statistics are sums over the global batch.
    "vqvae": ("vqvae_mnist:smoke", "loss", ()),
    # Encoder, decoder with cross-attention, shared embedding.
    "seq2seq": ("transformer_translate:smoke", "loss", ()),
}


def _family(exp, *overrides):
  config = config_lib.get_config(exp, [
      "mesh.axes=('data','fsdp')", f"mesh.shape=(-1,{FSDP})",
      "mesh.fsdp_min_size=64", f"train.ema_decay={EMA}", *overrides])
  tokenizer = (tokenizers.make(config) if config.family == "autoregressive"
               else None)
  if config.family == "seq2seq":  # bytes and the specials: 259 tokens
    tokenizer = translation.SubwordTokenizer.train(["a"], 300)
  return families.build(config, tokenizer)


def _batches(family, num=2, rows=16):
  rng = np.random.default_rng(0)
  if family.config.family == "autoregressive":
    t = family.config.data.seq_len + 1
    return [{"tokens": rng.integers(0, 256, (rows, t), np.int32)}
            for _ in range(num)]
  if family.config.family == "seq2seq":  # right-padded pairs
    def pairs():
      lengths = rng.integers(1, 8, (2, rows, 1))
      ids = rng.integers(3, 259, (2, rows, 8), np.int32)
      ids = np.where(np.arange(8) < lengths, ids, 0)
      target = np.concatenate([np.ones((rows, 1), np.int32), ids[1]], axis=1)
      return {"source": ids[0], "target": target}
    return [pairs() for _ in range(num)]
  shape = tuple(family.config.data.image_shape)
  return [{"image": rng.integers(0, 256, (rows, *shape), np.uint8),
           "label": rng.integers(0, 10, (rows,), np.int32)}
          for _ in range(num)]


def _params_and_moments(state):
  """(name, parameter, [its Adam moments]) for every trainable leaf."""
  params = state.g_params if hasattr(state, "g_params") else state.params
  opt = state.g_opt_state if hasattr(state, "g_opt_state") else state.opt_state
  adam = next(s for s in jax.tree.leaves(
      opt, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu"))
  flat = jax.tree_util.tree_leaves_with_path(params)
  mus = jax.tree.leaves(adam.mu)
  nus = jax.tree.leaves(adam.nu)
  return [(jax.tree_util.keystr(path), p, [m, n])
          for (path, p), m, n in zip(flat, mus, nus)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fsdp_shards_every_family_and_matches_one_device(case):
  exp, metric, overrides = CASES[case]
  family = _family(exp, *overrides)
  batches = _batches(family)
  init_batch = batches[0] if case == "flow" else None
  one, state1 = train_on_devices(family, batches, 1, [metric],
                                 init_batch=init_batch, mesh_shape=(1, 1))
  eight, state8 = train_on_devices(family, batches, 8, [metric],
                                   init_batch=init_batch, return_sharded=True)
  np.testing.assert_allclose(eight, one, rtol=2e-4, atol=1e-5)

  # The shardings the arrays have, not a rule table: every parameter big
  # enough with a dimension divisible by 4 lies split in 4 along one
  # dimension (the largest divisible one unless a family rule picks
  # another), and its optimizer moments lie the same way.
  sharded = 0
  for name, p, moments in _params_and_moments(state8):
    shard = p.sharding.shard_shape(p.shape)
    split = [d for d, (a, b) in enumerate(zip(p.shape, shard)) if a != b]
    if p.size >= 64 and any(n % FSDP == 0 for n in p.shape):
      assert len(split) == 1 and shard[split[0]] * FSDP == p.shape[split[0]], (
          name, p.shape, shard)
      sharded += 1
    else:
      assert not split, (name, p.shape, shard)
    for m in moments:
      assert m.sharding.shard_shape(m.shape) == shard, name
  assert sharded >= 3, f"only {sharded} parameters sharded"
  host8 = jax.device_get(state8)
  for a, b in zip(jax.tree.leaves(host8), jax.tree.leaves(state1)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


@pytest.mark.parametrize("case", ["vae", "classifier", "gan"])
def test_ema_has_one_definition(case):
  """After the first update the EMA is decay_at(0) * init + (1 - decay_at(0))
  * params with decay_at(0) = min(decay, 1/10), for every family (the VAE and
  the classifier once applied the raw decay)."""
  exp, metric, overrides = CASES[case]
  # A constant rate: a schedule warming up from 0 would make update 1 zero.
  family = _family(exp, *overrides, "train.lr_schedule=constant",
                   "train.warmup_steps=0")
  batches = _batches(family, num=1)
  _, before = train_on_devices(family, batches[:0], 1, [metric],
                               mesh_shape=(1, 1))
  _, after = train_on_devices(family, batches, 1, [metric], mesh_shape=(1, 1))
  if case == "gan":
    p0, p1, ema = before.g_params, after.g_params, after.g_ema
  else:
    p0, p1, ema = before.params, after.params, after.ema_params
  d = float(base.ema_decay_at(EMA, np.zeros((), np.int32)))
  assert d == pytest.approx(0.1)
  changed = 0
  for e, a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(p0),
                     jax.tree.leaves(p1)):
    np.testing.assert_allclose(e, d * a + (1 - d) * b, rtol=1e-5, atol=1e-7)
    changed += int(not np.allclose(a, b))
  assert changed > 0


def test_dit_splits_its_heads_over_the_model_axis():
  """fm_dit_mnist on data 4 x model 2 (its 1-vs-8-device test): the attention and MLP weights lie
  split over 'model' (by output for qkv and fc, by input for attn_out and
  mlp_out), and two steps give the numbers of one device."""
  config = config_lib.get_config("fm_dit_mnist:smoke", [
      "mesh.axes=('data','model')", "mesh.shape=(-1,2)",
      "model.num_heads=4", "model.width=32"])
  family = families.build(config)
  assert family.model_parallel
  batches = _batches(family)
  one, _ = train_on_devices(family, batches, 1, ["loss"], mesh_shape=(1, 1))
  eight, state = train_on_devices(family, batches, 8, ["loss"],
                                  return_sharded=True)
  np.testing.assert_allclose(eight, one, rtol=2e-4, atol=1e-5)
  kernels = {jax.tree_util.keystr(p): x for p, x in
             jax.tree_util.tree_leaves_with_path(state.params)
             if "kernel" in jax.tree_util.keystr(p)}
  split = {name: tuple(a // b for a, b in zip(
      k.shape, k.sharding.shard_shape(k.shape))) for name, k in
           kernels.items()}
  assert sum("qkv" in name for name in split) == config.model.depth
  for name, parts in split.items():
    if "qkv" in name or "'fc'" in name:
      assert parts == (1, 2), (name, parts)
    elif "attn_out" in name or "mlp_out" in name:
      assert parts == (2, 1), (name, parts)


def test_model_axis_is_refused_where_unused():
  mesh = jax.make_mesh((4, 2), ("data", "model"))
  with pytest.raises(UserError, match="does not split its network"):
    parallel.check_model_axis(mesh, False, "vae")
  parallel.check_model_axis(mesh, True, "autoregressive")
  transformer = _family("transformer_code:smoke", "data.seq_len=16")
  lstm = _family("lstm_code:smoke", "data.seq_len=16")
  assert transformer.model_parallel and not lstm.model_parallel
