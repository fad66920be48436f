"""Tokenizers for language models: UTF-8 bytes, characters, GPT-2's byte-level BPE.

All three share one interface, so the pipeline, the family and its samplers
never ask which one they hold. `token_bytes[i]` is the number of UTF-8 bytes
token i stands for: bits per byte = (sum of the targets' NLL in bits) /
(sum of token_bytes over the targets), comparable across tokenizers.

GPT-2's BPE is written here in pure Python from the checkpoint's vocab.json and
merges.txt; the tests check it token for token against the reference
implementation.
"""

import abc
import functools
import hashlib
import json
import os
import time

from absl import logging
import ml_collections
import numpy as np

from gen_jax import files
from gen_jax.data import text as text_lib
from gen_jax.errors import UserError

VOCABS = ("byte", "char", "gpt2")
CHUNK_CHARS = 1 << 20  # slow tokenizers encode corpora in pieces this long
_REPLACEMENT = "\ufffd"


class Tokenizer(abc.ABC):
  """Maps text to int32 ids and back."""

  name: str
  vocab_size: int
  bos_id: int  # the token an unconditional sample starts from
  token_bytes: np.ndarray  # int32 [vocab_size]: UTF-8 bytes per token
  # True where encoding is slow enough that encoded corpora are worth a file.
  cache_encodings: bool = False

  @abc.abstractmethod
  def encode(self, text: str) -> np.ndarray:
    """Returns the ids of `text`, int32 [T]."""

  @abc.abstractmethod
  def decode(self, ids) -> str:
    """Returns the text of `ids`; never raises.

    Invalid UTF-8 decodes to U+FFFD, and so does an id outside [0, vocab_size)
    (a model may pad its vocabulary for speed).
    """

  @property
  def fingerprint(self) -> str:
    """Changes whenever the mapping from text to ids could change."""
    return self.name


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: 256 ids, nothing to learn, nothing unknown."""

  name = "byte"
  vocab_size = 256
  bos_id = ord("\n")

  def __init__(self):
    self.token_bytes = np.ones(256, np.int32)

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

  def decode(self, ids) -> str:
    ids_T = np.asarray(ids, np.int64).reshape(-1)
    valid = (ids_T >= 0) & (ids_T < 256)
    if valid.all():
      return ids_T.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
    # Decode each run of valid ids on its own, with U+FFFD for each invalid id.
    parts, start = [], 0
    for i in np.flatnonzero(~valid):
      parts.append(self.decode(ids_T[start:i]) + _REPLACEMENT)
      start = i + 1
    return "".join(parts) + self.decode(ids_T[start:])


class CharTokenizer(Tokenizer):
  """One id per character of the training text, in code point order.

  A character the training text never had (eval text can have a few, e.g. a
  file's one accented name) encodes as the space's id (id 0 if there is no
  space), with a warning saying how many: the model's vocabulary stays what
  it was trained on. Bits per byte then counts such a character as 1 byte.
  """

  name = "char"

  def __init__(self, chars):
    chars = list(chars)
    if not chars or len(set(chars)) != len(chars) or any(
        len(c) != 1 for c in chars):
      raise ValueError("chars must be distinct single characters, at least 1.")
    self.chars = sorted(chars)
    self.vocab_size = len(self.chars)
    self._codepoints = np.array([ord(c) for c in self.chars], np.int64)
    self._ids = {c: i for i, c in enumerate(self.chars)}
    self.bos_id = self._ids.get("\n", 0)
    self.unknown_id = self._ids.get(" ", 0)
    self.token_bytes = np.array([len(c.encode("utf-8")) for c in self.chars],
                                np.int32)

  @classmethod
  def from_text(cls, text: str) -> "CharTokenizer":
    if not text:
      raise UserError("The char vocabulary needs a non-empty training text.")
    return cls(set(text))

  @property
  def fingerprint(self) -> str:
    joined = "".join(self.chars).encode("utf-8", errors="surrogatepass")
    return f"char-{hashlib.sha256(joined).hexdigest()[:16]}"

  def encode(self, text: str) -> np.ndarray:
    cps_T = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"),
                          np.uint32).astype(np.int64)
    ids_T = np.searchsorted(self._codepoints, cps_T)
    ids_T = np.minimum(ids_T, self.vocab_size - 1)
    known = self._codepoints[ids_T] == cps_T
    if not known.all():
      unknown = sorted({chr(c) for c in cps_T[~known]})
      logging.warning(
          "%d characters of the text are not in the %d-character vocabulary "
          "(first: %s); they encode as %r.", int((~known).sum()),
          self.vocab_size, ", ".join(repr(c) for c in unknown[:10]),
          self.chars[self.unknown_id])
      ids_T = np.where(known, ids_T, self.unknown_id)
    return ids_T.astype(np.int32)

  def decode(self, ids) -> str:
    return "".join(self.chars[i] if 0 <= i < self.vocab_size else _REPLACEMENT
                   for i in np.asarray(ids, np.int64).reshape(-1).tolist())


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible map from bytes to printable characters.

  BPE works on strings; mapping every byte to a visible, non-space character
  lets merges.txt and vocab.json hold any byte sequence as plain text. The 188
  printable Latin-1 bytes stand for themselves; the other 68 (controls,
  space, soft hyphen, ...) take the code points 256, 257, ... in byte order.
  """
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


# GPT-2's pre-tokenization: contractions, letter runs, number runs and runs of
# other symbols (each with at most one leading space), then whitespace; a
# whitespace run before a word leaves its last space to that word.
_GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"
                 r"| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
# Without the `regex` package: \p{L} as [^\W\d_] (alphanumerics that are not
# decimal digits) and \p{N} as \d. The one difference: numeric characters that
# are not decimal digits (categories Nl, No: '²', '½', 'Ⅻ') count as letters
# here and as numbers there, so text holding them can tokenize differently.
_GPT2_PATTERN_RE = (r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+"
                    r"| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def _pretokenizer():
  try:
    import regex  # pylint: disable=g-import-not-at-top
    return regex.compile(_GPT2_PATTERN)
  except ImportError:
    import re  # pylint: disable=g-import-not-at-top
    return re.compile(_GPT2_PATTERN_RE)


class GPT2Tokenizer(Tokenizer):
  """GPT-2's byte-level BPE over a Hugging Face checkpoint's vocab and merges.

  Text is cut into words by GPT-2's regex; each word's UTF-8 bytes become
  byte characters (`bytes_to_unicode`), which are merged pairwise, always the
  pair ranked earliest in merges.txt first, until no ranked pair is left.
  `<|endoftext|>` written literally in the text is the special token itself.
  """

  name = "gpt2"
  cache_encodings = True
  SPECIAL = "<|endoftext|>"

  def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
    if self.SPECIAL not in vocab:
      raise UserError(f"vocab.json has no '{self.SPECIAL}' token; not a GPT-2 "
                      "vocabulary.")
    byte_chars = bytes_to_unicode()
    missing = [c for c in byte_chars.values() if c not in vocab]
    if missing:
      raise UserError(f"vocab.json lacks {len(missing)} of the 256 byte "
                      "symbols; not a byte-level BPE vocabulary.")
    for a, b in merges:
      if a + b not in vocab:
        raise UserError(f"merges.txt merges {a!r} + {b!r} into a token that "
                        "vocab.json does not have.")
    self.vocab = dict(vocab)
    self.ranks = {pair: r for r, pair in enumerate(merges)}
    self.bos_id = vocab[self.SPECIAL]
    self.vocab_size = max(vocab.values()) + 1
    self._byte_char = [byte_chars[b] for b in range(256)]
    char_byte = {c: b for b, c in byte_chars.items()}
    self._id_bytes = [b""] * self.vocab_size
    self.token_bytes = np.zeros(self.vocab_size, np.int32)
    for token, i in vocab.items():
      if token != self.SPECIAL and all(c in char_byte for c in token):
        self._id_bytes[i] = bytes(char_byte[c] for c in token)
        self.token_bytes[i] = len(token)
      else:  # special: decodes to its text, stands for no bytes of the corpus
        self._id_bytes[i] = token.encode("utf-8")
    self._pattern = _pretokenizer()
    self._word_ids = functools.lru_cache(maxsize=1 << 18)(self._encode_word)
    digest = hashlib.sha256(json.dumps(
        [sorted(vocab.items()), merges], ensure_ascii=False).encode("utf-8"))
    self._fingerprint = f"gpt2-{digest.hexdigest()[:16]}"

  @classmethod
  def from_dir(cls, path: str) -> "GPT2Tokenizer":
    """Loads vocab.json and merges.txt from a checkpoint directory."""
    vocab_file = os.path.join(path, "vocab.json")
    merges_file = os.path.join(path, "merges.txt")
    if not (os.path.isfile(vocab_file) and os.path.isfile(merges_file)):
      raise UserError(
          f"The GPT-2 tokenizer in '{path}' needs vocab.json and merges.txt "
          "from the Hugging Face checkpoint directory; save them with "
          "tokenizer.save_pretrained(DIR).")
    with open(vocab_file, encoding="utf-8") as f:
      vocab = json.load(f)
    merges = []
    with open(merges_file, encoding="utf-8") as f:
      for line in f:
        line = line.rstrip("\n")
        if not line or line.startswith("#version"):
          continue
        parts = line.split(" ")
        if len(parts) != 2:
          raise UserError(f"{merges_file}: expected 'a b' per line, got "
                          f"{line!r}.")
        merges.append((parts[0], parts[1]))
    return cls(vocab, merges)

  @property
  def fingerprint(self) -> str:
    return self._fingerprint

  def _bpe(self, word: str) -> list[str]:
    symbols = list(word)
    while len(symbols) > 1:
      pairs = set(zip(symbols, symbols[1:]))
      best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
      if best not in self.ranks:
        break
      merged, i = [], 0
      while i < len(symbols):
        if (i + 1 < len(symbols) and symbols[i] == best[0]
            and symbols[i + 1] == best[1]):
          merged.append(best[0] + best[1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return symbols

  def _encode_word(self, word: str) -> tuple[int, ...]:
    chars = "".join(self._byte_char[b] for b in word.encode("utf-8"))
    return tuple(self.vocab[s] for s in self._bpe(chars))

  def encode(self, text: str) -> np.ndarray:
    ids = []
    for k, part in enumerate(text.split(self.SPECIAL)):
      if k:
        ids.append(self.bos_id)
      for word in self._pattern.findall(part):
        ids.extend(self._word_ids(word))
    return np.array(ids, np.int32)

  def decode(self, ids) -> str:
    bad = _REPLACEMENT.encode("utf-8")
    return b"".join(
        self._id_bytes[i] if 0 <= i < self.vocab_size else bad
        for i in np.asarray(ids, np.int64).reshape(-1).tolist()
    ).decode("utf-8", errors="replace")


def _split_points(text: str, chunk_chars: int) -> list[int]:
  """Offsets about `chunk_chars` apart where encoding can be cut.

  A cut just after a newline that sits between two ASCII non-space characters
  changes no tokenizer's output: GPT-2's regex always makes that newline a
  word of its own, and no match or lookahead before it reaches past it.
  """
  def solid(c: str) -> bool:
    return c.isascii() and not c.isspace()

  cuts, j = [0], max(chunk_chars, 2) - 1
  while (j := text.find("\n", j)) != -1 and j + 1 < len(text):
    if solid(text[j - 1]) and solid(text[j + 1]):
      cuts.append(j + 1)
      j += chunk_chars
    else:
      j += 1
  return cuts + [len(text)]


def encode_corpus(tokenizer: Tokenizer, text: str, what: str,
                  cache_dir: str | None = None) -> np.ndarray:
  """Encodes a corpus split, from a cached .npy file when a slow tokenizer ran
  on the same text before.

  Args:
    tokenizer: the tokenizer.
    text: the split's text.
    what: names the split in logs and the cache file name, e.g.
      'tiny_shakespeare-train'.
    cache_dir: where encodings of slow tokenizers are kept (None: not kept).

  Returns:
    int32 [T] ids.
  """
  if not tokenizer.cache_encodings:
    return tokenizer.encode(text)
  path = None
  if cache_dir:
    key = hashlib.sha256(text.encode("utf-8", errors="surrogatepass"))
    key.update(tokenizer.fingerprint.encode("utf-8"))
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in what)
    path = os.path.join(cache_dir, f"{slug}-{tokenizer.name}-"
                        f"{key.hexdigest()[:16]}.npy")
    if os.path.isfile(path):
      return np.load(path)
  start = last_log = time.time()
  cuts = _split_points(text, CHUNK_CHARS)
  parts = []
  for k, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
    parts.append(tokenizer.encode(text[lo:hi]))
    if time.time() - last_log > 10:
      last_log = time.time()
      logging.info("Encoding %s with %s: %d%% of %d characters, %.0f s.", what,
                   tokenizer.name, 100 * hi // len(text), len(text),
                   last_log - start)
  ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
  logging.info("Encoded %s with %s: %d characters -> %d tokens in %.1f s.",
               what, tokenizer.name, len(text), len(ids), time.time() - start)
  if path:
    try:
      with files.atomic_open(path, "wb") as f:
        np.save(f, ids)
    except OSError as e:
      logging.warning("Could not cache the encoded %s in %s (%s).", what,
                      cache_dir, e)
  return ids


@functools.lru_cache(maxsize=8)
def _char_tokenizer(name: str, source: str, data_dir: str) -> CharTokenizer:
  return CharTokenizer.from_text(
      text_lib.load_corpus(name, source, data_dir).train)


def make(config: ml_collections.ConfigDict,
         corpus: text_lib.Corpus | None = None) -> Tokenizer:
  """The tokenizer `config.data.vocab` names.

  Args:
    config: reads data.vocab; for 'char' data.name, data.source, data.data_dir
      (the vocabulary is the training text's characters); for 'gpt2'
      init_from (the checkpoint directory holding vocab.json, merges.txt).
    corpus: the corpus, when the caller has read it already ('char' then
      builds from its train split instead of reading it again).
  """
  vocab = config.data.vocab
  if vocab == "byte":
    return ByteTokenizer()
  if vocab == "char":
    if corpus is not None:
      return CharTokenizer.from_text(corpus.train)
    return _char_tokenizer(config.data.name, config.data.source,
                           config.data.data_dir)
  if vocab == "gpt2":
    path = config.get("init_from", "")
    if not path:
      raise UserError("--config.data.vocab=gpt2 needs --config.init_from=DIR, "
                      "a Hugging Face GPT-2 checkpoint directory.")
    return GPT2Tokenizer.from_dir(path)
  raise UserError(f"--config.data.vocab={vocab} is not one of "
                  f"{', '.join(VOCABS)}.")
