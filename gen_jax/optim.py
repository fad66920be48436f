"""Optimizers from `config.train`, shared by all families."""

import ml_collections
import optax


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup, then constant or cosine decay to 0 over the run."""
  peak = train.learning_rate
  if train.lr_schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, max(train.warmup_steps, 1), max(train.num_steps, 2))
  if train.warmup_steps > 0:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, train.warmup_steps),
         optax.constant_schedule(peak)], [train.warmup_steps])
  return optax.constant_schedule(peak)


def make_optimizer(train: ml_collections.ConfigDict, b1: float = 0.9,
                   b2: float = 0.999) -> optax.GradientTransformation:
  """Adam(W) with the config's schedule, optional global-norm clipping."""
  parts = []
  if train.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(train.grad_clip_norm))
  parts.append(optax.adamw(learning_rate_schedule(train), b1=b1, b2=b2,
                           weight_decay=train.weight_decay))
  return optax.chain(*parts)
