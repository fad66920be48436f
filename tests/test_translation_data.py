"""Parallel text: the gettext corpus (cleaning, placeholders, the split by
catalog), the shared BPE vocabulary, length-bucketed batches, the sources."""

import os
import struct

import numpy as np
import pytest

from gen_jax import config as config_lib
from gen_jax.data import gettext_corpus
from gen_jax.data import pipeline
from gen_jax.data import translation
from gen_jax.errors import UserError


def write_mo(path, pairs):
  """A GNU .mo file of (msgid, msgstr) pairs (the header added)."""
  header = ("Content-Type: text/plain; charset=UTF-8\n"
            "Plural-Forms: nplurals=2; plural=(n != 1);\n")
  entries = sorted([("", header)] + list(pairs))
  ids = [k.encode("utf-8") for k, _ in entries]
  strs = [v.encode("utf-8") for _, v in entries]
  n = len(entries)
  table = 28
  data = 28 + 16 * n
  blob, id_table, str_table = b"", [], []
  for s in ids:
    id_table.append((len(s), data + len(blob)))
    blob += s + b"\0"
  for s in strs:
    str_table.append((len(s), data + len(blob)))
    blob += s + b"\0"
  out = struct.pack("<7I", 0x950412de, 0, n, table, table + 8 * n, 0, 0)
  out += b"".join(struct.pack("<2I", *e) for e in id_table + str_table)
  path.write_bytes(out + blob)


def _domains(held_out: bool, num: int) -> list[str]:
  names = (f"prog{i}" for i in range(1000))
  return [d for d in names if gettext_corpus.is_held_out(d) == held_out][:num]


@pytest.fixture
def catalogs(tmp_path, monkeypatch):
  """Catalogs of language 'xx' under a fake prefix: two train programs, one
  held-out program, an ISO table."""
  directory = tmp_path / "share" / "locale" / "xx" / "LC_MESSAGES"
  directory.mkdir(parents=True)
  train_a, train_b = _domains(False, 2)
  (held,) = _domains(True, 1)
  write_mo(directory / f"{train_a}.mo", [
      ("_Open", "Ö_ffnen"),
      ("Cannot open %s: %s", "Kann %2$s nicht öffnen: %1$s"),
      ("%d file\x00%d files", "%d Datei\x00%d Dateien"),
      ("menu\x04Quit", "Beenden"),
      ("Shared  line\nbreak", "Geteilte Zeile"),
      ("Broken %s", "Kaputt"),  # placeholder lost: dropped
      ("Untranslated", ""),
  ])
  write_mo(directory / f"{train_b}.mo", [
      ("Quit", "Verlassen"),  # the same source again: one pair kept
      ("Hello {name}", "Hallo {name}"),
  ])
  write_mo(directory / f"{held}.mo", [
      ("Quit", "Schließen"),  # seen in train: dropped from held-out
      ("Save as %(file)s", "Speichern als %(file)s"),
      ("Progress 100%%", "Fortschritt 100%%"),
  ])
  write_mo(directory / "iso_639.mo", [("German", "Deutsch")])
  monkeypatch.setattr(gettext_corpus, "PREFIXES", (str(tmp_path),))
  return train_a, train_b, held


def test_catalog_pairs_are_cleaned_split_by_catalog_and_deduplicated(
    catalogs):
  train, held_out, description = gettext_corpus.load("xx")
  assert dict(train) == {
      "Open": "Öffnen",
      "Cannot open {1}: {2}": "Kann {2} nicht öffnen: {1}",
      "{1} file": "{1} Datei",
      "Quit": "Beenden",
      "Shared line break": "Geteilte Zeile",
      "Hello {1}": "Hallo {1}",
  }
  assert dict(held_out) == {"Save as {1}": "Speichern als {1}",
                            "Progress 100%": "Fortschritt 100%"}
  assert "2 catalogs / 6 pairs train, 1 catalogs / 2 pairs held out" in (
      description)


def test_the_split_is_by_catalog_and_fixed_by_name():
  # 1 in 8 names is held out, decided by the name alone.
  names = [f"program{i}" for i in range(4000)]
  held = [n for n in names if gettext_corpus.is_held_out(n)]
  assert 0.1 < len(held) / len(names) < 0.15
  assert gettext_corpus.is_held_out(held[0])  # the same answer again


