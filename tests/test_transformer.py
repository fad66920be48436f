"""Sequence models: causality, the KV cache, decoding filters, LoRA."""

import re

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST_COMPILE
from gen_jax.models import attention
from gen_jax.models import decoding
from gen_jax.models import lora
from gen_jax.models import lstm
from gen_jax.models import transformer

V, T = 37, 12


def _transformer(positions="learned", lora_rank=0, **kw):
  cfg = transformer.TransformerConfig(
      vocab_size=V, context_length=16, num_layers=2, num_heads=2, width=16,
      positions=positions, lora_rank=lora_rank, **kw)
  return transformer.Transformer(cfg, rngs=nnx.Rngs(0))


def _lstm():
  return lstm.LSTMLM(lstm.LSTMConfig(vocab_size=V, embed_dim=8, hidden=16,
                                     num_layers=2), rngs=nnx.Rngs(0))


MODELS = {"learned": lambda: _transformer("learned"),
          "rotary": lambda: _transformer("rotary"),
          "lstm": _lstm}


def _jit(fn, model):
  """jit of fn(model, *args) over the model's state (NNX split/merge)."""
  graphdef, state = nnx.split(model)
  compiled = jax.jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a),
                     compiler_options=FAST_COMPILE)
  return lambda *args: compiled(state, *args)


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_position_sees_later_tokens(name):
  """d logits[t] / d input[s] is exactly zero for s > t, nonzero for s <= t."""
  model = MODELS[name]()
  x = _jit(lambda m, tok: m.embed_tokens(tok), model)(_tokens((1, T)))

  def logits_sum_per_position(m, x_BTD):
    # [T, T, D]: row t = d (sum of logits at t) / d x. The parameters are
    # differentiated too: NNX's RNN scan needs all its variables at the
    # level of the transform.
    graphdef, state = nnx.split(m)
    f = lambda x, s: jnp.sum(nnx.merge(graphdef, s).from_embeddings(x)[0],
                             axis=-1)
    return jax.jacrev(f, argnums=(0, 1))(x_BTD, state)[0][:, 0]
  jac = np.asarray(_jit(logits_sum_per_position, model)(x))
  influence = np.abs(jac).sum(-1)  # [T (output), T (input)]
  future = np.triu(np.ones((T, T), bool), k=1)
  assert np.all(influence[future] == 0.0)
  assert np.all(influence[~future] > 0.0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cached_decoding_matches_full_forward(name):
  """Prefill 7 tokens, then 5 one at a time: the logits of the full pass."""
  model = MODELS[name]()
  tokens = _tokens((3, T))

  def both(m, tok):
    full = m(tok)
    cache = m.init_cache(3, T)
    ones = jnp.ones((3, 7), bool)
    first, cache = m.extend(tok[:, :7], ones, cache)
    steps = [first]
    for i in range(7, T):
      out, cache = m.extend(tok[:, i:i + 1], ones[:, :1], cache)
      steps.append(out)
    return full, jnp.concatenate(steps, axis=1)
  full, cached = _jit(both, model)(tokens)
  np.testing.assert_allclose(cached, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batched_prompts_of_different_lengths(name):
  """Left-padded rows decode as each prompt would alone: same logits, and
  greedy generation = the argmax of repeated full passes."""
  model = MODELS[name]()
  prompts = [[3, 1, 4, 1, 5], [9, 2], [6]]
  tokens, valid = decoding.pad_prompts(prompts)
  np.testing.assert_array_equal(valid.sum(1), [5, 2, 1])

  def run(m, tok, val):
    logits, _ = m.extend(tok, val, m.init_cache(3, 5))
    gen = decoding.generate(m, tok, val, jax.random.key(0), 4,
                            temperature=0.0)
    return logits, gen
  logits, gen = _jit(run, model)(tokens, valid)
  full = _jit(lambda m, tok: m(tok), model)
  for i, prompt in enumerate(prompts):
    alone = full(jnp.asarray([prompt]))[0]
    np.testing.assert_allclose(logits[i, 5 - len(prompt):], alone, atol=1e-5)
    seq = list(prompt)
    for _ in range(4):
      seq.append(int(jnp.argmax(full(jnp.asarray([seq]))[0, -1])))
    assert gen[i].tolist() == seq[len(prompt):]


@pytest.mark.parametrize("name", ["transformer", "lstm"])
def test_dropout_is_on_only_with_rngs(name):
  """Eval and sampling pass no rngs: dropout is off there (the logits equal
  those of the same weights without dropout) instead of an error."""
  def build(rate):
    if name == "lstm":
      return lstm.LSTMLM(lstm.LSTMConfig(vocab_size=V, embed_dim=8, hidden=16,
                                         num_layers=2, dropout=rate),
                         rngs=nnx.Rngs(0))
    return _transformer(dropout=rate)
  tokens = _tokens((2, 8))
  with_dropout, without = build(0.5), build(0.0)
  np.testing.assert_array_equal(with_dropout(tokens), without(tokens))
  dropped = with_dropout(tokens, rngs=nnx.Rngs(dropout=1))
  assert np.abs(np.asarray(dropped - without(tokens))).max() > 1e-3


def test_cache_mask():
  valid = jnp.asarray([[False, True, True, False, False]])
  mask = np.asarray(attention.cache_mask(valid, jnp.int32(1), 2))[0]
  # queries at slots 1 and 2; slot 0 is padding, slots 3-4 are the future
  np.testing.assert_array_equal(mask, [[0, 1, 0, 0, 0], [0, 1, 1, 0, 0]])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_causal_attention_and_its_gradients_equal_jaxs(dtype):
  """The 'einsum' path (the CPU default, with its own backward) against
  jax.nn.dot_product_attention's XLA implementation."""
  q, k, v, g = (jax.random.normal(key, (2, 5, 3, 4)).astype(dtype)
                for key in jax.random.split(jax.random.key(0), 4))
  outs = {}
  for impl in ("einsum", "xla"):
    out, vjp = jax.vjp(lambda q, k, v, impl=impl: attention.attention(
        q, k, v, implementation=impl), q, k, v)
    outs[impl] = (out, *vjp(g))  # the output, dq, dk, dv
  tol = 1e-5 if dtype == "float32" else 3e-2
  for got, want in zip(outs["einsum"], outs["xla"]):
    assert got.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol,
                               atol=tol)
  with pytest.raises(ValueError, match="'flash' is not one of einsum"):
    attention.attention(q, k, v, implementation="flash")


def test_rotary_depends_on_offset_only():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))
  dot = lambda i, j: float(jnp.sum(
      attention.rotary(q, jnp.asarray([[i]])) *
      attention.rotary(k, jnp.asarray([[j]]))))
  assert dot(3, 1) == pytest.approx(dot(12, 10), abs=1e-5)
  assert dot(3, 1) != pytest.approx(dot(3, 2), abs=1e-3)


