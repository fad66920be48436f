"""Parallel text for translation: sentence pairs, a shared subword vocabulary,
and padded id arrays.

Corpora (`data.name`, with `data.language_pair` 'src-tgt'):
  'wmt14_translate', 'wmt16_translate': TFDS `<name>/<pair>` (the
      configs name German-English 'de-en' whichever way a run translates);
      train, and newstest (the 'test' split) held out, as in the papers.
  'gettext': the system's gettext catalogs (`gettext_corpus`), English to
      the pair's other language; read from disk in about a second.
`data.source='auto'` reads prepared TFDS data and otherwise falls back, with
one warning, to 'gettext'; 'tfds' insists on TFDS; 'embedded' reads the
catalogs. With neither available the run stops with one line saying what to
install or prepare.

The vocabulary is byte-level BPE (Hugging Face `tokenizers`) learned on the
training split's two sides together (a shared vocabulary, as in the
Transformer paper), so decoding is lossless: detokenized text is the
original text. Ids 0, 1, 2 are <pad>, <s>, </s>. The learned tokenizer is
kept as JSON under the data dir, named by a hash of the training text and
the vocabulary size (learned once per corpus), and a copy goes into the
run's directory, which a resumed run, its eval and its sampler read.

Arrays: 'source' (ids, </s>, padding) and 'target' (<s>, ids, </s>,
padding), [N, max_len + 1] and [N, max_len + 2] rounded up by
`bucket_width`. Training pairs with a side longer than `data.max_len` tokens
are left out (counted in the log); the held-out split keeps every pair, so
its scores compare with other systems'.
"""

import dataclasses
import hashlib
import os

from absl import logging
import jax
import numpy as np
import tensorflow_datasets as tfds

from gen_jax import files
from gen_jax.data import gettext_corpus
from gen_jax.data import sources
from gen_jax.errors import UserError

NAMES = ("gettext", "wmt14_translate", "wmt16_translate")
PAD, BOS, EOS = 0, 1, 2
SPECIAL = ("<pad>", "<s>", "</s>")
TRIM_MULTIPLE = 8  # batch widths are multiples of this (see bucket_width)
_TFDS_PAIRS = {"wmt14_translate": ("cs-en", "de-en", "fr-en", "hi-en",
                                   "ru-en"),
               "wmt16_translate": ("cs-en", "de-en", "fi-en", "ro-en",
                                   "ru-en", "tr-en")}


@dataclasses.dataclass(frozen=True)
class Pairs:
  train: list[tuple[str, str]]
  eval: list[tuple[str, str]]
  dataset: str  # what was read, for the log
  placeholders: bool  # sources carry numbered '{k}' placeholders (gettext)


def _language_pair(pair: str) -> tuple[str, str]:
  parts = pair.split("-")
  if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
    raise UserError(f"--config.data.language_pair={pair!r}: expected "
                    "'source-target' language codes, e.g. en-de.")
  return parts[0], parts[1]


def _read_tfds(name: str, src: str, tgt: str, data_dir: str) -> Pairs | None:
  config = next((c for c in _TFDS_PAIRS[name] if set(c.split("-")) ==
                 {src, tgt}), None)
  if config is None:
    raise UserError(f"--config.data.language_pair={src}-{tgt}: TFDS {name} "
                    f"has {', '.join(_TFDS_PAIRS[name])} (either direction).")
  full = f"{name}/{config}"
  if not sources.is_prepared(full, data_dir):
    return None
  splits = tfds.data_source(full, data_dir=data_dir)

  def read(split):
    text = lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return [(text(r[src]), text(r[tgt])) for r in splits[split]]
  return Pairs(read("train"), read("test"), f"{full} (test = newstest)",
               placeholders=False)


def _read_gettext(src: str, tgt: str) -> Pairs | None:
  if src != "en":
    raise UserError(f"--config.data.language_pair={src}-{tgt}: the gettext "
                    "catalogs translate from English; use en-<language>.")
  loaded = gettext_corpus.load(tgt)
  if loaded is None:
    return None
  train, held_out, description = loaded
  return Pairs(train, held_out, description, placeholders=True)