def test_system_catalogs_have_no_catalog_or_source_on_both_sides():
  """The machine's own English-German catalogs (what the experiments read):
  every pair comes from a catalog of its own side, no source is on both."""
  directory = gettext_corpus.catalog_dir("de")
  assert directory is not None, "no German gettext catalogs on this machine"
  train, held_out, description = gettext_corpus.load("de")
  assert len(train) > 20000 and len(held_out) > 500, description
  sides = {False: set(), True: set()}  # cleaned sources by side
  for name in os.listdir(directory):
    if name.endswith(".mo") and not name.startswith("iso_"):
      held = gettext_corpus.is_held_out(name[:-3])
      for pair in gettext_corpus.read_catalog(os.path.join(directory, name)):
        cleaned = gettext_corpus.clean_pair(*pair)
        if cleaned is not None:
          sides[held].add(cleaned[0])
  train_sources = {s for s, _ in train}
  held_sources = {s for s, _ in held_out}
  assert train_sources <= sides[False] and held_sources <= sides[True]
  assert not train_sources & held_sources
  assert held_sources == sides[True] - sides[False]  # all, minus the seen


@pytest.mark.parametrize("source,target,expected", [
    ("%s of %d", "%d von %s", None),  # printf types swapped: dropped
    ("%s of %d", "%2$d von %1$s", ("{1} of {2}", "{2} von {1}")),
    ("%-5lu items", "%-5lu Einträge", ("{1} items", "{1} Einträge")),
    ("%(n)d of %(total)d", "%(total)d: %(n)d",
     ("{1} of {2}", "{2}: {1}")),
    ("{0} and {1}", "{1} und {0}", ("{1} and {2}", "{2} und {1}")),
    ("Copy %1 to %2", "%2 nach %1 kopieren",
     ("Copy {1} to {2}", "{2} nach {1} kopieren")),
    ("50%% done", "50%% fertig", ("50% done", "50% fertig")),
    ("&Save", "&Speichern", ("Save", "Speichern")),
    ("a_b", "a_b", ("a_b", "a_b")),  # not a mnemonic (mid-word source)
    # Positional in the source: numbered by appearance, matched by index.
    ("%2$s in %1$s", "%1$s dans %2$s", ("{1} in {2}", "{2} dans {1}")),
    ("100% complete", "100% fertig", ("100% complete", "100% fertig")),
    ("{name}: %s", "{name}: %s", ("{1}: {2}", "{1}: {2}")),
    ("%(user)s has %d files", "%d Dateien: %(user)s",
     ("{1} has {2} files", "{2} Dateien: {1}")),
])
def test_placeholders_and_mnemonics(source, target, expected):
  got = gettext_corpus.clean_pair(source, target)
  assert got == expected


def test_typed_sources_get_their_placeholders_back():
  text, found = gettext_corpus.clean_source("Cannot  open %s:\n%d")
  assert text == "Cannot open {1}: {2}" and found == ["%s", "%d"]
  assert gettext_corpus.restore_placeholders("{2} {1} {3}", found) == (
      "%d %s {3}")


@pytest.fixture(scope="module")
def german():
  return translation.load_pairs("gettext", "en-de", "auto", "")


def test_bpe_is_lossless_deterministic_and_cached(german, tmp_path):
  texts = [s for s, _ in german.train[:3000]] + [t for _, t in
                                                 german.train[:3000]]
  a = translation.SubwordTokenizer.train(texts, 1000)
  b = translation.SubwordTokenizer.train(texts, 1000)
  assert a.to_json() == b.to_json()
  assert a.vocab_size == 1000
  for source, target in german.eval[:300]:  # held-out text: never seen
    for text in (source, target):
      ids = a.encode(text)
      assert min(ids) > 2  # no specials inside a sentence
      assert a.decode(ids + [2, 57, 80]) == text  # stops at </s>
  small = translation.Pairs(german.train[:500], german.eval[:10], "x", True)
  first = translation.tokenizer_for(small, 600, str(tmp_path))
  files = list((tmp_path / "gen_jax_tokens").glob("bpe600-*.json"))
  assert len(files) == 1
  files[0].write_text(a.to_json())  # the file is what a later run reads
  assert translation.tokenizer_for(small, 600, str(tmp_path)).vocab_size == (
      1000) != first.vocab_size


def test_arrays_mark_pairs_and_drop_long_ones(german):
  tok = translation.SubwordTokenizer.train(
      [s for s, _ in german.train[:2000]] + [t for _, t in german.train[:2000]],
      800)
  pairs = [("Open", "Öffnen"), ("a " * 40, "b"), ("Quit", "Beenden")]
  arrays, dropped = translation.to_arrays(tok, pairs, max_len=8)
  assert dropped == 1
  assert arrays["source"].shape == (2, 16) and arrays["target"].shape == (2,
                                                                          16)
  # No limit: every pair, as wide as the longest (40 'a ' tokens and more).
  everything, none = translation.to_arrays(tok, pairs, max_len=None)
  assert none == 0 and len(everything["source"]) == 3
  assert everything["source"].shape[1] >= len(tok.encode("a " * 40)) + 1
  src, tgt = arrays["source"][0], arrays["target"][0]
  n = len(tok.encode("Open"))
  assert src[n] == translation.EOS and not src[n + 1:].any()
  assert tgt[0] == translation.BOS and tok.decode(tgt) == "Öffnen"
  assert tok.decode(src) == "Open"


