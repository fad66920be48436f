"""The autoregressive family: objective, eval metrics, devices, LoRA, GPT-2."""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE, train_on_devices, write_gpt2_checkpoint
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import parallel
from gen_jax.data import tokenizers
from gen_jax.errors import UserError
from gen_jax.families import autoregressive  # pylint: disable=unused-import

SEQ = 16


def _family(exp, *overrides):
  config = config_lib.get_config(exp, [f"data.seq_len={SEQ}", *overrides])
  return families.build(config, tokenizers.make(config))


def _batches(num, batch=8, vocab=256, seed=0):
  rng = np.random.default_rng(seed)
  return [{"tokens": rng.integers(0, vocab, (batch, SEQ + 1), np.int32)}
          for _ in range(num)]


@pytest.mark.parametrize("exp,mesh", [
    ("transformer_code:smoke", ("data", "fsdp", "model")),
    ("lstm_code:smoke", ("data",))])
def test_one_vs_eight_devices_and_initial_loss(exp, mesh):
  """The same steps on 1 device and on 8 (Transformer: params sharded over
  a 2x2x2 data/fsdp/model mesh) agree; step 0's loss is about ln(256)."""
  shape = ",".join(["-1"] + ["2"] * (len(mesh) - 1))
  axes = ",".join(f"'{a}'" for a in mesh)
  one = _family(exp, "train.dtype=float32")
  eight = _family(exp, f"mesh.axes=({axes},)", f"mesh.shape=({shape},)")
  batches = _batches(3)
  names = ["loss", "grad_norm"]
  m1, s1 = train_on_devices(one, batches, 1, names)
  m8, s8 = train_on_devices(eight, batches, 8, names, return_sharded=True)
  assert abs(m1[0, 0] - math.log(256)) < 0.05
  np.testing.assert_allclose(m8, m1, rtol=2e-4)
  if "fsdp" in mesh:  # the weights really lie split: Megatron x fsdp
    leaves = {jax.tree_util.keystr(p): x for p, x in
              jax.tree_util.tree_leaves_with_path(s8.params)}
    qkv = next(x for p, x in leaves.items() if "qkv" in p and "kernel" in p)
    out = next(x for p, x in leaves.items()
               if "attn_out" in p and "kernel" in p)
    for w in (qkv, out):  # [D, 3D] by (fsdp, model); [D, D] by (model, fsdp)
      assert w.sharding.shard_shape(w.shape) == (w.shape[0] // 2,
                                                 w.shape[1] // 2)
    moments = [m for m in jax.tree.leaves(s8.opt_state)
               if m.shape == qkv.shape]
    assert moments and all(m.sharding.shard_shape(m.shape)
                           == qkv.sharding.shard_shape(qkv.shape)
                           for m in moments)
  s8 = jax.device_get(s8)
  for a, b in zip(jax.tree.leaves(s8.params), jax.tree.leaves(s1.params)):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_eval_metrics_are_exact():
  """nll / bits per byte / perplexity from eval_step + summarize_eval equal a
  float64 log-softmax of the model's logits; padding rows do not count."""
  family = _family("transformer_code:smoke")
  state = jax.jit(family.init, compiler_options=FAST_COMPILE)(
      jax.random.key(0), None)
  # Perturb the weights so the prediction is far from uniform.
  state = state.replace(params=jax.tree.map(
      lambda p: p * 30.0 if p.ndim == 2 else p, state.params))
  batch = _batches(1, batch=4)[0]
  batch["mask"] = np.array([1, 1, 1, 0], np.float32)
  sums = jax.jit(family.eval_step, compiler_options=FAST_COMPILE)(
      state, batch, jax.random.key(0))
  result = family.summarize_eval({k: float(v) for k, v in sums.items()})

  model = nnx.merge(family.graphdef, state.params, state.rest)
  logits = np.asarray(jax.jit(lambda t: model(t))(batch["tokens"][:, :-1]),
                      np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  target = batch["tokens"][:3, 1:]
  nll = -np.take_along_axis(logp[:3], target[..., None], -1).mean()
  assert nll > math.log(256) + 1.0  # really non-uniform
  assert result["loss"] == pytest.approx(nll, rel=1e-5)
  assert result["bits_per_byte"] == pytest.approx(nll / math.log(2), rel=1e-5)
  assert result["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
  assert float(sums["tokens"]) == 3 * SEQ


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  return write_gpt2_checkpoint(tmp_path_factory.mktemp("gpt2"))


def test_lora_trains_only_the_adapters_of_the_pretrained_model(gpt2_dir):
  family = _family("gpt2_finetune:lora-smoke", f"init_from={gpt2_dir}")
  assert family.tokenizer.vocab_size == 257
  mesh = parallel.make_mesh(family.config, jax.devices()[:1])
  abstract = jax.eval_shape(family.init, jax.random.key(0), None)
  shardings = parallel.state_shardings(abstract, mesh,
                                       family.partition_rules())
  state = jax.jit(family.init, out_shardings=shardings,
                  compiler_options=FAST_COMPILE)(jax.random.key(0), None)
  state = family.warm_start(state, None)
  # The optimizer state and the trainable params hold adapters only.
  paths = ["/".join(str(getattr(k, "key", k)) for k in p)
           for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
  assert paths and all("lora_" in p for p in paths)
  # Fresh adapters: the logits of the checkpoint itself.
  from gen_jax.importers import gpt2  # pylint: disable=g-import-not-at-top
  base = gpt2.load_model(gpt2_dir)
  tokens = _batches(1, batch=2, vocab=257)[0]["tokens"]
  merged = nnx.merge(family.graphdef, state.params, state.rest)
  np.testing.assert_allclose(jax.jit(lambda t: merged(t))(tokens),
                             jax.jit(lambda t: base(t))(tokens), atol=1e-5)
  step = jax.jit(family.train_step, compiler_options=FAST_COMPILE)
  before = jax.device_get(state)
  for i, batch in enumerate(_batches(2, vocab=257)):
    state, metrics = step(state, batch, jax.random.key(i))
  after = jax.device_get(state)
  assert np.isfinite(float(metrics["loss"]))
  for a, b in zip(jax.tree.leaves(after.rest), jax.tree.leaves(before.rest)):
    np.testing.assert_array_equal(a, b)  # frozen weights: bit for bit
  changed = [not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(after.params), jax.tree.leaves(before.params))]
  assert all(changed)


def test_config_errors(gpt2_dir):
  with pytest.raises(UserError, match="init_from"):
    _family("gpt2_finetune:smoke")
  config = config_lib.get_config("gpt2_finetune:smoke",
                                 [f"init_from={gpt2_dir}"])
  with config.unlocked():
    config.model.num_layers = 4
  with pytest.raises(UserError, match="architecture comes from"):
    families.build(config, tokenizers.make(config))
  with pytest.raises(UserError, match="seq_len"):
    _family("transformer_code:smoke", "data.seq_len=64")
  with pytest.raises(UserError, match="divisible"):
    _family("transformer_code:smoke", "model.num_heads=3")
  with pytest.raises(UserError, match="max_new_tokens"):
    _family("transformer_code:smoke", "sample.max_new_tokens=0")
