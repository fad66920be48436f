"""Text data: the corpora and their splits, token windows, the three tokenizers
(GPT-2 BPE against the reference implementation), and the text pipeline."""

import collections
import inspect
import json
import os
import pathlib
import textwrap
import time

import grain
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gen_jax.data import pipeline
from gen_jax.data import sources
from gen_jax.data import text
from gen_jax.data import tokenizers
from gen_jax.errors import UserError

# pylint: disable=protected-access

MIXED = ("def f(x):\n    return x ** 2  # squares\n\n"
         "Ünïcödé café naïve — “quotes” 東京 😀\r\n\ttabs 12345 3.14 it's ok")


# ---------------------------------------------------------------- corpora


def _write(root: pathlib.Path, relpath: str, body: str) -> None:
  path = root / relpath
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(body, encoding="utf-8")


def test_stdlib_corpus_format_and_exclusions(tmp_path, monkeypatch):
  eval_name = next(f"m{i}.py" for i in range(100)
                   if text.is_eval_file(f"m{i}.py"))
  for relpath in ["b.py", "pkg/a.py", eval_name, "test/t.py", "pkg/tests/t.py",
                  "idlelib/idle_test/t.py", "site-packages/x/y.py",
                  "dist-packages/z.py", "notes.txt"]:
    _write(tmp_path, relpath, f"body of {relpath}\n")
  (tmp_path / "bad.py").write_bytes(b"x = '\xff'\n")  # not UTF-8
  monkeypatch.setattr(text.sysconfig, "get_paths",
                      lambda: {"stdlib": str(tmp_path)})
  corpus = text.load_corpus("python_stdlib", "auto", "")
  assert corpus.train == ("# b.py\nbody of b.py\n\n\n"
                          "# bad.py\nx = '\ufffd'\n\n\n"
                          "# pkg/a.py\nbody of pkg/a.py\n")
  assert corpus.eval == f"# {eval_name}\nbody of {eval_name}\n"
  assert "(Python " in corpus.dataset and "3 train / 1 eval files)" in (
      corpus.dataset)


def test_real_stdlib_split_is_fixed_and_about_a_tenth():
  t0 = time.time()
  corpus = text.load_corpus("python_stdlib", "embedded", "")
  assert time.time() - t0 < 2
  paths = text.stdlib_files()
  assert paths == sorted(paths) and len(paths) > 500
  excluded = {"test", "tests", "idle_test", "site-packages", "dist-packages"}
  assert not [p for p in paths if excluded & set(p.split("/")[:-1])]
  held_out = [p for p in paths if text.is_eval_file(p)]
  assert 0.07 < len(held_out) / len(paths) < 0.13
  assert f"{len(paths) - len(held_out)} train / {len(held_out)} eval" in (
      corpus.dataset)
  # The split depends on the path alone: these never move.
  assert [text.is_eval_file(p) for p in
          ["ast.py", "colorsys.py", "os.py", "typing.py", "json/decoder.py"]
          ] == [True, True, False, False, False]
  assert corpus.eval.startswith(f"# {held_out[0]}\n")
  assert f"\n\n# {held_out[-1]}\n" in corpus.eval
  assert f"\n\n# {held_out[-1]}\n" not in corpus.train
  assert 5e6 < len(corpus.train) and 2e5 < len(corpus.eval) < len(
      corpus.train) / 4
  assert text.load_corpus("python_stdlib", "auto", "").eval == corpus.eval


def _offline(monkeypatch, tensorflow: bool = False):
  monkeypatch.setattr(sources, "_can_prepare", lambda: tensorflow)
  monkeypatch.setattr(sources, "_online", lambda timeout=2.0: False)


def test_tiny_shakespeare_falls_back_fast_and_loudly(tmp_path, monkeypatch,
                                                     caplog):
  _offline(monkeypatch)
  t0 = time.time()
  corpus = text.load_corpus("tiny_shakespeare", "auto", str(tmp_path))
  assert time.time() - t0 < 10
  assert corpus.dataset.startswith("python_stdlib (")
  warnings = [r.getMessage() for r in caplog.records
              if "tiny_shakespeare" in r.getMessage()]
  assert len(warnings) == 1
  assert "unavailable offline" in warnings[0]
  assert "Python standard library" in warnings[0]
  assert "tfds build tiny_shakespeare" in warnings[0]


