"""Optimizers from `config.train`, shared by all families."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict,
                           peak: float | None = None,
                           updates_per_step: int = 1) -> optax.Schedule:
  """Linear warmup, then constant, cosine or linear decay over the run to
  `train.final_lr_fraction` of the peak; or 'rsqrt', the Transformer paper's
  schedule: linear warm-up to the peak, then peak * sqrt(warmup / step)
  (the paper's d^-0.5 min(step^-0.5, step warmup^-1.5) with its peak
  d^-0.5 warmup^-0.5 named directly).

  `updates_per_step`: optimizer updates per train step (a GAN's critic takes
  n_critic per step), so the schedule spans the same train steps. A run
  shorter than its warm-up (a quick `--config.train.num_steps=20`) warms up
  over half of it.
  """
  peak = train.learning_rate if peak is None else peak
  total = max(train.num_steps * updates_per_step, 2)
  warmup = train.warmup_steps * updates_per_step
  if warmup >= total:
    warmup = total // 2
  end = peak * train.final_lr_fraction
  if train.lr_schedule == "rsqrt":
    w = max(warmup, 1)
    # Step s is the (s + 1)-th update.
    return lambda step: peak * jnp.minimum((step + 1.0) / w,
                                           jnp.sqrt(w / (step + 1.0)))
  if train.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, max(warmup, 1), total,
                                              end_value=end)
  if train.lr_schedule == "linear":
    decay = optax.linear_schedule(peak, end, max(total - warmup, 1))
  else:
    decay = optax.constant_schedule(peak)
  if warmup > 0:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), decay], [warmup])
  return decay


def make_optimizer(train: ml_collections.ConfigDict,
                   learning_rate: float | None = None,
                   updates_per_step: int = 1) -> optax.GradientTransformation:
  """Adam(W) (betas train.b1, train.b2) with the config's schedule and
  optional global-norm clipping; `learning_rate` overrides the config's peak.

  Weight decay (decoupled, `train.weight_decay`) applies to matrices and
  embeddings only, not to biases and normalization scales (ndim < 2)."""
  parts = []
  if train.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(train.grad_clip_norm))
  parts.append(optax.adamw(
      learning_rate_schedule(train, learning_rate, updates_per_step),
      b1=train.b1, b2=train.b2, weight_decay=train.weight_decay,
      mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)))
  return optax.chain(*parts)