def load_pairs(name: str, pair: str, source: str, data_dir: str) -> Pairs:
  """The sentence pairs of `name`, deciding fast where they come from."""
  if name not in NAMES:
    raise UserError(f"--config.data.name={name}: not a translation corpus; "
                    f"valid: {', '.join(NAMES)}.")
  src, tgt = _language_pair(pair)
  data_dir = data_dir or sources.default_data_dir()
  no_catalogs = (f"no gettext catalogs for '{tgt}' under "
                 f"{', '.join(p + '/share/locale' for p in gettext_corpus.PREFIXES)}"
                 f" (install the distribution's language pack, e.g. "
                 f"language-pack-{tgt})")
  if name == "gettext" or source == "embedded":
    pairs = _read_gettext(src, tgt)
    if pairs is None:
      raise UserError(f"--config.data.name={name}: {no_catalogs}.")
    return pairs
  pairs = _read_tfds(name, src, tgt, data_dir)
  if pairs is not None:
    return pairs
  how = sources.how_to_get(name, data_dir)
  if source == "tfds":
    raise UserError(f"TFDS {name} ({pair}) is not prepared in {data_dir}. "
                    f"{how}")
  pairs = _read_gettext(src, tgt) if src == "en" else None
  if pairs is None:
    raise UserError(f"TFDS {name} is not prepared in {data_dir}, and "
                    f"{no_catalogs}. {how}")
  logging.warning("TFDS %s (%s) is not prepared in %s: the run uses %s "
                  "instead. %s", name, pair, data_dir, pairs.dataset, how)
  return pairs


class SubwordTokenizer:
  """Byte-level BPE over both languages; `encode` gives ids without
  specials, `decode` drops specials and stops at the first </s>."""

  def __init__(self, tokenizer, placeholders: bool = False):
    self._tok = tokenizer
    self.vocab_size = tokenizer.get_vocab_size()
    self.pad_id, self.bos_id, self.eos_id = PAD, BOS, EOS
    # Sources were cleaned as gettext messages: typed ones are too.
    self.placeholders = placeholders

  def encode_source(self, text: str) -> tuple[list[int], list[str]]:
    """A typed source sentence -> (its ids, its placeholders, which
    `restore` puts back into the translation)."""
    if not self.placeholders:
      return self.encode(text), []
    text, found = gettext_corpus.clean_source(text)
    return self.encode(text), found

  def restore(self, text: str, placeholders: list[str]) -> str:
    return gettext_corpus.restore_placeholders(text, placeholders)

  @classmethod
  def train(cls, texts: list[str], vocab_size: int) -> "SubwordTokenizer":
    import tokenizers  # pylint: disable=import-outside-toplevel
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(
        add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return cls(tok)

  @classmethod
  def from_json(cls, text: str) -> "SubwordTokenizer":
    import tokenizers  # pylint: disable=import-outside-toplevel
    return cls(tokenizers.Tokenizer.from_str(text))

  def to_json(self) -> str:
    return self._tok.to_str()

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(texts)]

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if EOS in ids:
      ids = ids[:ids.index(EOS)]
    ids = [i for i in ids if 2 < i < self.vocab_size]
    return self._tok.decode(ids)