LOGITS = jnp.log(jnp.asarray([[0.05, 0.4, 0.1, 0.25, 0.2],
                              [0.5, 0.1, 0.2, 0.15, 0.05]]))


def test_top_k_keeps_the_k_largest():
  np.testing.assert_array_equal(decoding.top_k_mask(LOGITS, 2),
                                [[0, 1, 0, 1, 0], [1, 0, 1, 0, 0]])
  np.testing.assert_array_equal(decoding.top_k_mask(LOGITS, 1),
                                [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
  assert np.asarray(decoding.top_k_mask(LOGITS, 0)).all()


def test_top_p_keeps_the_nucleus():
  # Row 0 sorted: 0.4, 0.25, 0.2, 0.1, 0.05. p=0.6 -> {0.4, 0.25} (0.65);
  # p=0.65 -> the same (0.4 + 0.25 reaches it); p=0.66 adds 0.2.
  for p, expected in ((0.6, [0, 1, 0, 1, 0]), (0.65, [0, 1, 0, 1, 0]),
                      (0.66, [0, 1, 0, 1, 1]), (0.1, [0, 1, 0, 0, 0]),
                      (1.0, [1, 1, 1, 1, 1])):
    keep = np.asarray(decoding.top_p_mask(LOGITS[:1], p))
    np.testing.assert_array_equal(keep, [expected], err_msg=f"p={p}")
  # Row 1: 0.5 alone reaches 0.5.
  np.testing.assert_array_equal(decoding.top_p_mask(LOGITS[1:], 0.5),
                                [[1, 0, 0, 0, 0]])


def test_sampling_draws_only_kept_tokens():
  keys = jax.random.split(jax.random.key(0), 2000)
  draw = jax.jit(jax.vmap(lambda k: decoding.choose(
      k, LOGITS[:1], temperature=1.0, top_k=3, top_p=0.6)[0]))
  counts = np.bincount(np.asarray(draw(keys)), minlength=5)
  assert counts[[0, 2, 4]].sum() == 0  # top-p 0.6 within top-3 -> {1, 3}
  # renormalized over the kept tokens: 0.4 / 0.65
  assert counts[1] / 2000 == pytest.approx(0.4 / 0.65, abs=0.04)
  greedy = decoding.choose(jax.random.key(0), LOGITS, temperature=0.0)
  np.testing.assert_array_equal(greedy, [1, 0])


def _hf_filter(logits, temperature, top_k, top_p):
  """transformers' sampling warpers, added as its `generate` adds them:
  temperature, then top-k, then top-p (min_tokens_to_keep=1)."""
  torch = pytest.importorskip("torch")
  process = pytest.importorskip("transformers.generation.logits_process")
  warpers = [process.TemperatureLogitsWarper(temperature)]
  if top_k:
    warpers.append(process.TopKLogitsWarper(top_k))
  if top_p < 1.0:
    warpers.append(process.TopPLogitsWarper(top_p))
  scores = torch.from_numpy(np.array(logits, np.float32))
  for warper in warpers:
    scores = warper(None, scores)
  return scores.numpy()


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 0.9), (0.7, 10, 1.0), (0.7, 10, 0.8), (1.3, 5, 0.5),
    (0.5, 20, 0.95), (2.0, 3, 0.6), (1.0, 1, 0.3), (1.0, 64, 0.7),
    (0.8, 4, 0.0), (1.0, 0, 0.0)])
