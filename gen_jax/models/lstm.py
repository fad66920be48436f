"""A character/byte LSTM language model (Flax's RNN over an LSTM cell).

tokens -> embedding -> L stacked LSTM layers (dropout between them) ->
logits. It offers the Transformer's two entry points, so the family trains
and samples both the same way:
  __call__(tokens_BT)                  the whole sequence (training)
  extend(tokens_BT, valid_BT, carry)   T more tokens from a carry (decoding);
                                       padding tokens leave the carry as is.
"""

import dataclasses

import flax
from flax import nnx
import jax
import jax.numpy as jnp

from gen_jax.models import lora


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
  vocab_size: int = 256
  embed_dim: int = 128
  hidden: int = 512
  num_layers: int = 2
  dropout: float = 0.0  # on the embeddings and between layers
  dtype: str = "float32"


@flax.struct.dataclass
class Carry:
  """Per layer (c, h), each [B, hidden]: the decoding state."""
  layers: tuple[tuple[jax.Array, jax.Array], ...]


class LSTMLM(nnx.Module):
  """Tokens [B, T] -> next-token logits [B, T, V] (float32)."""

  def __init__(self, cfg: LSTMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = nnx.Param(jax.random.normal(
        rngs.params(), (cfg.vocab_size, cfg.embed_dim)))
    sizes = [cfg.embed_dim] + [cfg.hidden] * cfg.num_layers
    self.rnns = nnx.List([
        nnx.RNN(nnx.OptimizedLSTMCell(i, cfg.hidden, dtype=cfg.dtype,
                                      rngs=rngs), rngs=False)
        for i in sizes[:-1]])
    self.dropout = nnx.Dropout(cfg.dropout)
    self.head = lora.Dense(cfg.hidden, cfg.vocab_size, init_std=
                           cfg.hidden ** -0.5, dtype=cfg.dtype, rngs=rngs)

  def init_cache(self, batch_size: int, num_slots: int = 0) -> Carry:
    """A zero carry (the LSTM's state does not grow with the sequence, so
    `num_slots` is unused; it is part of the shared decoding interface)."""
    del num_slots
    zeros = jnp.zeros((batch_size, self.cfg.hidden), self.cfg.dtype)
    return Carry(tuple((zeros, zeros) for _ in self.rnns))

  def __call__(self, tokens_BT: jax.Array, rngs: nnx.Rngs | None = None
               ) -> jax.Array:
    """Logits for every position from a zero carry; dropout iff `rngs`."""
    return self.from_embeddings(self.embed_tokens(tokens_BT, rngs), rngs)

  def embed_tokens(self, tokens_BT: jax.Array, rngs: nnx.Rngs | None = None
                   ) -> jax.Array:
    """Token embeddings [B, T, E] (dropout iff `rngs`)."""
    x = self.embed[...][tokens_BT].astype(self.cfg.dtype)
    return self.dropout(x, rngs=rngs,
                        deterministic=rngs is None)

  def from_embeddings(self, x_BTD: jax.Array, rngs: nnx.Rngs | None = None
                      ) -> jax.Array:
    """The LSTM layers and the head over `embed_tokens`' output -> logits."""
    x = x_BTD
    carry = self.init_cache(x_BTD.shape[0])
    for rnn, layer_carry in zip(self.rnns, carry.layers):
      x = self.dropout(rnn(x, initial_carry=layer_carry), rngs=rngs,
                       deterministic=rngs is None)
    return self.head(x).astype(jnp.float32)

  def extend(self, tokens_BT: jax.Array, valid_BT: jax.Array, carry: Carry
             ) -> tuple[jax.Array, Carry]:
    """T more tokens from `carry` (no dropout); returns logits [B, T, V] and
    the new carry."""
    x = self.embed_tokens(tokens_BT)
    layers = []
    for rnn, layer_carry in zip(self.rnns, carry.layers):
      cell = rnn.cell

      def step(c, inputs, cell=cell):
        x_t, valid_t = inputs
        new_c, y = cell(c, x_t)
        keep = valid_t[:, None]
        new_c = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_c, c)
        return new_c, y

      last, ys = jax.lax.scan(step, layer_carry,
                              (x.swapaxes(0, 1), valid_BT.swapaxes(0, 1)))
      x = ys.swapaxes(0, 1)
      layers.append(last)
    return self.head(x).astype(jnp.float32), Carry(tuple(layers))