def test_tiny_shakespeare_forced_tfds_is_a_clear_error(tmp_path, monkeypatch):
  _offline(monkeypatch)
  with pytest.raises(UserError, match="needs TensorFlow.*tfds build "
                     "tiny_shakespeare.*--file_format=array_record"):
    text.load_corpus("tiny_shakespeare", "tfds", str(tmp_path))
  _offline(monkeypatch, tensorflow=True)
  with pytest.raises(UserError, match="mirror is unreachable"):
    text.load_corpus("tiny_shakespeare", "tfds", str(tmp_path))
  with pytest.raises(UserError, match="Valid: tiny_shakespeare, python_stdlib"):
    text.load_corpus("shakespeare", "auto", str(tmp_path))


def test_prepared_tiny_shakespeare_is_read(tmp_path, monkeypatch):
  """The real TFDS builder's features and splits, with a few lines of text."""

  class Small(tfds.builder_cls("tiny_shakespeare"), skip_registration=True):
    name = "tiny_shakespeare"

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(split, body) for split, body in
              [("train", "First Citizen:\nBefore we proceed, hear me.\n"),
               ("validation", "All:\nSpeak, speak. Ünï\n"), ("test", "x\n")]}

  Small(data_dir=str(tmp_path), file_format="array_record"
        ).download_and_prepare()
  _offline(monkeypatch)  # prepared data needs neither
  corpus = text.load_corpus("tiny_shakespeare", "tfds", str(tmp_path))
  assert corpus.train == "First Citizen:\nBefore we proceed, hear me.\n"
  assert corpus.eval == "All:\nSpeak, speak. Ünï\n"
  assert corpus.dataset == "tiny_shakespeare"


# ---------------------------------------------------------------- windows


def test_train_windows_start_at_every_offset():
  tokens = np.arange(100, 200)
  src = text.TrainWindows(tokens, 8)
  assert len(src) == 92
  rows = src.gather(np.array([0, 91, 5]))["tokens"]
  assert rows.dtype == np.int32 and rows.shape == (3, 9)
  np.testing.assert_array_equal(rows, [np.arange(100, 109),
                                       np.arange(191, 200),
                                       np.arange(105, 114)])
  np.testing.assert_array_equal(src[91]["tokens"], rows[1])
  with pytest.raises(IndexError):
    src.gather([92])
  with pytest.raises(IndexError):
    _ = src[92]


def test_eval_windows_score_every_token_once():
  src = text.EvalWindows(np.arange(100), 8)
  assert len(src) == 12  # (100 - 1) // 8
  rows = src.gather(np.arange(12))["tokens"]
  np.testing.assert_array_equal(rows[3], np.arange(24, 33))
  np.testing.assert_array_equal(rows[:, 1:].reshape(-1), np.arange(1, 97))
  np.testing.assert_array_equal(src[11]["tokens"], np.arange(88, 97))
  assert len(text.EvalWindows(np.arange(9), 8)) == 1
  with pytest.raises(UserError, match="eval split has 8 tokens"):
    text.EvalWindows(np.arange(8), 8)
  with pytest.raises(UserError, match="train split has 3 tokens"):
    text.TrainWindows(np.arange(3), 8)


# ---------------------------------------------------------------- tokenizers


def test_byte_tokenizer():
  tok = tokenizers.ByteTokenizer()
  ids = tok.encode(MIXED)
  assert ids.dtype == np.int32 and len(ids) == len(MIXED.encode("utf-8"))
  assert tok.decode(ids) == MIXED
  assert tok.bos_id == 10 and tok.vocab_size == 256
  assert int(tok.token_bytes[ids].sum()) == len(MIXED.encode("utf-8"))
  # A cut inside a character, and ids a padded vocabulary could emit.
  assert tok.decode(tok.encode("é")[:1]) == "\ufffd"
  assert tok.decode([104, 300, 105, -1]) == "h\ufffdi\ufffd"


