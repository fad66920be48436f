"""A decoder-only Transformer (GPT-2 layout) with a KV cache for decoding.

Pre-LayerNorm blocks: x + Attn(LN(x)), then x + MLP(LN(x)) with a GELU
(tanh form, GPT-2's); a final LayerNorm; output logits through the token
embedding (weight tying) or a separate head. Positions are learned
(GPT-2) or rotary. Parameters are float32; `dtype` is the compute dtype
(bfloat16 on accelerators), logits are returned in float32. The parameter
names follow GPT-2's modules one to one (qkv = c_attn, attn_out =
attn.c_proj, fc = mlp.c_fc, mlp_out = mlp.c_proj), so a Hugging Face
checkpoint maps onto it by name (`gen_jax.importers.gpt2`).

Two entry points:
  __call__(tokens_BT)                   the whole sequence at once (training)
  extend(tokens_BT, valid_BT, cache)    T more tokens on top of a KV cache
                                        (prompt prefill, then one per step)
Both compute the same logits for the same tokens (tested to 1e-5).
"""

import dataclasses
import math

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from gen_jax.models import attention
from gen_jax.models import lora


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  vocab_size: int = 256
  context_length: int = 256
  num_layers: int = 6
  num_heads: int = 6
  width: int = 384
  mlp_width: int = 0  # 0: 4 * width
  # On the embeddings and each residual branch (not on the attention
  # probabilities: the fused attention kernels have no dropout).
  dropout: float = 0.0
  positions: str = "learned"  # 'learned' | 'rotary'
  rotary_base: float = 10000.0
  tie_embeddings: bool = True
  use_bias: bool = True
  layer_norm_eps: float = 1e-5
  dtype: str = "float32"  # compute dtype
  remat: bool = False  # recompute each block's activations in the backward
  lora_rank: int = 0  # > 0: adapters on qkv, attn_out, fc, mlp_out
  lora_alpha: float = 0.0  # adapter scale alpha / r (0: alpha = r)
  attention_impl: str | None = None  # None | 'einsum' | 'xla' | 'cudnn'

  @property
  def head_dim(self) -> int:
    return self.width // self.num_heads

  @property
  def hidden(self) -> int:
    return self.mlp_width or 4 * self.width

  def num_params(self) -> int:
    """Parameter count (adapters excluded), without building the model."""
    d, h, v, L = self.width, self.hidden, self.vocab_size, self.num_layers
    b = 1 if self.use_bias else 0
    ln = 2 * d if self.use_bias else d
    block = (2 * ln + d * 3 * d + 3 * d * b + d * d + d * b + d * h + h * b
             + h * d + d * b)
    pos = self.context_length * d if self.positions == "learned" else 0
    head = 0 if self.tie_embeddings else d * v
    return v * d + pos + L * block + ln + head


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for S slots, filled left to right."""
  k: tuple[jax.Array, ...]  # per layer [B, S, N, H]
  v: tuple[jax.Array, ...]  # per layer [B, S, N, H]
  valid: jax.Array  # [B, S] slot holds a real (not padding) token
  index: jax.Array  # [] the next slot to write
  length: jax.Array  # [B] real tokens so far = the next token's position

  @classmethod
  def empty(cls, batch_size: int, num_slots: int, num_layers: int,
            num_heads: int, head_dim: int, dtype) -> "KVCache":
    shape = (batch_size, num_slots, num_heads, head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(num_layers))
    return cls(k=zeros, v=zeros, valid=jnp.zeros((batch_size, num_slots), bool),
               index=jnp.zeros((), jnp.int32),
               length=jnp.zeros((batch_size,), jnp.int32))

  def slots_for(self, valid_BT: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """For T more tokens (False: padding): their positions [B, T], the
    slots' validity with theirs written [B, S], and the attention mask
    [B, T, S] of their queries."""
    positions = self.length[:, None] + jnp.cumsum(valid_BT, axis=1) - 1
    valid = jax.lax.dynamic_update_slice(self.valid, valid_BT,
                                         (0, self.index))
    return (jnp.maximum(positions, 0), valid,
            attention.cache_mask(valid, self.index, valid_BT.shape[1]))

  def advanced(self, ks, vs, valid: jax.Array, valid_BT: jax.Array
               ) -> "KVCache":
    """The cache after writing T tokens: every layer's keys and values, the
    slots' validity from `slots_for`."""
    return KVCache(k=tuple(ks), v=tuple(vs), valid=valid,
                   index=self.index + valid_BT.shape[1],
                   length=self.length + jnp.sum(valid_BT, axis=1,
                                                dtype=jnp.int32))


