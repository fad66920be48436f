"""Text conditioning for denoisers: a small Transformer text encoder over
bytes and the cross-attention that lets image features read its output
(Rombach et al. 2022; the DiT variant as in PixArt-alpha, Chen et al. 2023).

Captions are byte ids [B, L]: id 1 (BOS) first, then bytes + 2, then
padding 0 (`data/captions.py`). The encoder is bidirectional with padding
masked from every key; the empty caption (BOS alone) is the unconditional
input of classifier-free guidance. Cross-attention masks the padding too,
so a caption's output never depends on what its padding holds or on how
long it is padded.
"""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp



PAD = 0


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
  vocab_size: int = 258  # bytes + 2 (pad, BOS)
  max_length: int = 48
  width: int = 128
  depth: int = 2
  num_heads: int = 4
  dtype: str = "float32"


def masked_attention(q_BTNH, k_BSNH, v_BSNH, key_mask_BS) -> jax.Array:
  """Softmax attention of every query over the keys where `key_mask_BS`
  is True -> [B, T, N, H] (each row must keep at least one key)."""
  logits = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BSNH).astype(jnp.float32)
  logits = logits / math.sqrt(q_BTNH.shape[-1])
  logits = jnp.where(key_mask_BS[:, None, None, :], logits, -jnp.inf)
  probs = jax.nn.softmax(logits, axis=-1).astype(v_BSNH.dtype)
  return jnp.einsum("bnts,bsnh->btnh", probs, v_BSNH)


class CrossAttention(nnx.Module):
  """x + W_o attn(q = LN(x) W_q, k, v = context W_k, W_v); zero-initialized
  output, so a fresh block is the identity."""

  def __init__(self, dim: int, context_dim: int, num_heads: int, dtype, *,
               rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"cross-attention width {dim} is not divisible by "
                       f"{num_heads} heads.")
    self.num_heads = num_heads
    self.norm = nnx.LayerNorm(dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
    self.q = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)
    self.kv = nnx.Linear(context_dim, 2 * dim, dtype=dtype, rngs=rngs)
    self.out = nnx.Linear(dim, dim, kernel_init=nnx.initializers.zeros,
                          dtype=dtype, rngs=rngs)

  def __call__(self, x_BTD, context_BSE, mask_BS):
    b, t, d = x_BTD.shape
    n = self.num_heads
    q = self.q(self.norm(x_BTD)).reshape(b, t, n, d // n)
    k, v = jnp.split(self.kv(context_BSE), 2, axis=-1)
    s = context_BSE.shape[1]
    out = masked_attention(q, k.reshape(b, s, n, d // n),
                           v.reshape(b, s, n, d // n), mask_BS)
    return x_BTD + self.out(out.reshape(b, t, d))


class EncoderBlock(nnx.Module):
  """Pre-LN bidirectional self-attention and MLP over the caption."""

  def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs):
    d, dtype = cfg.width, jnp.dtype(cfg.dtype)
    self.num_heads = cfg.num_heads
    self.norm1 = nnx.LayerNorm(d, dtype=dtype, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, dtype=dtype, rngs=rngs)
    self.attn_out = nnx.Linear(d, d, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d, dtype=dtype, rngs=rngs)
    self.fc = nnx.Linear(d, 4 * d, dtype=dtype, rngs=rngs)
    self.mlp_out = nnx.Linear(4 * d, d, dtype=dtype, rngs=rngs)

  def __call__(self, x_BLD, mask_BL):
    b, length, d = x_BLD.shape
    n = self.num_heads
    q, k, v = (p.reshape(b, length, n, d // n)
               for p in jnp.split(self.qkv(self.norm1(x_BLD)), 3, axis=-1))
    a = masked_attention(q, k, v, mask_BL).reshape(b, length, d)
    x_BLD = x_BLD + self.attn_out(a)
    return x_BLD + self.mlp_out(jax.nn.gelu(self.fc(self.norm2(x_BLD))))


class TextEncoder(nnx.Module):
  """Byte ids [B, L] -> (features [B, L, width], mask [B, L])."""

  def __init__(self, cfg: TextEncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = nnx.Embed(cfg.vocab_size, cfg.width,
                           embedding_init=nnx.initializers.normal(0.02),
                           rngs=rngs)
    self.pos = nnx.Param(0.01 * jax.random.normal(
        rngs.params(), (cfg.max_length, cfg.width)))
    self.blocks = nnx.List([EncoderBlock(cfg, rngs=rngs)
                            for _ in range(cfg.depth)])
    self.norm = nnx.LayerNorm(cfg.width, dtype=jnp.dtype(cfg.dtype),
                              rngs=rngs)

  def __call__(self, ids_BL: jax.Array) -> tuple[jax.Array, jax.Array]:
    length = ids_BL.shape[1]
    if length > self.cfg.max_length:
      raise ValueError(f"captions of {length} ids exceed the text encoder's "
                       f"max_length {self.cfg.max_length}.")
    mask = ids_BL != PAD
    x = self.embed(ids_BL) + self.pos[...][:length][None]
    x = x.astype(jnp.dtype(self.cfg.dtype))
    for block in self.blocks:
      x = block(x, mask)
    return self.norm(x), mask


class TextConditioned(nnx.Module):
  """A denoiser whose condition is a caption: (x, t, ids [B, L]) -> the
  denoiser's output with `context` from the text encoder."""

  def __init__(self, denoiser: nnx.Module, encoder: TextEncoder):
    self.denoiser = denoiser
    self.text = encoder

  def __call__(self, x, t_B, ids_BL, dropout_key=None):
    context, mask = self.text(ids_BL)
    return self.denoiser(x, t_B, None, dropout_key=dropout_key,
                         context=context, context_mask=mask)