def test_filters_match_transformers_warpers(temperature, top_k, top_p):
  logits = 3.0 * np.random.default_rng(0).standard_normal((8, 50))
  ours = np.asarray(jax.jit(lambda l: decoding.filter_logits(
      l, temperature, top_k, top_p))(jnp.asarray(logits, jnp.float32)))
  theirs = _hf_filter(logits, temperature, top_k, top_p)
  np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
  kept = np.isfinite(theirs)
  assert kept.sum(-1).min() >= 1
  np.testing.assert_allclose(ours[kept], theirs[kept], rtol=1e-6)
  # Ties (few distinct logits): top-k keeps every token equal to the k-th;
  # top-p keeps as many tokens as transformers, of the same values (which of
  # equal tokens it keeps is left to torch.sort's order).
  tied = np.random.default_rng(1).integers(0, 6, (8, 50)) * 0.7
  ours = np.asarray(jax.jit(lambda l: decoding.filter_logits(
      l, temperature, top_k, top_p))(jnp.asarray(tied, jnp.float32)))
  theirs = _hf_filter(tied, temperature, top_k, top_p)
  for row_ours, row_theirs in zip(ours, theirs):
    np.testing.assert_allclose(np.sort(row_ours[np.isfinite(row_ours)]),
                               np.sort(row_theirs[np.isfinite(row_theirs)]),
                               rtol=1e-6)


