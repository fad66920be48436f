"""Beam search for any decoder with `extend(tokens, valid, cache)`.

The search of the Transformer paper and GNMT (Wu et al. 2016), as
tensor2tensor runs it: K live beams and K finished hypotheses per row. Each
step extends every live beam by every token, keeps the 2K best candidates by
log-probability, moves those among the K best that end in </s> to the
finished set (as fairseq does: a hypothesis ends only if it survives the
beam, which makes beam 1 exactly greedy search when alpha = 0; with a length
penalty a longer hypothesis may still win), scored log p / lp(length)
with lp(n) = ((5 + n) / 6)^alpha (alpha = 0: plain log-probability), and
keeps the K best of those that did not end alive. A row's last
allowed step (its `limits` entry) may only emit </s>, so every row finishes.
The loop stops early once no live beam can beat a row's K-th finished
hypothesis: log-probabilities only fall, so a live beam's score is at most
its log p / lp(the longest allowed length).

Everything is one compiled `lax.while_loop` over fixed shapes: the cache of
the B x K beams is reordered in place each step (a gather of its rows).
"""

import jax
import jax.numpy as jnp

_NEG = -1e9  # "impossible", finite so that sums stay ordered


def length_penalty(length: jax.Array, alpha: float) -> jax.Array:
  """GNMT's lp(n) = ((5 + n) / 6)^alpha."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def _tile(tree, batch: int, beams: int):
  """Repeats each row of every batch-major leaf `beams` times."""
  return jax.tree.map(
      lambda x: jnp.repeat(x, beams, axis=0)
      if x.ndim and x.shape[0] == batch else x, tree)


def _gather_rows(tree, rows, num_rows: int):
  return jax.tree.map(
      lambda x: x[rows] if x.ndim and x.shape[0] == num_rows else x, tree)


def beam_search(model, cache, batch: int, beam_size: int, max_steps: int,
                limits_B: jax.Array, bos_id: int, eos_id: int,
                alpha: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """The best hypothesis of each row.

  Args:
    model: has `extend(tokens_BT, valid_BT, cache) -> (logits, cache)`.
    cache: the decoding cache of `batch` rows (e.g. `init_cache` over the
      encoded sources, with room for 1 + max_steps tokens).
    batch: rows B.
    beam_size: K; 1 is greedy search.
    max_steps: the most tokens any row may emit (static), </s> included.
    limits_B: each row's most tokens (<= max_steps), </s> included.
    bos_id, eos_id: the start token fed first; the end token.
    alpha: the length penalty's exponent.

  Returns:
    tokens [B, max_steps] (int32; after </s>: </s>) and the score of each.
  """
  k, steps = beam_size, max_steps
  cache = _tile(cache, batch, k)
  seq = jnp.full((batch, k, steps + 1), eos_id, jnp.int32).at[:, :, 0].set(
      bos_id)
  alive_logp = jnp.full((batch, k), _NEG).at[:, 0].set(0.0)
  finished = (seq, jnp.full((batch, k), -jnp.inf))
  limits = jnp.minimum(limits_B, steps)
  best_bound = jnp.where(alpha > 0, length_penalty(limits, alpha), 1.0)

  def cond(state):
    i, _, alive_logp, _, (_, fin_score) = state
    # Best a live beam could still reach vs. the K-th finished score.
    reachable = jnp.where(alive_logp[:, 0] > _NEG / 2,
                          alive_logp[:, 0] / best_bound, -jnp.inf)
    return (i < steps) & jnp.any(reachable > fin_score[:, -1])

  def body(state):
    i, seq, alive_logp, cache, (fin_seq, fin_score) = state
    last = jax.lax.dynamic_index_in_dim(seq, i, axis=2, keepdims=False)
    logits, cache = model.extend(last.reshape(batch * k, 1),
                                 jnp.ones((batch * k, 1), bool), cache)
    logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))
    v = logp.shape[-1]
    logp = logp.reshape(batch, k, v)
    # A row's last allowed token is </s>.
    only_eos = (i + 1 >= limits)[:, None, None]
    logp = jnp.where(only_eos & (jnp.arange(v) != eos_id)[None, None], _NEG,
                     logp)
    scores = (alive_logp[:, :, None] + logp).reshape(batch, k * v)
    top, index = jax.lax.top_k(scores, 2 * k)  # [B, 2K]
    beam, token = index // v, (index % v).astype(jnp.int32)
    cand = jnp.take_along_axis(seq, beam[:, :, None], axis=1)
    cand = jax.lax.dynamic_update_index_in_dim(cand, token, i + 1, axis=2)
    ended = token == eos_id
    dead = top <= _NEG / 2  # candidates from impossible beams
    # Finished: the K best of the old ones and the new ones ending here.
    # A hypothesis ends only if it would have survived the beam (ranks
    # among the K best), as in fairseq: so beam 1 is greedy search.
    in_beam = (jnp.arange(2 * k) < k)[None]
    new_fin = jnp.where(ended & ~dead & in_beam,
                        top / length_penalty(i + 1, alpha), -jnp.inf)
    all_seq = jnp.concatenate([fin_seq, cand], axis=1)
    all_score = jnp.concatenate([fin_score, new_fin], axis=1)
    fin_score, pick = jax.lax.top_k(all_score, k)
    fin_seq = jnp.take_along_axis(all_seq, pick[:, :, None], axis=1)
    # Alive: the K best candidates that did not end.
    alive_scores = jnp.where(ended, _NEG, top)
    alive_logp, pick = jax.lax.top_k(alive_scores, k)
    seq = jnp.take_along_axis(cand, pick[:, :, None], axis=1)
    parent = jnp.take_along_axis(beam, pick, axis=1)  # [B, K]
    rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
    cache = _gather_rows(cache, rows, batch * k)
    return i + 1, seq, alive_logp, cache, (fin_seq, fin_score)

  state = (jnp.zeros((), jnp.int32), seq, alive_logp, cache, finished)
  _, seq, alive_logp, _, (fin_seq, fin_score) = jax.lax.while_loop(
      cond, body, state)
  # Every row has finished by its limit; the live beam is a fallback only.
  has = fin_score[:, 0] > -jnp.inf
  best = jnp.where(has[:, None], fin_seq[:, 0], seq[:, 0])
  score = jnp.where(has, fin_score[:, 0], alive_logp[:, 0])
  return best[:, 1:], score
