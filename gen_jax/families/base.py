"""The family interface: the one seam between the trainer and a model family.

A family is built from the config and owns its objective, its pure train step,
its sampler and its eval metrics. The trainer compiles `train_step` and
`eval_step` once over the device mesh and never looks inside the state.
"""

import abc
from typing import Any, Callable, Mapping

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
import ml_collections
import numpy as np
import optax

from gen_jax.errors import UserError

PyTree = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """State of a family with one network and one optimizer (VAE, flows, ...).

  Families with more (a GAN's two optimizers) define their own pytree; the
  trainer only needs it to be a pytree of arrays.
  """
  step: jax.Array  # [] int32
  params: nnx.State  # trainable parameters
  opt_state: Any
  ema_params: nnx.State | None  # None when train.ema_decay == 0
  rest: nnx.State  # non-trainable model state (e.g. normalization statistics)


class Family(abc.ABC):
  """What every generative family provides. All array methods are pure."""

  num_classes: int = 0  # > 0: samples are conditioned on a class label

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def init(self, key: jax.Array, batch: Batch) -> PyTree:
    """Creates the train state (called under `jax.jit` with out_shardings)."""

  @abc.abstractmethod
  def train_step(self, state: PyTree, batch: Batch, key: jax.Array
                 ) -> tuple[PyTree, Metrics]:
    """One optimization step; metrics are scalars (batch means)."""

  @abc.abstractmethod
  def eval_step(self, state: PyTree, batch: Batch, key: jax.Array,
                final: bool = False) -> Metrics:
    """Per-batch SUMS over real rows (batch['mask']) plus 'count'.

    `final` (static) asks for the expensive, paper-grade estimates, e.g. the
    IWAE bound with 1000 samples, instead of the cheaper periodic ones.
    """

  def summarize_eval(self, totals: Mapping[str, float]) -> dict[str, float]:
    """Turns summed eval metrics into the reported ones (default: means)."""
    count = totals["count"]
    return {k: v / count for k, v in totals.items() if k != "count"}

  @abc.abstractmethod
  def visualize(self, state: PyTree, batch: Batch, key: jax.Array
                ) -> dict[str, np.ndarray | str]:
    """Pictures of the model: name -> [H, W, C] image in [0, 1], or text.

    'samples' is the sample grid; other names (reconstructions, ...) are extra.
    """

  def sample(self, state: PyTree, key: jax.Array, num: int,
             labels: np.ndarray | None = None,
             sharding: jax.sharding.Sharding | None = None,
             progress: Callable[[int, int], None] | None = None) -> jax.Array:
    """`num` samples: [num, H, W, C] images in [0, 1] (token families: ids).

    Runs on the host and may make several compiled calls (a long sampling
    chain reports `progress(done, total)` between them). `labels` ([num] class
    ids) condition a family with `num_classes > 0`; `sharding` lays the batch
    over the device mesh.
    """
    raise UserError(f"The '{self.config.family}' family does not generate "
                    "samples.")

  def warm_start(self, state: PyTree) -> PyTree | None:
    """Step 0 from pretrained weights (e.g. `config.init_from`), applied once
    to a fresh state outside `jit`, never on resume; None: the family has no
    pretrained weights to start from."""
    del state
    return None

  def eval_params(self, state: PyTree) -> PyTree:
    """The parameters eval and sampling use: the EMA when one is kept."""
    return state.ema_params if state.ema_params is not None else state.params

  def partition_rules(self) -> tuple[tuple[str, PartitionSpec], ...]:
    """(regex over the state path, PartitionSpec) pairs; default: replicate."""
    return ()

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.config.train.dtype)


def new_train_state(model: nnx.Module, optimizer, ema_decay: float,
                    trainable: nnx.filterlib.Filter = nnx.Param
                    ) -> TrainState:
  """Step 0 of a one-network family: its parameters, the optimizer state, an
  EMA copy of the parameters when `ema_decay > 0`, and the rest of its state.

  `trainable` selects the variables the optimizer updates (e.g. only LoRA
  adapters); everything else, frozen weights included, goes to `rest`."""
  _, params, rest = nnx.split(model, trainable, ...)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    ema_params=params if ema_decay > 0 else None, rest=rest)


def apply_gradients(state: TrainState, grads: nnx.State, optimizer,
                    ema_decay: float) -> TrainState:
  """One optimizer update of a one-network family, the EMA (with its decay
  warm-up, `ema_decay_at`) and the step counter."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema = state.ema_params
  if ema is not None:
    ema = ema_update(ema, params, ema_decay_at(ema_decay, state.step))
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state, ema_params=ema)


def masked_sum(values_B: jax.Array, batch: Batch) -> jax.Array:
  """Sum over the real rows of an eval batch."""
  mask = batch.get("mask")
  if mask is None:
    return jnp.sum(values_B)
  return jnp.sum(values_B * mask)


def count(batch: Batch) -> jax.Array:
  """Real rows of an eval batch."""
  mask = batch.get("mask")
  if mask is None:
    rows = next(iter(batch.values())).shape[0]
    return jnp.asarray(rows, jnp.float32)
  return jnp.sum(mask)


def ema_update(ema: PyTree, params: PyTree, decay: float) -> PyTree:
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """The decay with a warm-up, min(decay, (1 + n) / (10 + n)) at update n, so
  early averages are not dominated by the random initialization."""
  n = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + n) / (10.0 + n))
