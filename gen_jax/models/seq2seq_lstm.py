"""An RNN encoder-decoder with attention (Bahdanau et al. 2015; Luong et
al. 2015), the recurrent baseline of translation.

Encoder: embeddings, then `num_layers` bidirectional LSTM layers (forward
and backward halves of `hidden` / 2 units each, concatenated; the backward
pass of each row starts at its last real token, so padding never enters).
Decoder: `num_layers` stacked LSTM cells fed [embedding of the previous
token; the previous attentional vector] (Luong's input feeding), then
attention over the encoder outputs with source padding masked:
  'additive'        score(h, m) = v . tanh(W_q h + W_k m)   (Bahdanau)
  'multiplicative'  score(h, m) = h . (W_k m)               (Luong "general")
context c = softmax(scores) . m, attentional vector a = tanh(W_c [c; h]),
logits = a W_o.
The decoder starts from zero states: the attention carries the source.

Same entry points as `seq2seq.EncoderDecoder`: __call__, encode,
init_cache (the attention keys W_k m computed once), extend, and
attention_weights.
"""

import dataclasses

import flax
from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import lora

PAD = 0
SCORES = ("additive", "multiplicative")


@dataclasses.dataclass(frozen=True)
class AttentionLSTMConfig:
  vocab_size: int = 8000
  embed_dim: int = 256
  hidden: int = 512  # decoder units; the encoder's two directions sum to it
  num_layers: int = 2  # encoder and decoder layers
  attention: str = "additive"  # 'additive' | 'multiplicative'
  dropout: float = 0.1  # embeddings, between layers, attentional vector
  share_embeddings: bool = True  # one source / target embedding table
  dtype: str = "float32"


@flax.struct.dataclass
class LSTMCache:
  layers: tuple[tuple[jax.Array, jax.Array], ...]  # per layer (c, h) [B, H]
  feed: jax.Array  # [B, H] the last attentional vector
  memory: jax.Array  # [B, S, H] encoder outputs
  keys: jax.Array  # [B, S, H] W_k memory
  source_valid: jax.Array  # [B, S]