def test_char_tokenizer_and_unknown_characters(caplog):
  tok = tokenizers.CharTokenizer.from_text(MIXED)
  assert tok.vocab_size == len(set(MIXED))
  assert tok.chars == sorted(set(MIXED)) and tok.bos_id == tok.chars.index(
      "\n")
  ids = tok.encode(MIXED)
  assert ids.dtype == np.int32 and len(ids) == len(MIXED)
  assert tok.decode(ids) == MIXED
  assert int(tok.token_bytes[ids].sum()) == len(MIXED.encode("utf-8"))
  # Unseen characters encode as the space, with one warning.
  ids = tok.encode("f√x€")
  assert tok.decode(ids) == "f x "
  assert any("2 characters" in r.getMessage() and "'√'" in r.getMessage()
             for r in caplog.records)
  assert tok.decode([tok.vocab_size]) == "\ufffd"
  assert tokenizers.CharTokenizer.from_text("ab").bos_id == 0


def _train_bpe(corpus: str, num_merges: int):
  """A byte-level BPE: GPT-2's words, most frequent pair merged each round."""
  byte_char = tokenizers.bytes_to_unicode()
  words = collections.Counter(
      tuple(byte_char[b] for b in w.encode("utf-8"))
      for w in tokenizers._pretokenizer().findall(corpus))
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for word, n in words.items():
      for pair in zip(word, word[1:]):
        pairs[pair] += n
    if not pairs:
      break
    best = max(pairs, key=lambda p: (pairs[p], p))
    merges.append(best)
    merged = collections.Counter()
    for word, n in words.items():
      out, i = [], 0
      while i < len(word):
        if word[i:i + 2] == best:
          out.append(word[i] + word[i + 1])
          i += 2
        else:
          out.append(word[i])
          i += 1
      merged[tuple(out)] += n
    words = merged
  vocab = {c: i for i, c in enumerate(byte_char.values())}
  for a, b in merges:
    vocab.setdefault(a + b, len(vocab))
  vocab["<|endoftext|>"] = len(vocab)
  return vocab, merges


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> str:
  corpus = inspect.getsource(textwrap)[:6000] + MIXED * 3
  vocab, merges = _train_bpe(corpus, 120)
  path = tmp_path_factory.mktemp("gpt2_bpe")
  (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False),
                                   encoding="utf-8")
  (path / "merges.txt").write_text(
      "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
      encoding="utf-8")
  return str(path)


PARITY_STRINGS = [
    "Hello world", "  leading spaces and trailing   ", "",  " ", "\n",
    "line\n\n  indented\n\tTab\r\nCRLF   \n  x", "digits 12345 and 3.14159, x2y3",
    "It's they're we've I'm you'll he'd 'S", "punct!!! ... ??? (a)[b]{c} <a/>",
    "Ünïcödé café naïve — “quotes” 東京 日本語 😀 e\u0301", "under_score __init__",
    "a<|endoftext|>b", "<|endoftext|>", "x <|endoftext|> y\n<|endoftext|>" * 2,
    "<|endoftext", MIXED, inspect.getsource(textwrap)[6000:9000],
]


def test_gpt2_bpe_matches_the_reference(bpe_dir):
  transformers = pytest.importorskip("transformers")
  ours = tokenizers.GPT2Tokenizer.from_dir(bpe_dir)
  ref = transformers.GPT2Tokenizer(os.path.join(bpe_dir, "vocab.json"),
                                   os.path.join(bpe_dir, "merges.txt"))
  for s in PARITY_STRINGS:
    ids = ours.encode(s)
    assert ids.tolist() == ref.encode(s), repr(s)
    assert ours.decode(ids) == s
  assert ours.bos_id == ref.convert_tokens_to_ids("<|endoftext|>")