def _layer_norm(cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(cfg.width, epsilon=cfg.layer_norm_eps,
                       use_bias=cfg.use_bias, dtype=cfg.dtype, rngs=rngs)


class Block(nnx.Module):
  """x + Attn(LN(x)); x + MLP(LN(x))."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d = cfg.width
    # GPT-2's init: N(0, 0.02), the residual projections scaled down by
    # sqrt(2 L) so the residual stream's variance does not grow with depth.
    out_std = 0.02 / math.sqrt(2 * cfg.num_layers)
    dense = lambda i, o, std: lora.Dense(
        i, o, use_bias=cfg.use_bias, init_std=std, lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha, dtype=cfg.dtype, rngs=rngs)
    self.ln1 = _layer_norm(cfg, rngs)
    self.qkv = dense(d, 3 * d, 0.02)
    self.attn_out = dense(d, d, out_std)
    self.ln2 = _layer_norm(cfg, rngs)
    self.fc = dense(d, cfg.hidden, 0.02)
    self.mlp_out = dense(cfg.hidden, d, out_std)
    self.dropout = nnx.Dropout(cfg.dropout)

  def __call__(self, x_BTD, positions_BT, kv=None, rngs=None, mask_BTS=None):
    """kv: None (self-attention over x: causal, or where `mask_BTS` allows)
    or (k_cache, v_cache, index, mask_BTS); returns (x, (k_cache, v_cache)
    or None)."""
    x_BTD, new_kv = self.self_attention(x_BTD, positions_BT, kv, rngs,
                                        mask_BTS)
    return self.mlp(x_BTD, rngs), new_kv

  def self_attention(self, x_BTD, positions_BT, kv=None, rngs=None,
                     mask_BTS=None):
    """The residual attention branch: x + Attn(LN(x)) (see `__call__`)."""
    cfg = self.cfg
    b, t, d = x_BTD.shape
    # jnp.split, not indexing: its gradient is one concatenation, where
    # three slices would each be padded back to [B, T, 3D] and summed.
    q, k, v = (part.reshape(b, t, cfg.num_heads, cfg.head_dim)  # [B, T, N, H]
               for part in jnp.split(self.qkv(self.ln1(x_BTD)), 3, axis=-1))
    if cfg.positions == "rotary":
      q = attention.rotary(q, positions_BT, cfg.rotary_base)
      k = attention.rotary(k, positions_BT, cfg.rotary_base)
    mask, new_kv = mask_BTS, None
    if kv is not None:
      k_cache, v_cache, index, mask = kv
      k_cache = jax.lax.dynamic_update_slice(
          k_cache, k.astype(k_cache.dtype), (0, index, 0, 0))
      v_cache = jax.lax.dynamic_update_slice(
          v_cache, v.astype(v_cache.dtype), (0, index, 0, 0))
      k, v, new_kv = k_cache, v_cache, (k_cache, v_cache)
    a = attention.attention(q, k.astype(q.dtype), v.astype(q.dtype), mask,
                            cfg.attention_impl).reshape(b, t, d)
    x_BTD = x_BTD + self.dropout(self.attn_out(a), rngs=rngs,
                                 deterministic=rngs is None)
    return x_BTD, new_kv

  def mlp(self, x_BTD, rngs=None):
    """The residual MLP branch: x + MLP(LN(x))."""
    h = jax.nn.gelu(self.fc(self.ln2(x_BTD)), approximate=True)
    return x_BTD + self.dropout(self.mlp_out(h), rngs=rngs,
                                deterministic=rngs is None)


class Transformer(nnx.Module):
  """Tokens [B, T] -> next-token logits [B, T, V] (float32)."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    if cfg.width % cfg.num_heads:
      raise ValueError(f"width {cfg.width} is not divisible by num_heads "
                       f"{cfg.num_heads}.")
    self.cfg = cfg
    self.embed = nnx.Param(0.02 * jax.random.normal(
        rngs.params(), (cfg.vocab_size, cfg.width)))
    self.pos_embed = (nnx.Param(0.01 * jax.random.normal(
        rngs.params(), (cfg.context_length, cfg.width)))
                      if cfg.positions == "learned" else None)
    self.dropout = nnx.Dropout(cfg.dropout)
    self.blocks = nnx.List([Block(cfg, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.ln_f = _layer_norm(cfg, rngs)
    self.head = (None if cfg.tie_embeddings else lora.Dense(
        cfg.width, cfg.vocab_size, use_bias=False, dtype=cfg.dtype,
        rngs=rngs))

  def _embed(self, tokens_BT, positions_BT, rngs):
    x = self.embed[...][tokens_BT]
    if self.pos_embed is not None:
      x = x + self.pos_embed[...][positions_BT]
    return self.dropout(x.astype(self.cfg.dtype), rngs=rngs,
                        deterministic=rngs is None)

  def _logits(self, x_BTD):
    x = self.ln_f(x_BTD)
    if self.head is not None:
      return self.head(x).astype(jnp.float32)
    return (x @ self.embed[...].astype(x.dtype).T).astype(jnp.float32)

  def __call__(self, tokens_BT: jax.Array, rngs: nnx.Rngs | None = None
               ) -> jax.Array:
    """Logits for every position; dropout is active iff `rngs` is given."""
    return self.from_embeddings(self.embed_tokens(tokens_BT, rngs), rngs)

  def embed_tokens(self, tokens_BT: jax.Array, rngs: nnx.Rngs | None = None
                   ) -> jax.Array:
    """Token (+ learned position) embeddings [B, T, D] of a whole sequence."""
    b, t = tokens_BT.shape
    self._check_length(t)
    return self._embed(tokens_BT, jnp.broadcast_to(jnp.arange(t), (b, t)),
                       rngs)

  def from_embeddings(self, x_BTD: jax.Array, rngs: nnx.Rngs | None = None
                      ) -> jax.Array:
    """The blocks and the head over `embed_tokens`' output -> logits."""
    b, t, _ = x_BTD.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = x_BTD

    def run(block, x, positions, rngs):
      return block(x, positions, rngs=rngs)[0]
    if self.cfg.remat:
      run = nnx.remat(run)
    for block in self.blocks:
      x = run(block, x, positions, rngs)
    return self._logits(x)

  # --- decoding with a KV cache -------------------------------------------

  def _check_length(self, length: int) -> None:
    if self.pos_embed is not None and length > self.cfg.context_length:
      raise ValueError(f"{length} positions exceed the learned position "
                       f"embeddings' context length {self.cfg.context_length}.")

  def init_cache(self, batch_size: int, num_slots: int) -> KVCache:
    self._check_length(num_slots)
    return KVCache.empty(batch_size, num_slots, self.cfg.num_layers,
                         self.cfg.num_heads, self.cfg.head_dim, self.cfg.dtype)

  def extend(self, tokens_BT: jax.Array, valid_BT: jax.Array,
             cache: KVCache) -> tuple[jax.Array, KVCache]:
    """Runs T more tokens on top of the cache (no dropout).

    Args:
      tokens_BT: the next tokens of each row.
      valid_BT: False marks padding (left-padded prompts of different
        lengths): a padding token takes a slot that no one attends to and
        does not advance the row's positions.
      cache: from `init_cache` or a previous `extend`.

    Returns:
      logits [B, T, V] (float32) and the updated cache.
    """
    positions, valid, mask = cache.slots_for(valid_BT)
    x = self._embed(tokens_BT, positions, None)
    ks, vs = [], []
    for block, k, v in zip(self.blocks, cache.k, cache.v):
      x, (k, v) = block(x, positions, kv=(k, v, cache.index, mask))
      ks.append(k)
      vs.append(v)
    cache = cache.advanced(ks, vs, valid, valid_BT)
    return self._logits(x), cache


def partition_rules(axes: tuple[str, ...]) -> tuple[tuple[str, P], ...]:
  """Where each parameter (and its optimizer moments) lies on the mesh.

  'fsdp' shards every matrix along its model-width dimension (ZeRO-3 style:
  the compiler gathers a layer's weights where they are used); 'model'
  shards the attention heads and the MLP's hidden units (Megatron style:
  qkv and fc by output, attn_out and mlp_out by input). Axes missing from
  the mesh are left out (a rule left with none is dropped, and the default
  layout of `gen_jax.parallel.fsdp_spec` applies), so the same rules serve
  data-only, fsdp-only and 2-D meshes.
  """
  fsdp = "fsdp" if "fsdp" in axes else None
  model = "model" if "model" in axes else None
  rules = (
      (r"(qkv|fc|cross_q|cross_kv)/kernel", P(fsdp, model)),
      (r"(qkv|fc|cross_q|cross_kv)/bias", P(model)),
      (r"(attn_out|mlp_out|cross_out)/kernel", P(model, fsdp)),
      (r"(qkv|fc)/lora_b", P(None, model)),
      (r"(attn_out|mlp_out)/lora_a", P(model, None)),
      (r"(^|/)(embed|pos_embed|source_embed)/", P(None, fsdp)),
      (r"head/kernel", P(fsdp, None)),
  )
  # A rule naming no axis of this mesh leaves the leaf to the default layout.
  return tuple((pattern, spec) for pattern, spec in rules
               if any(a is not None for a in spec))
