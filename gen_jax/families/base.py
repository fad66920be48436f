"""The family interface: the one seam between the trainer and a model family.

A family is built from the config and owns its objective, its pure train step,
its sampler and its eval metrics. The trainer compiles `train_step` and
`eval_step` once over the device mesh and never looks inside the state.

`OneNetwork` is the base of every family with one network and one optimizer
(VAE, flows, PixelCNN, diffusion, sequence models, the classifier): it owns
the network's graph, the train state, the step skeleton, the optimizer update
and the EMA. Such a family fills in `build_network`, `loss`, `eval_step` and
its pictures/sampler; a two-network family (the GAN) implements `Family`
itself.
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

from gen_jax import optim
from gen_jax import parallel
from gen_jax.errors import UserError
from gen_jax.evaluation import grids

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
  models_text: bool = False  # True: reads token batches (text data)
  # True: conditioned on captions; `sample` takes prompts= and
  # guidance_scale= (text-to-image).
  captioned: bool = False
  # True: translates token sequences (`translate(state, source_ids, beam)`,
  # scored by the 'translation' evaluator).
  translates: bool = False
  # True: partition_rules split the network over a 'model' mesh axis.
  model_parallel: bool = False

  def __init__(self, config: ml_collections.ConfigDict, tokenizer=None):
    """Args: the resolved config; the data pipeline's tokenizer (text data
    or captions, else None), for families that read or write tokens."""
    if tokenizer is not None and not (self.models_text or self.captioned):
      raise UserError(f"--config.data.name={config.data.name} is text, which "
                      f"the '{config.family}' family does not model.")
    self.config = config
    self.tokenizer = tokenizer

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
    """Per-batch SUMS over real rows (batch['mask']) plus 'count' (scalars,
    or arrays summed elementwise, e.g. a histogram).

    `final` (static) asks for the expensive, paper-grade estimates, e.g. the
    IWAE bound with 1000 samples, instead of the cheaper periodic ones.
    """

  def score(self, state: PyTree, batch: Batch, key: jax.Array,
            final: bool = False) -> Metrics:
    """Per-example scores of how unlike the training data each row of
    `batch` is (pure; compiled by `--mode=score`): name -> [B] float32,
    larger = more unusual.

    'nll': -log p(x) in nats of the data as the family models it (the
    8-bit image, the binarized image, the tokens), exact or a bound as
    `score_notes` says; 'dims': the dimensions it covers (pixels x
    channels, or tokens), for bits/dim. An autoencoder adds
    'reconstruction_error'. A family without a likelihood gives its own
    score instead (a GAN's discriminator, a classifier's confidence).
    `final` (static) asks for the final eval's estimates (more importance
    samples, every diffusion timestep).
    """
    del state, batch, key, final
    raise UserError(
        f"The '{self.config.family}' family gives no score of an input; "
        "--mode=score reads a VAE, flow, PixelCNN, diffusion, flow-matching, "
        "EDM, VQ-VAE, token-prior, language-model, GAN or classifier run.")

  def score_notes(self, final: bool = False) -> dict[str, str]:
    """What each of `score`'s values is: exact, a bound (which), an
    estimate; written beside the scores."""
    del final
    return {}

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

  def sample_grid(self, state: PyTree, key: jax.Array) -> np.ndarray:
    """`eval.num_samples` samples as one picture; a conditional family draws
    one row per class."""
    n = self.config.eval.num_samples
    if not self.num_classes:
      return grids.make_grid(np.asarray(self.sample(state, key, n)))
    per_class = max(1, n // self.num_classes)
    labels = np.repeat(np.arange(self.num_classes), per_class)
    images = self.sample(state, key, len(labels), labels)
    return grids.make_grid(np.asarray(images), per_class)

  def export_samples(self, samples: np.ndarray) -> dict[str, np.ndarray]:
    """Samples from `sample` -> the arrays of an .npz file for other tools:
    images as uint8 [N, H, W, C]; other data as float32."""
    samples = np.asarray(samples)
    if samples.ndim == 4:
      return {"images": np.round(np.clip(samples, 0.0, 1.0) * 255).astype(
          np.uint8)}
    return {"samples": samples.astype(np.float32)}

  def warm_start(self, state: PyTree, batch: Batch) -> PyTree | None:
    """Step 0 from pretrained weights (e.g. `config.init_from`, a stage-1
    autoencoder), applied once to a fresh state outside `jit`, never on
    resume; `batch` is the first global batch (for statistics measured at
    step 0). None: the family has no pretrained weights to start from."""
    del state, batch
    return None

  def eval_params(self, state: PyTree) -> PyTree:
    """The parameters eval and sampling use: the EMA when one is kept."""
    return state.ema_params if state.ema_params is not None else state.params

  def partition_rules(self) -> tuple[tuple[str, PartitionSpec], ...]:
    """(regex over the state path, PartitionSpec) pairs that refine the
    default layout (`parallel.fsdp_spec`: large leaves split over 'fsdp')."""
    return ()

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.config.train.dtype)


class OneNetwork(Family):
  """A family with one network, one optimizer and an optional EMA.

  Subclasses provide:
    build_network(rngs) -> nnx.Module          # the network, fresh weights
    loss(network, batch, key) -> (loss, aux)   # scalar to minimize; aux: dict
                                               # of scalar metrics to log;
                                               # non-trainable variables it
                                               # sets are kept (e.g. an EMA
                                               # codebook)
    eval_step(state, batch, key, final)        # per-batch sums (see Family)
    visualize / sample                         # pictures and samples
  and may override `initialize` (data-dependent init), `trainable` (which
  variables the optimizer updates) and `inference_network` (e.g. adapters
  folded in).
  """

  trainable: nnx.filterlib.Filter = nnx.Param

  def __init__(self, config: ml_collections.ConfigDict, tokenizer=None):
    super().__init__(config, tokenizer)
    self.optimizer = optim.make_optimizer(config.train)
    abstract = nnx.eval_shape(lambda: self.build_network(nnx.Rngs(0)))
    self.graphdef = nnx.graphdef(abstract)

  @abc.abstractmethod
  def build_network(self, rngs: nnx.Rngs) -> nnx.Module:
    """The network with freshly initialized weights."""

  @abc.abstractmethod
  def loss(self, network: nnx.Module, batch: Batch, key: jax.Array
           ) -> tuple[jax.Array, Metrics]:
    """(scalar training loss, extra scalar metrics) of one batch."""

  def initialize(self, network: nnx.Module, batch: Batch | None,
                 key: jax.Array) -> None:
    """Data-dependent initialization of a fresh network, in place (e.g.
    actnorm); `batch` is the trainer's first global batch, or None."""
    del network, batch, key

  def init(self, key, batch):
    network = self.build_network(nnx.Rngs(key))
    self.initialize(network, batch, jax.random.fold_in(key, 1))
    return new_train_state(network, self.optimizer,
                           self.config.train.ema_decay, self.trainable)

  def network(self, params: nnx.State, rest: nnx.State) -> nnx.Module:
    """The network holding `params` (trainable) and `rest` (everything else)."""
    return nnx.merge(self.graphdef, params, rest, copy=True)

  def host_network(self, state: TrainState) -> nnx.Module:
    """The network holding a state's weights on the host, to load
    pretrained weights into outside `jit` (`warm_start`)."""
    return self.network(parallel.to_host(state.params),
                        parallel.to_host(state.rest))

  def with_network(self, state: TrainState, model: nnx.Module
                   ) -> TrainState:
    """`state` holding `model`'s weights, laid out as `state`'s are; the EMA
    restarts at them, in buffers of its own (the step donates the state,
    and one buffer cannot be donated twice)."""
    _, params, rest = nnx.split(model, self.trainable, ...)
    params = parallel.put_like(params, state.params)
    rest = parallel.put_like(rest, state.rest)
    ema = (None if state.ema_params is None
           else jax.tree.map(jnp.copy, params))
    return state.replace(params=params, rest=rest, ema_params=ema)

  def inference_network(self, state: TrainState) -> nnx.Module:
    """The network eval and sampling use: EMA parameters when kept."""
    return self.network(self.eval_params(state), state.rest)

  def train_step(self, state, batch, key):
    def loss_fn(params):
      network = self.network(params, state.rest)
      loss, aux = self.loss(network, batch, key)
      # What the loss changed in place (e.g. a codebook's running averages).
      _, _, rest = nnx.split(network, self.trainable, ...)
      return loss, (aux, rest)

    (loss, (aux, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    state = apply_gradients(state.replace(rest=rest), grads, self.optimizer,
                            self.config.train.ema_decay)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}


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


def class_labels(num: int, num_classes: int, labels: np.ndarray | None,
                 sharding: jax.sharding.Sharding | None = None
                 ) -> jax.Array | None:
  """[num] int32 class ids for conditional sampling (default 0, 1, 2, ...),
  laid out by `sharding`; None for an unconditional family.

  Built by a compiled call, so it is one global array on any number of
  processes (every process passes the same labels)."""
  if not num_classes:
    return None
  if labels is None:
    labels = np.arange(num) % num_classes
  labels = np.asarray(labels, np.int32)
  return jax.jit(lambda: jnp.asarray(labels), out_shardings=sharding)()


def check_sizes(config: ml_collections.ConfigDict, positive=(),
                nonnegative=()) -> None:
  """Refuses, naming the key, a size or count the family cannot use: one of
  the dotted keys `positive` (an int, or a non-empty tuple of ints) below 1,
  or one of `nonnegative` below 0."""
  for keys, low in ((positive, 1), (nonnegative, 0)):
    for key in keys:
      value = config[key]
      values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
      if not values or min(values) < low:
        rule = ("positive" if low else ">= 0") + (
            " and not empty" if isinstance(value, (tuple, list)) else "")
        raise UserError(f"--config.{key}={value}: must be {rule}.")


def check_fraction(config: ml_collections.ConfigDict, key: str,
                   include_one: bool = False) -> None:
  """Refuses, naming the key, a rate outside [0, 1) ([0, 1] with
  `include_one`)."""
  value = config[key]
  if not (0 <= value <= 1 if include_one else 0 <= value < 1):
    raise UserError(f"--config.{key}={value}: must be in [0, "
                    f"{'1]' if include_one else '1)'}.")


def check_images(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """`data.image_shape`; refuses data that are not images [H, W, C]."""
  shape = tuple(config.data.image_shape)
  if len(shape) != 3:
    raise UserError(f"--config.data.image_shape={shape}: the "
                    f"'{config.family}' family models images [H, W, C].")
  return shape


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