def test_gpt2_bpe_bytes_cache_and_errors(bpe_dir, tmp_path, monkeypatch):
  tok = tokenizers.GPT2Tokenizer.from_dir(bpe_dir)
  ids = tok.encode(MIXED + "<|endoftext|>")
  assert ids[-1] == tok.bos_id and tok.token_bytes[tok.bos_id] == 0
  assert int(tok.token_bytes[ids].sum()) == len(MIXED.encode("utf-8"))
  assert len(ids) < len(MIXED.encode("utf-8"))  # merges happened
  assert tok.decode(tok.encode("é")[:1]) == "\ufffd"
  # Chunked encoding (cut after newlines) equals encoding in one go; the
  # second encoding of the same text comes from the cache.
  body = inspect.getsource(textwrap)
  monkeypatch.setattr(tokenizers, "CHUNK_CHARS", 200)
  cached = tokenizers.encode_corpus(tok, body, "textwrap-train", str(tmp_path))
  np.testing.assert_array_equal(cached, tok.encode(body))
  assert len(list(tmp_path.glob("textwrap-train-gpt2-*.npy"))) == 1
  monkeypatch.setattr(tok, "encode", lambda s: 1 / 0)
  np.testing.assert_array_equal(
      tokenizers.encode_corpus(tok, body, "textwrap-train", str(tmp_path)),
      cached)
  with pytest.raises(UserError, match="needs vocab.json and merges.txt"):
    tokenizers.GPT2Tokenizer.from_dir(str(tmp_path))


def test_pretokenizer_without_regex_differs_only_on_other_numerics():
  regex = pytest.importorskip("regex")
  import re  # pylint: disable=g-import-not-at-top
  with_p = regex.compile(tokenizers._GPT2_PATTERN)
  plain = re.compile(tokenizers._GPT2_PATTERN_RE)
  for s in PARITY_STRINGS:
    assert plain.findall(s) == with_p.findall(s), repr(s)
  assert with_p.findall("x²") == ["x", "²"] and plain.findall("x²") == ["x²"]


def test_make_picks_the_vocab(bpe_dir):
  config = ml_collections.ConfigDict({"data": {
      "name": "python_stdlib", "source": "auto", "data_dir": "",
      "vocab": "byte"}})
  assert isinstance(tokenizers.make(config), tokenizers.ByteTokenizer)
  config.data.vocab = "gpt2"
  with pytest.raises(UserError, match="needs --config.init_from=DIR"):
    tokenizers.make(config)
  config.init_from = bpe_dir
  assert tokenizers.make(config).bos_id == tokenizers.GPT2Tokenizer.from_dir(
      bpe_dir).bos_id
  config.data.vocab = "char"
  chars = tokenizers.make(config)
  assert chars is tokenizers.make(config)  # built once per corpus
  assert "\n" in chars.chars and chars.vocab_size > 90
  config.data.vocab = "words"
  with pytest.raises(UserError, match="not one of byte, char, gpt2"):
    tokenizers.make(config)


# ---------------------------------------------------------------- pipeline


def _config(data_dir: str, **data) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "seed": 0,
      "data": {"name": "python_stdlib", "source": "auto", "data_dir": data_dir,
               "vocab": "byte", "seq_len": 64, "batch_size": 8,
               "eval_batch_size": 8, **data},
      "eval": {"num_examples": 20},
  })


def test_pipeline_serves_text_windows(tmp_path):
  data = pipeline.make(_config(str(tmp_path)))
  assert data.dataset.startswith("python_stdlib (Python ")
  assert data.num_eval == 20 and data.local_batch_size == 8
  assert isinstance(data.train, grain.DatasetIterator)
  batch = next(data.train)
  assert batch["tokens"].shape == (8, 65) and batch["tokens"].dtype == np.int32
  assert data.init_batch["tokens"].shape == (8, 65)
  state = data.train.get_state()
  expected = [next(data.train)["tokens"] for _ in range(2)]
  data.train.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(data.train)["tokens"], want)
  evals = list(data.eval_batches())
  assert [b["mask"].tolist() for b in evals] == [[1] * 8, [1] * 8,
                                                 [1] * 4 + [0] * 4]
  assert not evals[2]["tokens"][4:].any()
  assert evals[2]["tokens"][:4].any(axis=1).all()
  # Eval windows tile the held-out text: the first starts at its first byte.
  tok = tokenizers.ByteTokenizer()
  assert tok.decode(evals[0]["tokens"][0]).startswith("# ")
  np.testing.assert_array_equal(evals[0]["tokens"][1, 0],
                                evals[0]["tokens"][0, -1])
  two = [pipeline.make(_config(str(tmp_path)), p, 2) for p in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([next(d.train)["tokens"] for d in two]), batch["tokens"])
