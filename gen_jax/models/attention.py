"""Multi-head attention as pure functions, and rotary position embeddings.

`attention` is a thin layer over `jax.nn.dot_product_attention`, so the
backend picks its fused kernel (cuDNN flash attention on recent NVIDIA GPUs
for the causal training case, XLA elsewhere). Two cases:

* training / a full forward pass: queries and keys are the same positions;
  the causal mask is implied (`is_causal=True`), nothing is materialized;
* decoding with a KV cache: T new queries at cache slots index..index+T-1
  attend to all S cache slots; an explicit [B, T, S] mask hides later slots
  and empty or padding slots.
"""

import jax
import jax.numpy as jnp


def attention(q_BTNH: jax.Array, k_BSNH: jax.Array, v_BSNH: jax.Array,
              mask_BTS: jax.Array | None = None,
              implementation: str | None = None) -> jax.Array:
  """Softmax(q k^T / sqrt(H)) v per head -> [B, T, N, H].

  Args:
    q_BTNH: queries.
    k_BSNH: keys (N heads; the same number as the queries).
    v_BSNH: values.
    mask_BTS: True where query t may attend to key s. None: causal, with
      queries and keys the same T positions.
    implementation: None (the backend's choice), 'xla' or 'cudnn'.
  """
  if mask_BTS is None:
    return jax.nn.dot_product_attention(q_BTNH, k_BSNH, v_BSNH,
                                        is_causal=True,
                                        implementation=implementation)
  return jax.nn.dot_product_attention(q_BTNH, k_BSNH, v_BSNH,
                                      mask=mask_BTS[:, None],
                                      implementation=implementation)


def cache_mask(valid_BS: jax.Array, index: jax.Array, num_queries: int
               ) -> jax.Array:
  """[B, T, S] mask of T queries written at slots index..index+T-1: slot s
  is visible to query t if it holds a real token and s <= index + t. A
  query always sees its own slot (a padding query then attends to itself
  rather than to nothing)."""
  s = jnp.arange(valid_BS.shape[1])
  q = index + jnp.arange(num_queries)
  causal_TS = s[None, :] <= q[:, None]
  own_TS = s[None, :] == q[:, None]
  return (valid_BS[:, None, :] & causal_TS[None]) | own_TS[None]


def rotary(x_BTNH: jax.Array, positions_BT: jax.Array, base: float = 10000.0
           ) -> jax.Array:
  """Rotary position embedding (Su et al. 2021) in the half-split layout:
  feature pairs (i, i + H/2) are rotated by the angle position * base^(-2i/H).
  Dot products of rotated queries and keys depend only on the offset."""
  half = x_BTNH.shape[-1] // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [H/2]
  angle = positions_BT[..., None].astype(jnp.float32) * freqs[None, None]
  cos = jnp.cos(angle)[:, :, None, :]
  sin = jnp.sin(angle)[:, :, None, :]
  x1 = x_BTNH[..., :half].astype(jnp.float32)
  x2 = x_BTNH[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTNH.dtype)
