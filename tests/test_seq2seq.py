"""The encoder-decoder Transformer, the attention LSTM, beam search and the
seq2seq objective: padding, causality, masking, caches, exact search."""

import itertools
import math

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gen_jax import optim
from gen_jax import config as config_lib
from gen_jax.families import seq2seq as seq2seq_family
from gen_jax.models import beam_search
from gen_jax.models import decoding
from gen_jax.models import seq2seq
from gen_jax.models import seq2seq_lstm

V = 23
SOURCE = np.array([[5, 6, 7, 8, 2, 0, 0], [9, 10, 2, 0, 0, 0, 0]], np.int32)
TARGET = np.array([[1, 11, 12, 13, 14, 2], [1, 15, 16, 2, 0, 0]], np.int32)


def _models():
  return {
      "transformer": seq2seq.EncoderDecoder(seq2seq.Seq2SeqConfig(
          vocab_size=V, num_layers=2, num_heads=2, width=16, dropout=0.0),
                                            rngs=nnx.Rngs(0)),
      "transformer_separate": seq2seq.EncoderDecoder(seq2seq.Seq2SeqConfig(
          vocab_size=V, num_layers=1, decoder_layers=2, num_heads=2, width=16,
          dropout=0.0, share_embeddings=False), rngs=nnx.Rngs(1)),
      "lstm_additive": seq2seq_lstm.AttentionLSTM(
          seq2seq_lstm.AttentionLSTMConfig(vocab_size=V, embed_dim=8,
                                           hidden=16, num_layers=2,
                                           dropout=0.0), rngs=nnx.Rngs(2)),
      "lstm_multiplicative": seq2seq_lstm.AttentionLSTM(
          seq2seq_lstm.AttentionLSTMConfig(
              vocab_size=V, embed_dim=8, hidden=16, num_layers=1,
              attention="multiplicative", dropout=0.0,
              share_embeddings=False), rngs=nnx.Rngs(3)),
  }


