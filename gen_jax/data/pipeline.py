"""Grain pipelines over `tfds.data_source`: seeded shuffling, batching, per-host slices.

Image datasets are TFDS (or in-memory synthetic) splits; text datasets
(`text.NAMES`) are token windows over a tokenized corpus. Both go through the
same seeded order, slicing and eval padding below.

Every process computes the same seeded order of example indices and cuts the
same global batches from it; each process then reads only its own contiguous
slice of each global batch. So the global batch at step s is the same set of
examples whatever the number of processes or devices, and a run on 2 hosts
gives the numbers of a run on 1. The iterator is a Grain `DatasetIterator`
whose state (the position in that order) is saved with every checkpoint.
"""

import dataclasses
import math
import os
import threading
from typing import Callable, Iterator

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data import captions
from gen_jax.data import mixtures
from gen_jax.data import sources
from gen_jax.data import text
from gen_jax.data import tokenizers
from gen_jax.data import translation
from gen_jax.errors import UserError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass
class Data:
  """What a run reads. Batches are this process's slice, as numpy arrays."""
  train: grain.DatasetIterator  # endless; checkpointable
  eval_batches: Callable[[], Iterator[Batch]]  # one pass over the eval split
  init_batch: Batch  # the first train batch, for data-dependent init
  dataset: str  # what was actually read (the TFDS name, or a corpus's)
  num_train: int
  num_eval: int
  local_batch_size: int
  eval_batch_size: int  # global rows of an eval batch, padding included
  # Text data: what made the ids; captioned images: the captions' tokenizer.
  tokenizer: (tokenizers.Tokenizer | captions.CaptionTokenizer
              | translation.SubwordTokenizer | None) = None


