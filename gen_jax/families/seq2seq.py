"""Sequence-to-sequence translation: an encoder-decoder Transformer or an
attention LSTM (`config.model.arch`), trained on sentence pairs.

log p(y | x) = sum_t log p(y_t | y_<t, x) over the target's tokens and its
</s>. Trained with the mean token cross entropy against label-smoothed
targets (`model.label_smoothing`: 1 - eps on the token, eps spread over the
vocabulary, as in the Transformer paper); evaluated without smoothing as
held-out nats per token (loss), perplexity and token accuracy (argmax =
reference under teacher forcing). BLEU and chrF of whole translations are
the 'translation' evaluator's (`gen_jax.evaluation.translation_quality`).

Decoding (`translate`): greedy search (the shared sampler of the language
models, `decoding.generate` at temperature 0) or beam search
(`beam_search`), both one compiled loop per batch shape. A row may emit
`sample.max_len_a * source_length + sample.max_len_b` tokens, </s>
included. Sources are cut to the batch's longest row (rounded up to 8) before
compiling, so short sentences decode short.
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax import parallel
from gen_jax.errors import UserError
from gen_jax.families import base, register
from gen_jax.models import attention
from gen_jax.models import beam_search
from gen_jax.models import decoding
from gen_jax.models import seq2seq
from gen_jax.models import seq2seq_lstm
from gen_jax.models import transformer

_ARCHS = {"transformer": seq2seq.Seq2SeqConfig,
          "lstm": seq2seq_lstm.AttentionLSTMConfig}
_WIDTH_MULTIPLE = 8  # decoded sources are cut to a multiple of this


class _Conditioned:
  """A decoder over fixed encoder outputs, with the language models'
  `init_cache(batch, slots)` (so `decoding.generate` drives it)."""

  def __init__(self, model, memory):
    self.model, self.memory = model, memory

  def init_cache(self, batch_size, num_slots):
    del batch_size
    return self.model.init_cache(self.memory, num_slots)

  def extend(self, tokens, valid, cache):
    return self.model.extend(tokens, valid, cache)


def _model_config(config, vocab_size: int):
  m = config.model.to_dict()
  arch = m.pop("arch", None)
  m.pop("label_smoothing", None)
  if arch not in _ARCHS:
    raise UserError(f"--config.model.arch: '{arch}' is not one of "
                    f"{', '.join(_ARCHS)}.")
  cls = _ARCHS[arch]
  fields = {f.name for f in dataclasses.fields(cls)} - {"vocab_size", "dtype"}
  unknown = sorted(set(m) - fields)
  if unknown:
    raise UserError(f"--config.model.{unknown[0]}: not an option of the "
                    f"{arch} (valid: {', '.join(sorted(fields))}, "
                    "label_smoothing).")
  sizes = [k for k in ("num_layers", "num_heads", "width", "embed_dim",
                       "hidden") if k in m]
  base.check_sizes(config, positive=[f"model.{k}" for k in sizes],
                   nonnegative=[f"model.{k}" for k in ("decoder_layers",
                                                       "mlp_width") if k in m])
  base.check_fraction(config, "model.dropout")
  if arch == "transformer":
    if m["width"] % m["num_heads"]:
      raise UserError(f"--config.model.width={m['width']} must be divisible "
                      f"by --config.model.num_heads={m['num_heads']}.")
    if m.get("attention_impl", "") not in attention.IMPLEMENTATIONS:
      raise UserError(f"--config.model.attention_impl: '{m['attention_impl']}'"
                      " is not one of einsum, xla, cudnn ('': by backend).")
    m["attention_impl"] = m.get("attention_impl") or None
  else:
    if m["attention"] not in seq2seq_lstm.SCORES:
      raise UserError(f"--config.model.attention: '{m['attention']}' is not "
                      f"one of {', '.join(seq2seq_lstm.SCORES)}.")
    if m["hidden"] % 2:
      raise UserError(f"--config.model.hidden={m['hidden']} must be even "
                      "(the encoder's two directions share it).")
  return cls(vocab_size=vocab_size, dtype=config.train.dtype, **m)


@register("seq2seq")
class Seq2Seq(base.OneNetwork):
  """Translates token sequences: 'source' [B, S] -> 'target' [B, T]."""

  models_text = True
  translates = True

  def __init__(self, config, tokenizer=None):
    if tokenizer is None or not hasattr(tokenizer, "encode_source"):
      raise UserError(f"--config.data.name={config.data.name}: the seq2seq "
                      "family translates sentence pairs; use a translation "
                      "corpus (gettext, wmt14_translate, wmt16_translate).")
    self.arch = config.model.arch
    self.model_cfg = _model_config(config, tokenizer.vocab_size)
    self.model_parallel = self.arch == "transformer"
    self.smoothing = config.model.label_smoothing
    base.check_fraction(config, "model.label_smoothing")
    s = config.sample
    if s.beam_size < 1 or s.max_len_a < 0 or s.max_len_b < 1:
      raise UserError(f"--config.sample: beam_size must be >= 1, max_len_a "
                      f">= 0 and max_len_b >= 1 (got {s.beam_size}, "
                      f"{s.max_len_a}, {s.max_len_b}).")
    if s.length_penalty < 0:
      raise UserError(f"--config.sample.length_penalty={s.length_penalty}: "
                      "must be >= 0 (0: none; the paper's 0.6).")
    if any(b < 1 for b in config.eval.beam_sizes):
      raise UserError(f"--config.eval.beam_sizes={config.eval.beam_sizes}: "
                      "each must be >= 1 (1: greedy).")
    super().__init__(config, tokenizer)
    self._fns = {}

  def build_network(self, rngs):
    if self.arch == "transformer":
      return seq2seq.EncoderDecoder(self.model_cfg, rngs=rngs)
    return seq2seq_lstm.AttentionLSTM(self.model_cfg, rngs=rngs)

  def partition_rules(self):
    if self.arch == "transformer":
      return transformer.partition_rules(tuple(self.config.mesh.axes))
    return ()

  # --- objective -------------------------------------------------------------

  def _logits(self, network, batch, rngs=None):
    target = batch["target"]
    logits = network(batch["source"], target[:, :-1], rngs=rngs)
    labels = target[:, 1:]
    return logits, labels, (labels != seq2seq.PAD).astype(jnp.float32)

  def loss(self, network, batch, key):
    logits, labels, mask = self._logits(network, batch,
                                        nnx.Rngs(dropout=key))
    # Cross entropy against (1 - eps) one-hot + eps / V (optax's
    # smooth_labels), without building the [B, T, V] targets.
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    smoothed = (1 - self.smoothing) * nll - self.smoothing * jnp.mean(
        logp, axis=-1)
    tokens = jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(smoothed * mask) / tokens, {
        "nll": jnp.sum(nll * mask) / tokens}

  # --- evaluation --------------------------------------------------------------

  def eval_step(self, state, batch, key, final=False):
    del key, final  # exact: teacher forcing, nothing drawn
    logits, labels, mask = self._logits(self.inference_network(state), batch)
    real = (mask * batch["mask"][:, None]) > 0
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    # where, not a product: a padding row's logits need not be finite.
    return {"nll": jnp.sum(jnp.where(real, nll, 0.0)),
            "tokens": jnp.sum(real, dtype=jnp.float32),
            "correct": jnp.sum(real & correct, dtype=jnp.float32),
            "count": base.count(batch)}

  def summarize_eval(self, totals):
    loss = totals["nll"] / max(totals["tokens"], 1.0)
    return {"loss": loss, "perplexity": float(np.exp(min(loss, 700.0))),
            "token_accuracy": totals["correct"] / max(totals["tokens"], 1.0)}

  # --- decoding ----------------------------------------------------------------

  def _translate_fn(self, shape, beam: int, sharding):
    cache_key = (shape, beam, sharding)
    if cache_key not in self._fns:
      s, tok = self.config.sample, self.tokenizer
      steps = int(s.max_len_a * shape[1] + s.max_len_b)

      def fn(state, source):
        model = self.inference_network(state)
        lengths = jnp.sum(source != seq2seq.PAD, axis=1)
        limits = jnp.floor(s.max_len_a * lengths + s.max_len_b).astype(
            jnp.int32)
        memory = model.encode(source)
        b = source.shape[0]
        if beam == 1:
          start = jnp.full((b, 1), tok.bos_id, jnp.int32)
          out = decoding.generate(_Conditioned(model, memory), start,
                                  jnp.ones((b, 1), bool), jax.random.key(0),
                                  steps, temperature=0.0, eos_id=tok.eos_id)
          # A row's last allowed token is </s>.
          position = jnp.arange(steps)[None]
          out = jnp.where(position >= limits[:, None] - 1, tok.eos_id, out)
          return out
        cache = model.init_cache(memory, steps + 1)
        return beam_search.beam_search(
            model, cache, b, beam, steps, limits, tok.bos_id, tok.eos_id,
            s.length_penalty)[0]
      self._fns[cache_key] = jax.jit(fn, in_shardings=(None, sharding),
                                     out_shardings=sharding)
    return self._fns[cache_key]

  def translate(self, state, source: np.ndarray, beam_size: int,
                sharding=None) -> np.ndarray:
    """Token ids [N, steps] of the translations of `source` ids [N, S]
    (rows padded to `data.eval_batch_size` per compiled call)."""
    source = np.asarray(source, np.int32)
    n = len(source)
    width = int((source != seq2seq.PAD).sum(1).max()) if n else 1
    width = -(-max(width, 1) // _WIDTH_MULTIPLE) * _WIDTH_MULTIPLE
    source = np.pad(source[:, :width],
                    ((0, 0), (0, max(0, width - source.shape[1]))))
    rows = self.config.data.eval_batch_size
    outs = []
    for start in range(0, n, rows):
      chunk = source[start:start + rows]
      padded = np.pad(chunk, ((0, rows - len(chunk)), (0, 0)))
      padded[len(chunk):, 0] = self.tokenizer.eos_id  # a valid empty source
      fn = self._translate_fn(padded.shape, beam_size, sharding)
      if sharding is not None:  # every process holds the whole batch
        padded = jax.make_array_from_callback(
            padded.shape, sharding, lambda index, a=padded: a[index])
      outs.append(np.asarray(parallel.to_host(fn(state, padded)))[:len(chunk)])
    return np.concatenate(outs) if outs else np.zeros((0, 1), np.int32)

  def _typed(self, texts: list[str]) -> tuple[np.ndarray, list[list[str]]]:
    """Typed sentences -> (source ids [N, S], each ending in </s>; each
    sentence's placeholders)."""
    encoded = [self.tokenizer.encode_source(t) for t in texts]
    width = max(len(ids) for ids, _ in encoded) + 1
    source = np.zeros((len(texts), width), np.int32)
    for i, (ids, _) in enumerate(encoded):
      source[i, :len(ids) + 1] = list(ids) + [self.tokenizer.eos_id]
    return source, [found for _, found in encoded]

  def translate_text(self, state, texts: list[str], beam_size: int,
                     sharding=None) -> list[str]:
    """Translations of typed sentences (placeholders such as '%s' kept)."""
    source, placeholders = self._typed(texts)
    out = self.translate(state, source, beam_size, sharding)
    return [self.tokenizer.restore(self.tokenizer.decode(row), found)
            for row, found in zip(out, placeholders)]

  def _cycled_sources(self, num: int) -> list[str]:
    sources = self._sources()
    return [sources[i % len(sources)] for i in range(num)]

  def sample(self, state, key, num, labels=None, sharding=None,
             progress=None):
    """Beam-search translations of `sample.sources`, cycled over `num`."""
    del key, labels, sharding  # deterministic; batches of eval_batch_size
    out = self.translate(state, self._typed(self._cycled_sources(num))[0],
                         self.config.sample.beam_size)
    if progress is not None:
      progress(1, 1)
    return out

  def export_samples(self, samples):
    """Token ids, the sources and the translations (placeholders back)."""
    ids = np.asarray(samples)
    sources = self._cycled_sources(len(ids))
    placeholders = self._typed(sources)[1]
    return {"tokens": ids.astype(np.int32), "source": np.array(sources),
            "text": np.array([self.tokenizer.restore(self.tokenizer.decode(r),
                                                     found)
                              for r, found in zip(ids, placeholders)])}

  def _sources(self) -> list[str]:
    sources = list(self.config.sample.sources)
    if not sources:
      raise UserError("--source: give a sentence to translate (repeat the "
                      "flag for several).")
    return sources

  def visualize(self, state, batch, key):
    """Greedy and beam translations of the first held-out pairs, beside
    their references, then of `sample.sources` (typed sentences)."""
    del key
    beam = self.config.sample.beam_size
    real = batch["mask"] > 0
    num = self.config.eval.num_samples
    source, target = batch["source"][real][:num], batch["target"][real][:num]
    dec = self.tokenizer.decode
    lines = []
    if len(source):
      greedy = self.translate(state, source, 1)
      best = self.translate(state, source, beam)
      for i in range(len(source)):
        lines.append(f"===== held-out {i + 1} =====\nsource:     "
                     f"{dec(source[i])}\nreference:  {dec(target[i])}\n"
                     f"greedy:     {dec(greedy[i])}\nbeam {beam}:     "
                     f"{dec(best[i])}\n")
    texts = list(self.config.sample.sources)
    if texts:
      greedy = self.translate_text(state, texts, 1)
      best = self.translate_text(state, texts, beam)
      for i, (text, g, b) in enumerate(zip(texts, greedy, best)):
        lines.append(f"===== typed {i + 1} =====\nsource:     {text}\n"
                     f"greedy:     {g}\nbeam {beam}:     {b}\n")
    return {"samples": "\n".join(lines)}

  def attention_weights(self, state, source: np.ndarray, target: np.ndarray
                        ) -> np.ndarray:
    """What each target token attends to in the source, [B, T, S] (the
    Transformer's last decoder block, averaged over heads)."""
    fn = jax.jit(lambda st, s, t: self.inference_network(st)
                 .attention_weights(s, t))
    return np.asarray(fn(state, source, target))