def test_top_p_sees_the_top_k_renormalized_distribution():
  # Row 0: 0.4, 0.25, 0.2, 0.1, 0.05. Top-2 renormalized: 0.4 / 0.65 = 0.62,
  # which reaches p = 0.6 alone; top-p on the full distribution would need
  # 0.4 + 0.25 and keep token 3 too.
  p_then_k = decoding.top_k_mask(LOGITS[:1], 2) & decoding.top_p_mask(
      LOGITS[:1], 0.6)
  np.testing.assert_array_equal(p_then_k, [[0, 1, 0, 1, 0]])
  theirs = np.isfinite(_hf_filter(LOGITS[:1], 1.0, 2, 0.6))
  np.testing.assert_array_equal(theirs, [[0, 1, 0, 0, 0]])
  ours = np.isfinite(decoding.filter_logits(LOGITS[:1], 1.0, 2, 0.6))
  np.testing.assert_array_equal(ours, theirs)


def test_eos_ends_a_row():
  model = _transformer()
  tokens, valid = decoding.pad_prompts([[1, 2], [3]])
  gen = _jit(lambda m, t, v: decoding.generate(
      m, t, v, jax.random.key(0), 6, temperature=0.0), model)(tokens, valid)
  eos = int(gen[0, 1])  # the greedy second token of row 0
  gen_eos = _jit(lambda m, t, v: decoding.generate(
      m, t, v, jax.random.key(0), 6, temperature=0.0, eos_id=eos),
                 model)(tokens, valid)
  assert gen_eos[0, :2].tolist() == gen[0, :2].tolist()
  assert set(gen_eos[0, 2:].tolist()) == {eos}


def test_lora_starts_as_the_base_model_and_merges_exactly():
  base = _transformer()
  adapted = _transformer(lora_rank=4, lora_alpha=8.0)
  _, base_params, _ = nnx.split(base, nnx.Param, ...)
  nnx.update(adapted, base_params)  # same base weights, fresh adapters
  tokens = _tokens((2, T))
  forward = lambda m, tok: m(tok)
  np.testing.assert_array_equal(_jit(forward, adapted)(tokens),
                                _jit(forward, base)(tokens))
  # Non-zero adapters change the output; merging folds them in exactly.
  for _, module in nnx.iter_modules(adapted):
    if isinstance(module, lora.Dense) and module.lora_b is not None:
      module.lora_b[...] = 0.05 * jax.random.normal(
          jax.random.key(3), module.lora_b.shape)
  with_adapters = _jit(forward, adapted)(tokens)
  assert np.abs(with_adapters - _jit(forward, base)(tokens)).max() > 1e-3
  merged = lora.merge(adapted)
  assert not nnx.state(merged, nnx.LoRAParam)
  np.testing.assert_allclose(_jit(forward, merged)(tokens), with_adapters,
                             atol=1e-5)


def test_remat_recomputes_blocks_without_changing_gradients():
  """model.remat: the gradient's program recomputes each block (one
  checkpointed call per layer, none without remat), and the loss and its
  gradients are those of the plain model."""
  tokens = _tokens((2, T))
  results = {}
  for remat in (False, True):
    graphdef, params, rest = nnx.split(_transformer(remat=remat), nnx.Param,
                                       ...)

    def loss(p):
      logits = nnx.merge(graphdef, p, rest)(tokens[:, :-1])
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))
    grad_fn = jax.value_and_grad(loss)
    program = str(jax.make_jaxpr(grad_fn)(params))
    checkpointed = re.findall(r"\b(?:remat|checkpoint)\w*\[", program)
    assert len(checkpointed) == (2 if remat else 0), checkpointed
    results[remat] = jax.jit(grad_fn, compiler_options=FAST_COMPILE)(params)
  (loss_plain, grads_plain), (loss_remat, grads_remat) = (results[False],
                                                          results[True])
  np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               grads_remat, grads_plain)
  assert float(jnp.abs(jnp.asarray(loss_plain))) > 1.0  # a real loss


def test_param_count_formula():
  for kw in ({}, {"use_bias": False, "tie_embeddings": False},
             {"positions": "rotary", "mlp_width": 24}):
    model = _transformer(**kw)
    count = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == model.cfg.num_params(), kw
  # GPT-2 small: 124,439,808 parameters.
  gpt2 = transformer.TransformerConfig(vocab_size=50257, context_length=1024,
                                       num_layers=12, num_heads=12, width=768)
  assert gpt2.num_params() == 124_439_808