class ArraySource:
  """A split held in memory as arrays: random access without decoding."""

  def __init__(self, arrays: Batch):
    self.arrays = arrays

  @classmethod
  def decode(cls, source, chunk: int = 2000) -> "ArraySource":
    """Reads a whole TFDS split once."""
    parts = [_gather(source, np.arange(i, min(i + chunk, len(source))))
             for i in range(0, len(source), chunk)]
    return cls({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self.arrays.items()}

  def gather(self, indices) -> Batch:
    return {k: v[np.asarray(indices)] for k, v in self.arrays.items()}


# The features kept from records of sources without `gather` (TFDS splits),
# with their batch dtypes; others (e.g. string ids) never reach the device.
_RECORD_FEATURES = {"image": np.uint8, "label": np.int32}


def _gather(source, indices: np.ndarray) -> Batch:
  """Reads `indices` from a random-access source into one stacked batch."""
  if hasattr(source, "gather"):  # in memory: one vectorized read
    return source.gather(indices)
  indices = [int(i) for i in indices]
  if hasattr(source, "__getitems__"):
    records = source.__getitems__(indices)
  else:
    records = [source[i] for i in indices]
  return {key: np.stack([np.asarray(r[key], dtype) for r in records])
          for key, dtype in _RECORD_FEATURES.items() if key in records[0]}


def _local_size(global_size: int, process_count: int, what: str) -> int:
  if global_size % process_count:
    raise UserError(f"--config.data.{what}={global_size} must be divisible by "
                    f"the number of processes ({process_count}).")
  return global_size // process_count


class LengthBuckets(grain.MapDataset):
  """Batches of examples of similar lengths, still in a seeded random order.

  Each pool of `pool` consecutive batches of the parent (shuffled example
  indices) is pooled, sorted by length and cut again into `pool` batches,
  which come out in an order drawn from the seed and the pool's number. So
  every epoch still sees every example once, a batch wastes little on
  padding, and the order is a function of the position alone (a restored
  iterator continues exactly).
  """

  def __init__(self, parent: grain.MapDataset, lengths: np.ndarray,
               pool: int, seed: int):
    super().__init__(parent)
    self._lengths, self._pool, self._seed = lengths, pool, seed
    self._cached = (None, None)
    self._lock = threading.Lock()  # the iterator reads on several threads

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return f"LengthBuckets(pool={self._pool})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    p, j = divmod(index, self._pool)
    with self._lock:
      pool, batches = self._cached
      if pool != p:
        ids = np.stack([self._parent[p * self._pool + k]
                        for k in range(self._pool)])
        flat = ids.reshape(-1)
        flat = flat[np.argsort(self._lengths[flat], kind="stable")]
        order = np.random.default_rng([self._seed, p]).permutation(self._pool)
        batches = flat.reshape(ids.shape)[order]
        self._cached = (p, batches)
    return batches[j]


def train_dataset(source, batch_size: int, seed: int, process_index: int,
                  process_count: int,
                  transform: Callable[[Batch, np.ndarray, slice], Batch]
                  | None = None, lengths: np.ndarray | None = None,
                  pool: int = 1) -> grain.MapDataset:
  """Endless, seeded, per-epoch reshuffled batches; this process's slice of
  each, passed through `transform(slice's batch, the global batch's example
  indices, the slice)` if given. With `lengths` and `pool > 1` batches
  hold examples of similar lengths (`LengthBuckets`)."""
  local = _local_size(batch_size, process_count, "batch_size")
  part = slice(process_index * local, (process_index + 1) * local)

  def read(idx):
    batch = _gather(source, idx[part])
    return batch if transform is None else transform(batch, idx, part)
  ds = (grain.MapDataset.range(len(source))
        .shuffle(seed=seed)
        .repeat(None)
        .batch(batch_size, drop_remainder=True))
  if lengths is not None and pool > 1:
    ds = LengthBuckets(ds, lengths, pool, seed)
  return ds.map(read)


def caption_transform(config: ml_collections.ConfigDict, training: bool
                      ) -> Callable[..., Batch] | None:
  """`data.captions='digits'`: adds 'caption' byte ids [B, caption_length]
  derived from each digit's label and measured ink (`captions.py`); in
  training each attribute word is kept with `data.caption_keep_prob`, drawn
  from the seed and the global batch's example indices (so a resumed run,
  or one on more hosts, draws the same captions)."""
  d = config.data
  kind = d.get("captions", "")
  if not kind:
    return None
  if kind != "digits":
    raise UserError(f"--config.data.captions: '{kind}' is not one of '' (no "
                    "captions), digits.")
  if not 0 <= d.caption_keep_prob <= 1 or d.caption_length < 2:
    raise UserError(f"--config.data.caption_keep_prob={d.caption_keep_prob},"
                    f" caption_length={d.caption_length}: need a probability "
                    "in [0, 1] and room for at least one byte.")

  def add(batch: Batch, idx: np.ndarray | None = None,
          part: slice | None = None) -> Batch:
    draws, keep = None, 1.0
    if training:  # drawn for the global batch: the same on any processes
      rng = np.random.default_rng([config.seed, *np.asarray(idx).tolist()])
      draws = rng.random((len(idx), 2))[part]
      keep = d.caption_keep_prob
    texts = captions.digit_captions(batch["image"], batch["label"], draws,
                                    keep)
    return {**batch, "caption": captions.encode(texts, d.caption_length)}
  return add


def perturb_transform(config: ml_collections.ConfigDict,
                      tokenizer: tokenizers.Tokenizer | None
                      ) -> Callable[..., Batch] | None:
  """`data.perturb_rate > 0`: training inputs for a background model (Ren et
  al. 2019, "Likelihood ratios for out-of-distribution detection"): each
  pixel of 'image' (or token of 'tokens') is replaced, with that
  probability, by a uniform random value in 0..255 (a uniform token id),
  drawn from the seed and the global batch's example indices (so a resumed
  run, or one on more hosts, draws the same)."""
  rate = config.data.get("perturb_rate", 0.0)  # absent: an older config
  if not rate:
    return None
  if config.data.name in translation.NAMES + mixtures.NAMES:
    raise UserError(f"--config.data.perturb_rate={rate}: perturbed inputs "
                    "are for 8-bit images and text, not "
                    f"'{config.data.name}'.")
  key, high = (("tokens", tokenizer.vocab_size)
               if config.data.name in text.NAMES else ("image", 256))

  def perturb(batch: Batch, idx: np.ndarray, part: slice) -> Batch:
    values = np.asarray(batch[key])
    rng = np.random.default_rng([config.seed, 7919,
                                 *np.asarray(idx).tolist()])
    shape = (len(idx),) + values.shape[1:]
    hit = (rng.random(shape) < rate)[part]
    noise = rng.integers(0, high, shape)[part].astype(values.dtype)
    return {**batch, key: np.where(hit, noise, values)}
  return perturb


def chained(*transforms: Callable[..., Batch] | None
            ) -> Callable[..., Batch] | None:
  """The given transforms (None skipped) applied in order; None if none."""
  given = [t for t in transforms if t is not None]
  if not given:
    return None

  def apply(batch: Batch, idx: np.ndarray, part: slice) -> Batch:
    for transform in given:
      batch = transform(batch, idx, part)
    return batch
  return apply


def eval_batches(source, batch_size: int, num_examples: int,
                 process_index: int, process_count: int,
                 transform: Callable[[Batch, np.ndarray, slice], Batch]
                 | None = None) -> Iterator[Batch]:
  """One pass, in a fixed order; the last batch is zero-padded, 'mask' marks
  real rows. `transform(batch, the global batch's real example indices,
  this process's slice)` is applied if given."""
  local = _local_size(batch_size, process_count, "eval_batch_size")
  part = slice(process_index * local, (process_index + 1) * local)
  for start in range(0, num_examples, batch_size):
    idx = np.arange(start, start + batch_size)[part]
    mask = idx < num_examples
    batch = _gather(source, np.where(mask, idx, 0))
    for key, value in batch.items():
      real = mask.reshape((-1,) + (1,) * (value.ndim - 1))
      batch[key] = np.where(real, value, np.zeros((), value.dtype))
    if transform is not None:
      batch = transform(batch, np.arange(start, min(start + batch_size,
                                                    num_examples)), part)
    batch["mask"] = mask.astype(np.float32)
    yield batch


def text_sources(config: ml_collections.ConfigDict
                 ) -> tuple[text.TrainWindows, text.EvalWindows, str,
                            tokenizers.Tokenizer]:
  """Token windows over a text corpus: (train, eval, what was read, the
  tokenizer).

  Encodings by slow tokenizers (GPT-2 BPE) are kept as .npy files under the
  data dir, so only the first run on a corpus pays for them.
  """
  corpus = text.load_corpus(config.data.name, config.data.source,
                            config.data.data_dir)
  tokenizer = tokenizers.make(config, corpus)
  cache_dir = os.path.join(config.data.data_dir or sources.default_data_dir(),
                           "gen_jax_tokens")
  name = corpus.dataset.split(" ")[0]
  train_ids = tokenizers.encode_corpus(tokenizer, corpus.train, f"{name}-train",
                                       cache_dir)
  eval_ids = tokenizers.encode_corpus(tokenizer, corpus.eval, f"{name}-eval",
                                      cache_dir)
  return (text.TrainWindows(train_ids, config.data.seq_len),
          text.EvalWindows(eval_ids, config.data.seq_len), corpus.dataset,
          tokenizer)


def padded_size(size: int, multiple: int) -> int:
  """`size` rounded up to a multiple of `multiple`."""
  return -(-size // multiple) * multiple


def make(config: ml_collections.ConfigDict, process_index: int = 0,
         process_count: int = 1, batch_shards: int = 1,
         run_dir: str | None = None) -> Data:
  """Builds the train iterator and the eval pass for `config.data`.

  `batch_shards`: the devices a batch is split over. Eval batches are padded
  (masked rows) to a multiple of it, so any `data.eval_batch_size` runs on
  any number of devices. `run_dir`: the run's directory, where data that
  a run must keep (a learned vocabulary) is saved and read back.
  """
  tokenizer = None
  if config.data.name in text.NAMES:
    train_src, eval_src, name, tokenizer = text_sources(config)
  elif config.data.name in translation.NAMES:  # sentence pairs, in memory
    train_arrays, eval_arrays, name, tokenizer = translation.load(
        config, run_dir)
    train_src, eval_src = ArraySource(train_arrays), ArraySource(eval_arrays)
  elif config.data.name in mixtures.NAMES:  # synthetic, in memory
    name = config.data.name
    train_src, eval_src = map(ArraySource, mixtures.splits(name))
  else:
    name, data_dir = sources.resolve(config.data.name, config.data.source,
                                     config.data.data_dir)
    splits = tfds.data_source(name, data_dir=data_dir)
    held_out = [s for s in ("test", "validation") if s in splits]
    if "train" not in splits or not held_out:
      raise UserError(f"--config.data.name={config.data.name}: '{name}' needs "
                      "a train split and a test or validation split; it has "
                      f"{', '.join(splits)}.")
    train_src, eval_src = splits["train"], splits[held_out[0]]
    if config.data.cache:
      train_src = ArraySource.decode(train_src)
      eval_src = ArraySource.decode(eval_src)
  add_captions = caption_transform(config, training=False)
  if add_captions is not None:
    tokenizer = captions.CaptionTokenizer(config.data.caption_length)
  if config.data.name not in text.NAMES + translation.NAMES:
    expected = tuple(config.data.image_shape)
    if "image" not in train_src[0]:
      raise UserError(f"--config.data.name={config.data.name}: '{name}' has "
                      f"no 'image' feature (it has {', '.join(train_src[0])}).")
    got = tuple(np.asarray(train_src[0]["image"]).shape)
    if got != expected:
      raise UserError(f"--config.data.image_shape={expected} but '{name}' has "
                      f"examples of shape {got}.")
  num_eval = len(eval_src)
  if config.eval.num_examples > 0:
    num_eval = min(num_eval, config.eval.num_examples)
  transform = chained(caption_transform(config, training=True),
                      perturb_transform(config, tokenizer))
  lengths, pool = None, 1
  eval_transform = None
  if config.data.name in translation.NAMES:
    lengths = translation.lengths(train_src.arrays)
    transform = translation.trim_transform(lengths)
    eval_transform = translation.trim_transform(
        translation.lengths(eval_src.arrays))
    pool = config.data.bucket_pool
  ds = train_dataset(train_src, config.data.batch_size, config.seed,
                     process_index, process_count, transform, lengths, pool)
  # A thread reads ahead while the device computes; the iterator's state
  # still counts only the batches handed out, so checkpoints stay exact.
  train_iter = iter(ds.to_iter_dataset(
      grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)))
  eval_size = padded_size(config.data.eval_batch_size,
                          math.lcm(batch_shards, process_count))
  return Data(
      train=train_iter,
      eval_batches=lambda: (
          b if add_captions is None else add_captions(b)
          for b in eval_batches(eval_src, eval_size, num_eval, process_index,
                                process_count, eval_transform)),
      init_batch=ds[0],
      dataset=name,
      num_train=len(train_src),
      num_eval=num_eval,
      local_batch_size=config.data.batch_size // process_count,
      eval_batch_size=eval_size,
      tokenizer=tokenizer,
  )