class AttentionLSTM(nnx.Module):
  """source [B, S], target [B, T] -> next-target-token logits [B, T, V]."""

  def __init__(self, cfg: AttentionLSTMConfig, *, rngs: nnx.Rngs):
    if cfg.attention not in SCORES:
      raise ValueError(f"attention '{cfg.attention}' is not one of "
                       f"{', '.join(SCORES)}.")
    if cfg.hidden % 2:
      raise ValueError(f"hidden {cfg.hidden} must be even (two directions).")
    self.cfg = cfg
    h, e = cfg.hidden, cfg.embed_dim
    table = lambda: nnx.Param(jax.random.normal(rngs.params(),
                                                (cfg.vocab_size, e)))
    self.embed = table()
    self.source_embed = None if cfg.share_embeddings else table()
    cell = lambda i, o: nnx.OptimizedLSTMCell(i, o, dtype=cfg.dtype,
                                              rngs=rngs)
    sizes = [e] + [h] * (cfg.num_layers - 1)
    self.forward = nnx.List([nnx.RNN(cell(i, h // 2), rngs=False)
                             for i in sizes])
    self.backward = nnx.List([nnx.RNN(cell(i, h // 2), reverse=True,
                                      keep_order=True, rngs=False)
                              for i in sizes])
    self.cells = nnx.List([cell(e + h if i == 0 else h, h)
                           for i in range(cfg.num_layers)])
    dense = lambda i, o, bias=True: lora.Dense(
        i, o, use_bias=bias, init_std=i ** -0.5, dtype=cfg.dtype, rngs=rngs)
    self.key_proj = dense(h, h, bias=False)
    self.query_proj = (dense(h, h) if cfg.attention == "additive" else None)
    self.score_v = (nnx.Param(h ** -0.5 * jax.random.normal(rngs.params(),
                                                            (h,)))
                    if cfg.attention == "additive" else None)
    self.combine = dense(2 * h, h, bias=False)
    self.head = dense(h, cfg.vocab_size)
    self.dropout = nnx.Dropout(cfg.dropout)

  def _drop(self, x, rngs):
    return self.dropout(x, rngs=rngs, deterministic=rngs is None)

  def encode(self, source_BS: jax.Array, rngs: nnx.Rngs | None = None):
    """(encoder outputs [B, S, hidden], source_valid [B, S])."""
    valid = source_BS != PAD
    lengths = jnp.sum(valid, axis=1, dtype=jnp.int32)
    table = self.embed if self.source_embed is None else self.source_embed
    x = self._drop(table[...][source_BS].astype(self.cfg.dtype), rngs)
    zeros = jnp.zeros((x.shape[0], self.cfg.hidden // 2), self.cfg.dtype)
    for i, (fwd, bwd) in enumerate(zip(self.forward, self.backward)):
      if i:
        x = self._drop(x, rngs)
      x = jnp.concatenate(
          [rnn(x, initial_carry=(zeros, zeros), seq_lengths=lengths)
           for rnn in (fwd, bwd)], axis=-1)
    return jnp.where(valid[..., None], x, 0).astype(self.cfg.dtype), valid

  def init_cache(self, memory, num_slots: int = 0) -> LSTMCache:
    """Zero decoder states over `encode`'s output (num_slots: unused, the
    state does not grow)."""
    del num_slots
    x, valid = memory
    b, _, h = x.shape
    zeros = jnp.zeros((b, h), self.cfg.dtype)
    return LSTMCache(layers=tuple((zeros, zeros) for _ in self.cells),
                     feed=zeros, memory=x, keys=self.key_proj(x),
                     source_valid=valid)

  def _attend(self, h_BH, cache: LSTMCache):
    if self.query_proj is not None:
      hidden = jnp.tanh(cache.keys + self.query_proj(h_BH)[:, None])
      scores = hidden @ self.score_v[...].astype(hidden.dtype)
    else:
      scores = jnp.einsum("bh,bsh->bs", h_BH, cache.keys)
    # Finite: a row with no real token (eval padding) stays finite.
    scores = jnp.where(cache.source_valid, scores.astype(jnp.float32), -1e9)
    weights = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bs,bsh->bh", weights.astype(cache.memory.dtype),
                         cache.memory)
    return context, weights

  def _steps(self, tokens_BT, valid_BT, cache: LSTMCache, rngs):
    """Runs the decoder over T tokens -> (attentional vectors [B, T, H],
    attention weights [B, T, S], the new cache). Dropout iff `rngs`."""
    x = self._drop(self.embed[...][tokens_BT].astype(self.cfg.dtype), rngs)
    num = len(self.cells)
    train = rngs is not None
    # One key per step and dropout site (unused without dropout).
    keys = jax.random.split(rngs.dropout() if train else jax.random.key(0),
                            (x.shape[1], num + 1))

    def step(carry, inputs):
      layers, feed = carry
      x_t, valid_t, key_t = inputs
      inp = jnp.concatenate([x_t, feed], axis=-1)
      new_layers = []
      for i, (cell, state) in enumerate(zip(self.cells, layers)):
        if i and train:
          inp = self._drop(inp, nnx.Rngs(dropout=key_t[i]))
        state, inp = cell(state, inp)
        new_layers.append(state)
      context, weights = self._attend(inp, cache)
      a = jnp.tanh(self.combine(jnp.concatenate([context, inp], axis=-1)))
      keep = valid_t[:, None]
      new_layers = jax.tree.map(lambda n, o: jnp.where(keep, n, o),
                                tuple(new_layers), layers)
      new_feed = jnp.where(keep, a, feed)
      if train:
        a = self._drop(a, nnx.Rngs(dropout=key_t[num]))
      return (new_layers, new_feed), (a, weights)

    (layers, feed), (a_TBH, w_TBS) = jax.lax.scan(
        step, (cache.layers, cache.feed),
        (x.swapaxes(0, 1), valid_BT.swapaxes(0, 1), keys))
    return (a_TBH.swapaxes(0, 1), w_TBS.swapaxes(0, 1),
            cache.replace(layers=layers, feed=feed))

  def attention_weights(self, source_BS: jax.Array, target_BT: jax.Array
                        ) -> jax.Array:
    """Teacher-forced attention [B, T, S] of each target step over the
    source."""
    cache = self.init_cache(self.encode(source_BS))
    return self._steps(target_BT, jnp.ones(target_BT.shape, bool), cache,
                       None)[1]

  def __call__(self, source_BS: jax.Array, target_BT: jax.Array,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Teacher-forced logits [B, T, V]; dropout iff `rngs`."""
    cache = self.init_cache(self.encode(source_BS, rngs))
    a = self._steps(target_BT, jnp.ones(target_BT.shape, bool), cache,
                    rngs)[0]
    return self.head(a).astype(jnp.float32)

  def extend(self, tokens_BT: jax.Array, valid_BT: jax.Array,
             cache: LSTMCache) -> tuple[jax.Array, LSTMCache]:
    """T more target tokens (no dropout) -> (logits [B, T, V], cache)."""
    a, _, cache = self._steps(tokens_BT, valid_BT, cache, None)
    return self.head(a).astype(jnp.float32), cache