def tokenizer_for(pairs: Pairs, vocab_size: int, data_dir: str
                  ) -> SubwordTokenizer:
  """The vocabulary learned on `pairs.train`, from its JSON file if there."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256(f"{vocab_size}|{tokenizers.__version__}".encode())
  for s, t in pairs.train:
    digest.update(f"{s}\t{t}\n".encode("utf-8"))
  path = os.path.join(data_dir or sources.default_data_dir(), "gen_jax_tokens",
                      f"bpe{vocab_size}-{digest.hexdigest()[:16]}.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return SubwordTokenizer.from_json(f.read())
  tok = SubwordTokenizer.train(
      [s for s, _ in pairs.train] + [t for _, t in pairs.train], vocab_size)
  files.write_text(path, tok.to_json())
  logging.info("Learned a %d-token BPE vocabulary, saved as %s.",
               tok.vocab_size, path)
  return tok


def bucket_width(tokens: int) -> int:
  """The batch width for a longest row of `tokens`: a multiple of 8 up to
  64, of 32 beyond (few shapes to compile, little padding)."""
  step = TRIM_MULTIPLE if tokens <= 64 else 32
  return max(-(-tokens // step) * step, TRIM_MULTIPLE)


def to_arrays(tok: SubwordTokenizer, pairs: list[tuple[str, str]],
              max_len: int | None) -> tuple[dict[str, np.ndarray], int]:
  """Padded id arrays of the pairs no longer than `max_len` tokens on
  either side (None: all, as wide as the longest); and how many were
  dropped."""
  src_ids = tok.encode_batch([s for s, _ in pairs])
  tgt_ids = tok.encode_batch([t for _, t in pairs])
  if max_len is None:
    max_len = max([len(a) for a in src_ids] + [len(b) for b in tgt_ids] + [1])
  keep = [i for i, (a, b) in enumerate(zip(src_ids, tgt_ids))
          if len(a) <= max_len and len(b) <= max_len]
  source = np.zeros((len(keep), bucket_width(max_len + 1)), np.int32)
  target = np.zeros((len(keep), bucket_width(max_len + 2)), np.int32)
  for row, i in enumerate(keep):
    a, b = src_ids[i], tgt_ids[i]
    source[row, :len(a) + 1] = a + [EOS]
    target[row, :len(b) + 2] = [BOS] + b + [EOS]
  return {"source": source, "target": target}, len(pairs) - len(keep)


def lengths(arrays: dict[str, np.ndarray]) -> np.ndarray:
  """Each pair's longer side in tokens (specials included)."""
  return np.maximum(np.sum(arrays["source"] != PAD, axis=1),
                    np.sum(arrays["target"] != PAD, axis=1))


def trim_transform(longest: np.ndarray):
  """A batch transform (train or eval) that cuts 'source' and 'target' to
  one width: the global batch's longest row (`longest`: each example's,
  from `lengths`), rounded up by `bucket_width` (so a handful of batch
  shapes are compiled); the same on every process."""

  def transform(batch, idx, part):
    del part
    width = bucket_width(int(longest[idx].max()))
    return {**batch, "source": batch["source"][:, :width],
            "target": batch["target"][:, :width]}
  return transform


def load(config, run_dir: str | None = None
         ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str,
                    SubwordTokenizer]:
  """(train arrays, eval arrays, what was read, the tokenizer) of
  `config.data`.

  `run_dir`: a run's directory. The vocabulary a run trained with is kept
  there as tokenizer.json, and read back from there: a resumed run, its
  eval and its sampler use its own ids even if the corpus (or its cleaning)
  changed since.
  """
  d = config.data
  if d.max_len < 1 or d.vocab_size <= len(SPECIAL) + 256:
    raise UserError(f"--config.data.max_len={d.max_len}, vocab_size="
                    f"{d.vocab_size}: need max_len >= 1 and a vocabulary "
                    "above the 259 byte and special tokens.")
  pairs = load_pairs(d.name, d.language_pair, d.source, d.data_dir)
  saved = os.path.join(run_dir, "tokenizer.json") if run_dir else None
  if saved and os.path.exists(saved):
    with open(saved, encoding="utf-8") as f:
      tok = SubwordTokenizer.from_json(f.read())
    if tok.vocab_size > d.vocab_size:
      raise UserError(f"--config.data.vocab_size={d.vocab_size}: the run's "
                      f"{saved} has {tok.vocab_size} tokens.")
  else:
    tok = tokenizer_for(pairs, d.vocab_size, d.data_dir)
    if saved and jax.process_index() == 0:
      files.write_text(saved, tok.to_json())
  tok.placeholders = pairs.placeholders
  train, dropped = to_arrays(tok, pairs.train, d.max_len)
  # Held out: every pair, however long (scores stay comparable).
  held_out, _ = to_arrays(tok, pairs.eval, None)
  if not len(train["source"]) or not len(held_out["source"]):
    raise UserError(f"--config.data.max_len={d.max_len}: no training pair "
                    "is that short; raise it.")
  logging.info("Translation data: %s; %d-token BPE; %d train pairs of at "
               "most %d tokens (%d longer ones left out), %d held-out pairs "
               "(all, up to %d tokens).", pairs.dataset, tok.vocab_size,
               len(train["source"]), d.max_len, dropped,
               len(held_out["source"]), held_out["target"].shape[1] - 2)
  return train, held_out, pairs.dataset.split(" (")[0], tok