def test_length_buckets_cover_each_epoch_once_in_similar_lengths():
  lengths = np.random.default_rng(0).integers(1, 50, 640)
  source = pipeline.ArraySource({"x": np.arange(640), "n": lengths})
  ds = pipeline.train_dataset(source, 16, seed=3, process_index=0,
                              process_count=1, lengths=lengths, pool=8)
  epoch = [ds[i] for i in range(40)]  # 40 batches of 16 = one epoch
  seen = np.concatenate([b["x"] for b in epoch])
  assert sorted(seen) == list(range(640))
  spread = np.mean([np.ptp(b["n"]) for b in epoch])
  plain = pipeline.train_dataset(source, 16, 3, 0, 1)
  plain_spread = np.mean([np.ptp(plain[i]["n"]) for i in range(40)])
  assert spread < plain_spread / 4
  # A function of the position: a restored iterator reads the same batches.
  again = pipeline.train_dataset(source, 16, 3, 0, 1, lengths=lengths, pool=8)
  np.testing.assert_array_equal(again[37]["x"], epoch[37]["x"])
  # Not the same order every epoch.
  assert not np.array_equal(ds[40]["x"], epoch[0]["x"])


def test_trimmed_batches_are_cut_by_the_global_batch():
  assert [translation.bucket_width(n) for n in (1, 8, 9, 64, 65, 97)] == [
      8, 8, 16, 64, 96, 128]
  source = np.zeros((4, 16), np.int32)
  target = np.zeros((4, 24), np.int32)
  source[0, :3], source[1, :10], source[2, :2], source[3, :2] = 5, 5, 5, 5
  target[:, :4] = 5
  target[3, :20] = 5
  cut = translation.trim_transform(
      translation.lengths({"source": source, "target": target}))
  # This process holds rows 2 and 3 of the global batch 0-3: its width is
  # the global batch's (row 3's target, 20 tokens -> 24).
  out = cut({"source": source[2:], "target": target[2:]},
            np.array([0, 1, 2, 3]), slice(2, 4))
  assert out["source"].shape == (2, 16) and out["target"].shape == (2, 24)
  # Rows 0 and 2: 4 tokens at most -> both sides cut to 8.
  out = cut({"source": source[[0, 2]], "target": target[[0, 2]]},
            np.array([0, 2]), slice(0, 2))
  assert out["source"].shape == (2, 8) and out["target"].shape == (2, 8)
  np.testing.assert_array_equal(out["source"], source[[0, 2], :8])
  np.testing.assert_array_equal(out["target"], target[[0, 2], :8])
  # Row 1's 10-token source -> 16.
  out = cut({"source": source[[1, 2]], "target": target[[1, 2]]},
            np.array([1, 2]), slice(0, 2))
  assert out["source"].shape == (2, 16) and out["target"].shape == (2, 16)


def test_threaded_reads_give_the_sequential_batches():
  lengths = np.random.default_rng(1).integers(1, 50, 512)
  source = pipeline.ArraySource({"x": np.arange(512), "n": lengths})
  ds = pipeline.train_dataset(source, 8, seed=0, process_index=0,
                              process_count=1, lengths=lengths, pool=4)
  import grain  # pylint: disable=g-import-not-at-top
  it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=4,
                                                 prefetch_buffer_size=16)))
  fresh = pipeline.train_dataset(source, 8, 0, 0, 1, lengths=lengths, pool=4)
  for i in range(150):
    np.testing.assert_array_equal(next(it)["x"], fresh[i]["x"])


def test_sources_fall_back_loudly_or_fail_clearly(tmp_path, caplog):
  pairs = translation.load_pairs("wmt14_translate", "en-de", "auto",
                                 str(tmp_path))
  assert pairs.dataset.startswith("gettext") and pairs.placeholders
  assert any("not prepared" in r.message for r in caplog.records)
  with pytest.raises(UserError, match="not prepared"):
    translation.load_pairs("wmt14_translate", "en-de", "tfds", str(tmp_path))
  with pytest.raises(UserError, match="from English"):
    translation.load_pairs("gettext", "de-en", "auto", "")
  with pytest.raises(UserError, match="source-target"):
    translation.load_pairs("gettext", "english", "auto", "")
  with pytest.raises(UserError, match="no gettext catalogs for 'qq'"):
    translation.load_pairs("gettext", "en-qq", "auto", "")
  with pytest.raises(UserError, match="has cs-en, de-en"):
    translation.load_pairs("wmt14_translate", "en-ja", "auto", str(tmp_path))
  config = config_lib.get_config("transformer_translate:smoke",
                                 ["data.max_len=0"])
  with pytest.raises(UserError, match="max_len"):
    translation.load(config)
