"""An encoder-decoder Transformer for translation (Vaswani et al. 2017).

Encoder: token embedding x sqrt(width) + sinusoidal positions, then blocks
of bidirectional self-attention and an MLP (the decoder-only model's
`transformer.Block`, with source padding masked out of the keys), then a
final LayerNorm. Decoder: the same embedding, then blocks of causal
self-attention, cross-attention over the encoder output (source padding
masked) and an MLP, a final LayerNorm, and logits through the target
embedding (tied) or a separate head. Blocks are pre-LayerNorm (the
tensor2tensor default since 2018, stable without a long warm-up); the
paper's are post-LayerNorm. Dropout on the embeddings and every residual
branch, as in the paper (not on the attention probabilities).

Entry points, shared with the attention LSTM (`seq2seq_lstm`) so decoding
and the family never ask which one they hold:
  __call__(source_BS, target_BT)  teacher-forced logits [B, T, V] (training)
  encode(source_BS)               the encoder's output (a "memory")
  init_cache(memory, slots)       a decoding cache; the cross-attention keys
                                  and values are computed here, once
  extend(tokens, valid, cache)    T more target tokens on top of the cache
  attention_weights(source, target)  what each target step attends to
Token id 0 is padding on both sides.
"""

import dataclasses
import math

import flax
from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import attention
from gen_jax.models import lora
from gen_jax.models import transformer

PAD = 0


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
  vocab_size: int = 8000  # shared by source and target
  num_layers: int = 6  # encoder blocks
  decoder_layers: int = 0  # 0: num_layers
  num_heads: int = 8
  width: int = 512
  mlp_width: int = 0  # 0: 4 * width
  dropout: float = 0.1
  # One embedding for source, target and output (the paper's shared
  # vocabulary); False: a source embedding, and a target one tied to the
  # output.
  share_embeddings: bool = True
  dtype: str = "float32"
  attention_impl: str | None = None

  @property
  def num_decoder_layers(self) -> int:
    return self.decoder_layers or self.num_layers

  def block_config(self, layers: int) -> transformer.TransformerConfig:
    return transformer.TransformerConfig(
        vocab_size=self.vocab_size, num_layers=layers,
        num_heads=self.num_heads, width=self.width, mlp_width=self.mlp_width,
        dropout=self.dropout, dtype=self.dtype,
        attention_impl=self.attention_impl)


@flax.struct.dataclass
class DecoderCache:
  self_kv: transformer.KVCache
  cross_k: tuple[jax.Array, ...]  # per layer [B, S, N, H]
  cross_v: tuple[jax.Array, ...]
  source_valid: jax.Array  # [B, S]


def sinusoid(positions_BT: jax.Array, width: int) -> jax.Array:
  """The paper's positions: sin(p / 10000^(2i/d)) in the first half of the
  features, cos in the second -> [B, T, width] float32."""
  half = width // 2
  freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
  angle = positions_BT[..., None].astype(jnp.float32) * freqs[None, None]
  out = jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)
  return jnp.pad(out, ((0, 0), (0, 0), (0, width - 2 * half)))


class DecoderBlock(transformer.Block):
  """x + SelfAttn(LN(x)); x + CrossAttn(LN(x), memory); x + MLP(LN(x))."""

  def __init__(self, cfg: transformer.TransformerConfig, *, rngs: nnx.Rngs):
    super().__init__(cfg, rngs=rngs)
    d = cfg.width
    dense = lambda i, o, std: lora.Dense(i, o, init_std=std, dtype=cfg.dtype,
                                         rngs=rngs)
    self.ln_cross = nnx.LayerNorm(d, epsilon=cfg.layer_norm_eps,
                                  dtype=cfg.dtype, rngs=rngs)
    self.cross_q = dense(d, d, 0.02)
    self.cross_kv = dense(d, 2 * d, 0.02)
    self.cross_out = dense(d, d, 0.02 / math.sqrt(2 * cfg.num_layers))

  def memory_kv(self, memory_BSD):
    """Cross-attention keys and values of the encoder output, [B, S, N, H]."""
    b, s, _ = memory_BSD.shape
    k, v = jnp.split(self.cross_kv(memory_BSD), 2, axis=-1)
    shape = (b, s, self.cfg.num_heads, self.cfg.head_dim)
    return k.reshape(shape), v.reshape(shape)

  def _cross_inputs(self, x_BTD, source_valid_BS):
    b, t, _ = x_BTD.shape
    q = self.cross_q(self.ln_cross(x_BTD)).reshape(
        b, t, self.cfg.num_heads, self.cfg.head_dim)
    mask = jnp.broadcast_to(source_valid_BS[:, None, :],
                            (b, t, source_valid_BS.shape[1]))
    return q, mask

  def cross_weights(self, x_BTD, memory_kv, source_valid_BS):
    """The cross-attention probabilities [B, N, T, S] of this block's
    input."""
    q, mask = self._cross_inputs(x_BTD, source_valid_BS)
    logits = jnp.einsum("btnh,bsnh->bnts", q, memory_kv[0].astype(q.dtype),
                        preferred_element_type=jnp.float32)
    logits = jnp.where(mask[:, None], logits / math.sqrt(q.shape[-1]),
                       -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)

  def __call__(self, x_BTD, positions_BT, memory_kv, source_valid_BS,
               kv=None, rngs=None):
    x_BTD, new_kv = self.self_attention(x_BTD, positions_BT, kv, rngs)
    b, t, d = x_BTD.shape
    q, mask = self._cross_inputs(x_BTD, source_valid_BS)
    k, v = memory_kv
    a = attention.attention(q, k.astype(q.dtype), v.astype(q.dtype), mask,
                            self.cfg.attention_impl).reshape(b, t, d)
    x_BTD = x_BTD + self.dropout(self.cross_out(a), rngs=rngs,
                                 deterministic=rngs is None)
    return self.mlp(x_BTD, rngs), new_kv