MODELS = _models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_encoder_output_ignores_extra_padding(name):
  model = MODELS[name]
  memory, valid = model.encode(jnp.asarray(SOURCE))
  padded = np.pad(SOURCE, ((0, 0), (0, 5)))
  memory2, valid2 = model.encode(jnp.asarray(padded))
  np.testing.assert_allclose(
      np.where(valid[..., None], memory, 0),
      np.where(valid2[:, :SOURCE.shape[1], None], memory2[:, :7], 0),
      atol=1e-5)
  # And so do the decoder's logits.
  np.testing.assert_allclose(model(SOURCE, TARGET), model(padded, TARGET),
                             atol=1e-5)
  # A real source token does change them (the encoder is not ignored).
  other = SOURCE.copy()
  other[0, 1] = 17
  assert np.abs(model(other, TARGET)[0] - model(SOURCE, TARGET)[0]).max() > 1e-4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_decoder_is_causal_and_masks_source_padding(name):
  """d logits[t] / d (target embedding at s) = 0 for s > t, and = 0 for
  source padding's embeddings; nonzero for the past and the real source."""
  model = MODELS[name]
  t = TARGET.shape[1]
  position = 2
  later = set(TARGET[0, position + 1:]) - set(TARGET[0, :position + 1])
  # The logits of later tokens are left out: with tied output weights
  # their rows reach the logits through the output layer.
  weights = np.arange(V, dtype=np.float32)
  weights[list(later)] = 0

  def logits_at(m):
    return jnp.sum(m(SOURCE, TARGET)[0, position] * weights)

  grad = np.asarray(nnx.grad(logits_at)(model)["embed"][...])
  earlier = set(TARGET[0, :position + 1])
  if model.source_embed is None:  # shared: source tokens get gradients too
    later -= set(SOURCE[0])
  for token in later:
    assert np.abs(grad[token]).max() == 0, (name, token)
  for token in earlier:
    assert np.abs(grad[token]).max() > 0, (name, token)
  # Cross-attention: source padding is invisible; real source is seen.
  padded = np.concatenate([SOURCE[:, :5], np.full((2, 3), 21)], axis=1)
  valid_src = np.concatenate([SOURCE[:, :5], np.zeros((2, 3), np.int32)],
                             axis=1)
  a = model(valid_src, TARGET)
  changed = padded.copy()
  changed[:, 5:] = 0  # the padding ids themselves: 0 vs a real token
  np.testing.assert_allclose(model(changed, TARGET), a, atol=1e-6)
  assert np.abs(model(padded, TARGET) - a).max() > 1e-4
  weights = np.asarray(model.attention_weights(SOURCE, TARGET))
  assert weights.shape == (2, t, SOURCE.shape[1])
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  assert np.all(weights[SOURCE[:, None, :].repeat(t, 1) == 0] == 0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cached_decoder_equals_the_full_forward_pass(name):
  model = MODELS[name]
  full = model(SOURCE, TARGET)
  cache = model.init_cache(model.encode(SOURCE), TARGET.shape[1])
  parts = []
  for lo, hi in ((0, 1), (1, 4), (4, 6)):  # prefill, then chunks, then one
    logits, cache = model.extend(TARGET[:, lo:hi], np.ones((2, hi - lo), bool),
                                 cache)
    parts.append(logits)
  np.testing.assert_allclose(np.concatenate(parts, 1), full, atol=2e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_beam_one_is_greedy(name):
  model = MODELS[name]
  memory = model.encode(SOURCE)
  steps = 9
  limits = jnp.array([9, 5])
  beam_out, _ = beam_search.beam_search(
      model, model.init_cache(memory, steps + 1), 2, 1, steps, limits,
      bos_id=1, eos_id=2, alpha=0.0)
  greedy = decoding.generate(seq2seq_family._Conditioned(model, memory),
                             jnp.ones((2, 1), jnp.int32),
                             jnp.ones((2, 1), bool), jax.random.key(0), steps,
                             temperature=0.0, eos_id=2)
  greedy = jnp.where(jnp.arange(steps)[None] >= limits[:, None] - 1, 2,
                     greedy)
  np.testing.assert_array_equal(beam_out, greedy)


@flax.struct.dataclass
class _TableCache:
  prefix: jax.Array  # [B] the sequence so far as a base-V number
  length: jax.Array  # [B]


class _TableModel:
  """p(next | prefix) from a fixed table over all prefixes: a decoder
  whose probabilities are known exactly."""

  def __init__(self, vocab, depth, seed, eos):
    rng = np.random.default_rng(seed)
    self.vocab, self.eos = vocab, eos
    self.table = jnp.asarray(rng.normal(size=(vocab ** (depth + 1), vocab))
                             * 2.0, jnp.float32)

  def init_cache(self, batch, num_slots=0):
    del num_slots
    return _TableCache(prefix=jnp.zeros((batch,), jnp.int32),
                       length=jnp.zeros((batch,), jnp.int32))

  def extend(self, tokens, valid, cache):
    del valid
    prefix = cache.prefix * self.vocab + tokens[:, 0]
    logits = self.table[prefix]
    return logits[:, None], _TableCache(prefix=prefix,
                                        length=cache.length + 1)


@flax.struct.dataclass
class _RowsCache:
  row: jax.Array  # [B] which table
  prefix: jax.Array  # [B]


class _Tables(_TableModel):
  """One table per batch row (B different problems in one search)."""

  def __init__(self, vocab, depth, seeds, eos):
    self.rows = [_TableModel(vocab, depth, seed, eos) for seed in seeds]
    self.vocab, self.eos = vocab, eos
    self.table = jnp.stack([r.table for r in self.rows])

  def init_cache(self, batch, num_slots=0):
    del num_slots
    return _RowsCache(row=jnp.arange(batch) % len(self.rows),
                      prefix=jnp.zeros((batch,), jnp.int32))

  def extend(self, tokens, valid, cache):
    del valid
    prefix = cache.prefix * self.vocab + tokens[:, 0]
    return self.table[cache.row, prefix][:, None], cache.replace(
        prefix=prefix)


def _brute_force(model, limit, alpha):
  """The best sequence (tokens until </s>, at most `limit`) and its score."""
  best, best_score = None, -math.inf
  for n in range(1, limit + 1):
    for body in itertools.product(range(model.vocab - 1), repeat=n - 1):
      seq = (*body, model.eos)
      score = _score(model, seq) / float(
          beam_search.length_penalty(jnp.array(n), alpha))
      if score > best_score:
        best, best_score = seq, score
  return best, best_score


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_finds_the_exact_best_sequence(alpha):
  """On tables whose best sequence greedy search misses, beam search (wide
  enough) returns the exact best by brute force over every sequence, per
  row of a batch with different limits (early stopping included)."""
  vocab, steps, eos, rows = 4, 4, 3, 36
  limits = [(4, 2, 3)[r % 3] for r in range(rows)]
  model = _Tables(vocab, steps, range(rows), eos)
  # As wide as the candidates of the widest step: exact.
  out, score = beam_search.beam_search(
      model, model.init_cache(rows), rows, (vocab - 1) ** (steps - 1) * vocab,
      steps, jnp.array(limits), bos_id=0, eos_id=eos, alpha=alpha)
  greedy = decoding.generate(model, jnp.zeros((rows, 1), jnp.int32),
                             jnp.ones((rows, 1), bool), jax.random.key(0),
                             steps, temperature=0.0, eos_id=eos)
  greedy_misses = 0
  for row, limit in enumerate(limits):
    best, best_score = _brute_force(model.rows[row], limit, alpha)
    got = tuple(int(t) for t in out[row])
    got = got[:got.index(eos) + 1]
    assert got == best, (row, got, best)
    assert all(t == eos for t in out[row][len(got):])
    np.testing.assert_allclose(float(score[row]), best_score, rtol=1e-5)
    g = [int(t) for t in greedy[row]][:limit]
    g = tuple(g[:g.index(eos) + 1]) if eos in g else tuple(g[:-1]) + (eos,)
    greedy_misses += g != best
  assert greedy_misses >= 5  # cases where greedy search is not the best


@pytest.mark.parametrize("name", ["transformer", "lstm_additive"])
def test_beam_scores_are_the_models_and_rows_do_not_interact(name):
  """Beam 3 over a batch: each returned score is the model's teacher-forced
  log-probability of the returned sequence / lp(length) (a wrong reordering
  of the cache would break this), and each row's result is what it gets
  decoded alone."""
  model, alpha, steps = MODELS[name], 0.6, 7
  limits = jnp.array([7, 4])
  out, score = beam_search.beam_search(
      model, model.init_cache(model.encode(SOURCE), steps + 1), 2, 3, steps,
      limits, bos_id=1, eos_id=2, alpha=alpha)
  for row in range(2):
    seq = [int(t) for t in out[row]]
    seq = seq[:seq.index(2) + 1]
    assert len(seq) <= int(limits[row])
    target = np.array([[1] + seq], np.int32)
    logp = jax.nn.log_softmax(model(SOURCE[row:row + 1], target[:, :-1]))
    total = float(jnp.sum(jnp.take_along_axis(
        logp[0], target[0, 1:, None], axis=-1)))
    lp = float(beam_search.length_penalty(jnp.array(len(seq)), alpha))
    np.testing.assert_allclose(float(score[row]), total / lp, rtol=1e-4)
    alone, alone_score = beam_search.beam_search(
        model, model.init_cache(model.encode(SOURCE[row:row + 1]), steps + 1),
        1, 3, steps, limits[row:row + 1], bos_id=1, eos_id=2, alpha=alpha)
    np.testing.assert_array_equal(alone[0], out[row])
    np.testing.assert_allclose(alone_score[0], score[row], rtol=1e-5)


def _score(model, seq):
  """log p(seq | bos=0) under the table (numpy)."""
  table = np.asarray(model.table, np.float64)
  prefix, total = 0, 0.0
  for t in seq:
    logits = table[prefix]
    total += logits[t] - np.log(np.sum(np.exp(logits)))
    prefix = prefix * model.vocab + t
  return total


def _family(exp, *overrides, vocab=60):
  class Tok:
    vocab_size, pad_id, bos_id, eos_id, placeholders = vocab, 0, 1, 2, False
    encode_source = None
  config = config_lib.get_config(exp, list(overrides))
  return seq2seq_family.Seq2Seq(config, Tok())


def test_loss_is_label_smoothed_cross_entropy_over_real_tokens():
  family = _family("transformer_translate:smoke",
                   "model.label_smoothing=0.2", vocab=V)
  network = MODELS["transformer"]
  batch = {"source": SOURCE, "target": TARGET}
  loss, aux = family.loss(network, batch, jax.random.key(0))
  logits = np.asarray(network(SOURCE, TARGET[:, :-1]), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  labels = TARGET[:, 1:]
  mask = labels != 0
  eps = 0.2
  smoothed = -((1 - eps) * np.take_along_axis(logp, labels[..., None], -1)[
      ..., 0] + eps / V * logp.sum(-1))
  nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, smoothed[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(aux["nll"], nll[mask].mean(), rtol=1e-5)
  assert not np.isclose(loss, aux["nll"])


def test_rsqrt_schedule_is_the_papers():
  config = config_lib.get_config("transformer_wmt14_base")
  schedule = optim.learning_rate_schedule(config.train)
  d, warmup = 512, 4000
  for step in (0, 99, 3999, 4000, 20000, 99999):
    n = step + 1
    expected = d ** -0.5 * min(n ** -0.5, n * warmup ** -1.5)
    np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)


def test_options_are_checked():
  with pytest.raises(Exception, match="arch"):
    _family("transformer_translate:smoke", "model.arch='rnn'")
  with pytest.raises(Exception, match="attention"):
    _family("lstm_translate:smoke", "model.attention='dot'")
  with pytest.raises(Exception, match="beam_size"):
    _family("lstm_translate:smoke", "sample.beam_size=0")
  with pytest.raises(Exception, match="translation corpus"):
    seq2seq_family.Seq2Seq(config_lib.get_config(
        "transformer_translate:smoke"), None)
  assert optax  # the objective's library


def test_bleu_and_chrf_are_sacrebleus_on_its_documented_example():
  """sacrebleu's README example: BLEU 48.53, chrF2 59.73 (two references)."""
  from gen_jax.evaluation import translation_quality  # pylint: disable=g-import-not-at-top
  refs = [["The dog bit the man.", "It was not unexpected.",
           "The man bit him first."],
          ["The dog had bit the man.", "No one was surprised.",
           "The man had bitten the dog."]]
  hyps = ["The dog bit the man.", "It wasn't surprising.",
          "The man had just bitten him."]
  scores = translation_quality.corpus_scores(hyps, refs)
  assert round(scores["bleu"], 2) == 48.53
  assert round(scores["chrf"], 2) == 59.73
  assert scores["bleu_signature"].startswith(
      "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:")
  # Detokenized text is scored: a perfect hypothesis is 100 exactly.
  assert abs(translation_quality.corpus_scores(refs[0], [refs[0]])["bleu"]
             - 100) < 1e-9
