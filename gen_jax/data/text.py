"""Text corpora for language models, and fixed-length windows over their tokens.

Two corpora:
  'tiny_shakespeare': TFDS `tiny_shakespeare` (1 MB of plays; train is the
      first 90%, validation the next 5%, which is our eval split). Read from
      array_record files when prepared; `data.source='auto'` prepares it when
      TensorFlow is installed and the mirror answers, and otherwise falls back,
      with one warning, to 'python_stdlib'.
  'python_stdlib': the .py files of the running interpreter's standard library
      (~12 MB on Python 3.11), always on disk, so a language model can be
      trained and evaluated on real text with no network. Tests and
      third-party packages are left out; whole files are held out for eval, so
      eval text is never a continuation of a training file.

A split is one string. Token windows over it are random-access Grain sources:
training reads every offset (each token is a prediction target under many
contexts), eval reads non-overlapping windows (each token is scored once).
"""

import dataclasses
import hashlib
import os
import platform
import sysconfig

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from gen_jax.data import sources
from gen_jax.errors import UserError

# The TFDS decision reuses `sources`' probes (TensorFlow present, mirror up).
# pylint: disable=protected-access

NAMES = ("tiny_shakespeare", "python_stdlib")
SOURCES = ("auto", "tfds", "embedded")
# Directory names under the standard library that are not part of it (installed
# packages) or are test suites (megabytes of fixtures and repetitive asserts).
_STDLIB_SKIP = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test"})
EVAL_FRACTION = 10  # A file is held out iff its path hash is 0 mod this.


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A text dataset as two strings."""
  train: str
  eval: str
  dataset: str  # what was actually read, for logs
  description: str


def stdlib_files(root: str | None = None) -> list[str]:
  """Relative posix paths of the standard library's .py files, sorted.

  Args:
    root: the standard library directory (default: the running Python's).
  """
  root = root or sysconfig.get_paths()["stdlib"]
  paths = []
  for directory, subdirs, names in os.walk(root):
    subdirs[:] = [d for d in subdirs if d not in _STDLIB_SKIP]
    rel = os.path.relpath(directory, root)
    for name in names:
      if name.endswith(".py"):
        path = name if rel == "." else os.path.join(rel, name)
        paths.append(path.replace(os.sep, "/"))
  return sorted(paths)


def is_eval_file(relpath: str) -> bool:
  """The fixed by-file split: depends on the path only, so never changes."""
  digest = hashlib.sha256(relpath.encode("utf-8")).hexdigest()
  return int(digest[:8], 16) % EVAL_FRACTION == 0


def _join_files(root: str, paths: list[str]) -> str:
  parts = []
  for path in paths:
    with open(os.path.join(root, path), "rb") as f:
      body = f.read().decode("utf-8", errors="replace")
    parts.append(f"# {path}\n{body}")
  return "\n\n".join(parts)


def python_stdlib() -> Corpus:
  """The running Python's standard library sources, split by file."""
  root = sysconfig.get_paths()["stdlib"]
  paths = stdlib_files(root)
  held_out = [p for p in paths if is_eval_file(p)]
  train = [p for p in paths if not is_eval_file(p)]
  dataset = (f"python_stdlib (Python {platform.python_version()}, "
             f"{len(train)} train / {len(held_out)} eval files)")
  return Corpus(
      train=_join_files(root, train),
      eval=_join_files(root, held_out),
      dataset=dataset,
      description=f"The .py files under {root}, tests and installed packages "
                  "excluded; each file starts with a '# <path>' line.")


def _read_tiny_shakespeare(data_dir: str) -> Corpus:
  splits = tfds.data_source("tiny_shakespeare", data_dir=data_dir)

  def whole(split: str) -> str:
    value = splits[split][0]["text"]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

  return Corpus(
      train=whole("train"),
      eval=whole("validation"),
      dataset="tiny_shakespeare",
      description="TFDS tiny_shakespeare: train = first 90% of the text, "
                  "eval = the validation split (next 5%).")


def load_corpus(name: str, source: str, data_dir: str) -> Corpus:
  """Reads a text corpus, deciding fast where it comes from.

  Args:
    name: one of NAMES.
    source: 'auto' (prepared TFDS data, else prepare it if possible, else the
      standard library with a warning) | 'tfds' (prepared or preparable TFDS
      data, else an error) | 'embedded' (the standard library, no TFDS).
      'python_stdlib' is read from disk whatever the source.
    data_dir: TFDS data dir ('' for the default).

  Returns:
    The corpus; `dataset` names what was read.
  """
  if name not in NAMES:
    raise UserError(f"Unknown text dataset '{name}'. "
                    f"Valid: {', '.join(NAMES)}.")
  if source not in SOURCES:
    raise UserError(f"--config.data.source={source} is not one of "
                    f"{', '.join(SOURCES)}.")
  if name == "python_stdlib" or source == "embedded":
    return python_stdlib()
  data_dir = data_dir or sources.default_data_dir()
  tfds.disable_progress_bar()
  if sources.is_prepared(name, data_dir):
    return _read_tiny_shakespeare(data_dir)
  how = sources.how_to_get(name, data_dir)
  if source == "tfds":
    if not sources._can_prepare():
      raise UserError(f"TFDS '{name}' is not prepared in {data_dir}, and "
                      f"preparing it needs TensorFlow. {how}")
    if not sources._online():
      raise UserError(f"TFDS '{name}' is not prepared in {data_dir} and its "
                      f"download mirror is unreachable. {how}")
    sources._prepare_tfds(name, data_dir)
    return _read_tiny_shakespeare(data_dir)
  if sources._can_prepare() and sources._online():
    try:
      sources._prepare_tfds(name, data_dir)
      return _read_tiny_shakespeare(data_dir)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Preparing TFDS '%s' failed (%s).", name, e)
  corpus = python_stdlib()
  logging.warning(
      "TFDS '%s' is unavailable offline in %s: the run uses the Python "
      "standard library sources instead (%s). %s",
      name, data_dir, corpus.dataset, how)
  return corpus


class _Windows:
  """Windows of seq_len + 1 tokens starting every `stride` tokens.

  Item i is tokens[i * stride : i * stride + seq_len + 1]: the model reads its
  first seq_len tokens and predicts its last seq_len, so consecutive eval
  windows (stride = seq_len) score every token after the first exactly once.
  """

  def __init__(self, tokens: np.ndarray, seq_len: int, stride: int,
               split: str):
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
      raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}.")
    if seq_len < 1:
      raise UserError(f"--config.data.seq_len={seq_len} must be positive.")
    if len(tokens) < seq_len + 1:
      raise UserError(f"The {split} split has {len(tokens)} tokens, fewer than "
                      f"--config.data.seq_len + 1 = {seq_len + 1}; lower "
                      "data.seq_len.")
    self.tokens = tokens.astype(np.int32, copy=False)
    self.seq_len = seq_len
    self.stride = stride
    self._num = (len(tokens) - 1 - seq_len) // stride + 1
    self._offsets = np.arange(seq_len + 1)

  def __len__(self) -> int:
    return self._num

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    if not -self._num <= i < self._num:
      raise IndexError(f"window {i} out of range [0, {self._num}).")
    start = (i % self._num) * self.stride
    return {"tokens": self.tokens[start:start + self.seq_len + 1]}

  def gather(self, indices) -> dict[str, np.ndarray]:
    """Returns {'tokens': int32 [len(indices), seq_len + 1]}."""
    idx_N = np.asarray(indices, np.int64).reshape(-1)
    if idx_N.size and (idx_N.min() < 0 or idx_N.max() >= self._num):
      raise IndexError(f"window indices out of range [0, {self._num}).")
    starts_N = idx_N * self.stride
    return {"tokens": self.tokens[starts_N[:, None] + self._offsets]}


class TrainWindows(_Windows):
  """A window at every offset: len(tokens) - seq_len windows."""

  def __init__(self, tokens: np.ndarray, seq_len: int):
    super().__init__(tokens, seq_len, stride=1, split="train")


class EvalWindows(_Windows):
  """Non-overlapping windows: (len(tokens) - 1) // seq_len of them."""

  def __init__(self, tokens: np.ndarray, seq_len: int):
    super().__init__(tokens, seq_len, stride=seq_len, split="eval")
