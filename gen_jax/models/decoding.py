"""Autoregressive generation for any model with `init_cache` and `extend`.

The prompt batch is left-padded to a common length P, so every row's next
token lands in the same cache slot; padding is marked invalid, which keeps it
out of attention (Transformer) or out of the carry (LSTM) and out of the
positions. One `extend` call prefills the prompts, then one compiled
`lax.fori_loop` draws each new token and feeds it back, updating the fixed-size
cache in place.

Token choice: temperature 0 is greedy (argmax); otherwise logits / T, then
top-k (keep the k largest), then top-p on what top-k kept, renormalized (keep
the smallest set of most likely tokens whose probability reaches p, and always
the most likely one), then a categorical draw. This is the order and the
arithmetic of the temperature, top-k and top-p logits warpers of Hugging Face
transformers' `generate`.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def top_k_mask(logits_BV: jax.Array, k: int) -> jax.Array:
  """True for the k largest logits of each row (k <= 0: all)."""
  if k <= 0 or k >= logits_BV.shape[-1]:
    return jnp.ones(logits_BV.shape, bool)
  kth = jax.lax.top_k(logits_BV, k)[0][:, -1:]  # [B, 1]
  return logits_BV >= kth


def top_p_mask(logits_BV: jax.Array, p: float) -> jax.Array:
  """True for the nucleus of softmax(logits) (p >= 1: all).

  A token is dropped when the probability of it and all less likely tokens is
  at most 1 - p; the most likely token is always kept (so p <= 0 keeps only
  it). Tokens at -inf have probability 0 and are dropped. Among equal logits
  the one with the higher index counts as the more likely (a stable ascending
  sort), so a tie that straddles the boundary keeps the later tokens.

  Args:
    logits_BV: logits; rows may hold -inf (e.g. after `top_k_mask`).
    p: the probability mass to reach.

  Returns:
    A bool mask [B, V].
  """
  if p >= 1.0:
    return jnp.ones(logits_BV.shape, bool)
  order_BV = jnp.argsort(logits_BV, axis=-1, stable=True)  # ascending
  probs_BV = jax.nn.softmax(
      jnp.take_along_axis(logits_BV, order_BV, axis=-1), axis=-1)
  tail_BV = jnp.cumsum(probs_BV, axis=-1)  # mass of this and less likely
  drop_BV = (tail_BV <= 1.0 - p).at[:, -1].set(False)
  rows = jnp.arange(logits_BV.shape[0])[:, None]
  return jnp.zeros(logits_BV.shape, bool).at[rows, order_BV].set(~drop_BV)


def filter_logits(logits_BV: jax.Array, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Logits / temperature, then top-k, then top-p on the top-k survivors.

  Top-p sees the distribution renormalized over the tokens top-k kept, so a
  top-k cut can shrink the nucleus (k = 0 or p = 1 switch a filter off).

  Returns:
    The scaled logits [B, V] (float32) with the dropped tokens at -inf.
  """
  logits_BV = logits_BV.astype(jnp.float32) / temperature
  logits_BV = jnp.where(top_k_mask(logits_BV, top_k), logits_BV, -jnp.inf)
  return jnp.where(top_p_mask(logits_BV, top_p), logits_BV, -jnp.inf)


def choose(key: jax.Array, logits_BV: jax.Array, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """The next token of each row [B] (int32)."""
  if temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits_BV, temperature, top_k, top_p)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def pad_prompts(prompts: Sequence[Sequence[int]], pad_id: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists to one length -> (tokens [B, P], valid [B, P])."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ValueError("every prompt needs at least one token.")
  length = max(len(p) for p in prompts)
  tokens = np.full((len(prompts), length), pad_id, np.int32)
  valid = np.zeros((len(prompts), length), bool)
  for i, p in enumerate(prompts):
    tokens[i, length - len(p):] = p
    valid[i, length - len(p):] = True
  return tokens, valid


def generate(model, prompt_BP: jax.Array, valid_BP: jax.Array,
             key: jax.Array, num_new: int, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, eos_id: int = -1
             ) -> jax.Array:
  """Draws `num_new` tokens after each (left-padded) prompt.

  Args:
    model: has `init_cache(batch, slots)` and `extend(tokens, valid, cache)`.
    prompt_BP: prompt tokens, left-padded.
    valid_BP: False on padding.
    key: the draw of step i uses fold_in(key, i).
    num_new: tokens to draw (static).
    temperature, top_k, top_p: see `choose` (static).
    eos_id: once a row draws it, its later tokens are eos_id too (-1: none).

  Returns:
    The new tokens [B, num_new] (int32).
  """
  b, p = prompt_BP.shape
  cache = model.init_cache(b, p + num_new)
  logits, cache = model.extend(prompt_BP, valid_BP, cache)
  out = jnp.zeros((b, num_new), jnp.int32)

  def body(i, carry):
    cache, last_BV, done_B, out = carry
    token = choose(jax.random.fold_in(key, i), last_BV, temperature, top_k,
                   top_p)
    if eos_id >= 0:
      token = jnp.where(done_B, eos_id, token)
      done_B = done_B | (token == eos_id)
    out = jax.lax.dynamic_update_slice(out, token[:, None], (0, i))
    # The last step's forward pass is not needed; the cache has room for it.
    logits, cache = model.extend(token[:, None],
                                 jnp.ones((b, 1), bool), cache)
    return cache, logits[:, -1], done_B, out

  carry = (cache, logits[:, -1], jnp.zeros((b,), bool), out)
  return jax.lax.fori_loop(0, num_new, body, carry)[-1]