class EncoderDecoder(nnx.Module):
  """source [B, S], target [B, T] -> next-target-token logits [B, T, V]."""

  def __init__(self, cfg: Seq2SeqConfig, *, rngs: nnx.Rngs):
    if cfg.width % cfg.num_heads:
      raise ValueError(f"width {cfg.width} is not divisible by num_heads "
                       f"{cfg.num_heads}.")
    self.cfg = cfg
    embed = lambda: nnx.Param(cfg.width ** -0.5 * jax.random.normal(
        rngs.params(), (cfg.vocab_size, cfg.width)))
    self.embed = embed()
    self.source_embed = None if cfg.share_embeddings else embed()
    self.dropout = nnx.Dropout(cfg.dropout)
    enc = cfg.block_config(cfg.num_layers)
    dec = cfg.block_config(cfg.num_decoder_layers)
    self.encoder = nnx.List([transformer.Block(enc, rngs=rngs)
                             for _ in range(cfg.num_layers)])
    self.decoder = nnx.List([DecoderBlock(dec, rngs=rngs)
                             for _ in range(cfg.num_decoder_layers)])
    norm = lambda: nnx.LayerNorm(cfg.width, dtype=cfg.dtype, rngs=rngs)
    self.ln_enc, self.ln_dec = norm(), norm()

  def _embed(self, table, tokens_BT, positions_BT, rngs):
    x = table[...][tokens_BT] * math.sqrt(self.cfg.width)
    x = x + sinusoid(positions_BT, self.cfg.width)
    return self.dropout(x.astype(self.cfg.dtype), rngs=rngs,
                        deterministic=rngs is None)

  def encode(self, source_BS: jax.Array, rngs: nnx.Rngs | None = None):
    """(encoder output [B, S, D], source_valid [B, S])."""
    b, s = source_BS.shape
    valid = source_BS != PAD
    table = self.embed if self.source_embed is None else self.source_embed
    x = self._embed(table, source_BS, jnp.broadcast_to(jnp.arange(s), (b, s)),
                    rngs)
    mask = jnp.broadcast_to(valid[:, None, :], (b, s, s))  # keys: real only
    for block in self.encoder:
      x = block(x, None, rngs=rngs, mask_BTS=mask)[0]
    return self.ln_enc(x), valid

  def _logits(self, x_BTD):
    x = self.ln_dec(x_BTD)
    return (x @ self.embed[...].astype(x.dtype).T).astype(jnp.float32)

  def __call__(self, source_BS: jax.Array, target_BT: jax.Array,
               rngs: nnx.Rngs | None = None) -> jax.Array:
    """Teacher forcing: logits of target[t + 1] given target[:t + 1]
    (causal; right padding of the target is never attended to by a real
    position). Dropout iff `rngs`."""
    memory, valid = self.encode(source_BS, rngs)
    b, t = target_BT.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = self._embed(self.embed, target_BT, positions, rngs)
    for block in self.decoder:
      x = block(x, positions, block.memory_kv(memory), valid, rngs=rngs)[0]
    return self._logits(x)

  def attention_weights(self, source_BS: jax.Array, target_BT: jax.Array
                        ) -> jax.Array:
    """Teacher-forced cross-attention [B, T, S] of the last decoder block,
    averaged over heads."""
    memory, valid = self.encode(source_BS)
    b, t = target_BT.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = self._embed(self.embed, target_BT, positions, None)
    for block in self.decoder[:-1]:
      x = block(x, positions, block.memory_kv(memory), valid)[0]
    last = self.decoder[-1]
    x = last.self_attention(x, positions)[0]
    return jnp.mean(last.cross_weights(x, last.memory_kv(memory), valid),
                    axis=1)

  def init_cache(self, memory, num_slots: int) -> DecoderCache:
    """A decoding cache of `num_slots` target tokens for `encode`'s output;
    each layer's cross-attention keys and values, computed once."""
    x, valid = memory
    cfg = self.cfg
    self_kv = transformer.KVCache.empty(
        x.shape[0], num_slots, len(self.decoder), cfg.num_heads,
        cfg.width // cfg.num_heads, cfg.dtype)
    kvs = [block.memory_kv(x) for block in self.decoder]
    return DecoderCache(self_kv=self_kv, cross_k=tuple(k for k, _ in kvs),
                        cross_v=tuple(v for _, v in kvs), source_valid=valid)

  def extend(self, tokens_BT: jax.Array, valid_BT: jax.Array,
             cache: DecoderCache) -> tuple[jax.Array, DecoderCache]:
    """T more target tokens (no dropout) -> (logits [B, T, V], cache)."""
    c = cache.self_kv
    positions, valid, mask = c.slots_for(valid_BT)
    x = self._embed(self.embed, tokens_BT, positions, None)
    ks, vs = [], []
    for block, k, v, ck, cv in zip(self.decoder, c.k, c.v, cache.cross_k,
                                   cache.cross_v):
      x, (k, v) = block(x, positions, (ck, cv), cache.source_valid,
                        kv=(k, v, c.index, mask))
      ks.append(k)
      vs.append(v)
    return self._logits(x), cache.replace(
        self_kv=c.advanced(ks, vs, valid, valid_BT))
