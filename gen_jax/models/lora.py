"""Dense layers with optional low-rank adapters (LoRA, Hu et al. 2021).

y = x W + b + (alpha / r) x A B, with A [in, r] random and B [r, out] zero at
initialization, so a model with fresh adapters computes exactly what the
pretrained one does. The adapters are `nnx.LoRAParam` variables (a kind of
`nnx.Param`): a family trains only them by labelling its optimizer with
`is_adapter`, and `merge` folds them into W for inference.
"""

import math
import re

from flax import nnx
import jax
import jax.numpy as jnp

ADAPTER_PATTERN = re.compile(r"(^|/)lora_[ab](/|$)")


def is_adapter(path: str) -> bool:
  """True for the state path of an adapter matrix ('.../lora_a/value')."""
  return ADAPTER_PATTERN.search(path) is not None


class Dense(nnx.Module):
  """x @ W + b in `dtype` (parameters kept in float32), plus a rank-r adapter
  when `lora_rank > 0`."""

  def __init__(self, in_features: int, out_features: int, *,
               use_bias: bool = True, init_std: float = 0.02,
               lora_rank: int = 0, lora_alpha: float = 0.0,
               dtype: str = "float32", rngs: nnx.Rngs):
    self.dtype = jnp.dtype(dtype)
    self.kernel = nnx.Param(init_std * jax.random.normal(
        rngs.params(), (in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
    self.lora_rank = lora_rank
    # alpha = 0: scale 1 (alpha = r); the scale keeps the update's size
    # comparable when the rank changes.
    self.lora_scale = (lora_alpha or lora_rank) / max(lora_rank, 1)
    if lora_rank > 0:
      self.lora_a = nnx.LoRAParam(jax.random.normal(
          rngs.params(), (in_features, lora_rank)) / math.sqrt(in_features))
      self.lora_b = nnx.LoRAParam(jnp.zeros((lora_rank, out_features)))
    else:
      self.lora_a = self.lora_b = None

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    y = x @ self.kernel[...].astype(self.dtype)
    if self.lora_a is not None:
      low = x @ self.lora_a[...].astype(self.dtype)
      y = y + (self.lora_scale * low) @ self.lora_b[...].astype(self.dtype)
    if self.bias is not None:
      bias = self.bias[...].astype(self.dtype)
      y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
    return y


def merge(model: nnx.Module) -> nnx.Module:
  """Folds every adapter into its kernel, W <- W + (alpha / r) A B, and drops
  the adapters, in place: the model then computes the same function with
  plain dense layers (no extra matmuls at inference). Returns the model."""
  for _, module in nnx.iter_modules(model):
    if isinstance(module, Dense) and module.lora_a is not None:
      delta = module.lora_scale * (module.lora_a[...] @ module.lora_b[...])
      module.kernel[...] = module.kernel[...] + delta
      module.lora_a = module.lora_b = None
      module.lora_rank = 0
  return model
