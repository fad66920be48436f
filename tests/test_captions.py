"""Digit captions: measured ink attributes, words, grammar, parsing, bytes."""

import collections
import itertools

import numpy as np
import pytest

from gen_jax.data import captions


def _blank(n: int = 1) -> np.ndarray:
  return np.zeros((n, 28, 28), np.uint8)


def _bar(width: int, top: int = 5, height: int = 15) -> np.ndarray:
  """A vertical bar, `width` columns wide starting at column 10."""
  image = _blank()[0]
  image[top:top + height, 10:10 + width] = 255
  return image


def _line(cols_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One pixel per row 4..23 at column cols_fn(row); also the coordinates."""
  rows = np.arange(4, 24)
  cols = cols_fn(rows)
  image = _blank()[0]
  image[rows, cols] = 200
  return image, rows, cols


@pytest.fixture(scope="module")
def train():
  from gen_jax.data import embedded  # pylint: disable=g-import-not-at-top
  return embedded.load_arrays()["train"]


# ---------------------------------------------------------------- measure


def test_thickness_of_drawn_bars():
  images = np.stack([_bar(1), _bar(3), _bar(5), _blank()[0]])[..., None]
  thickness = captions.measure(images)["thickness"]
  assert thickness[0] == 2 * 15 / (2 * 15 + 2)  # 0.9375
  assert thickness[1] == 2 * 45 / (2 * 15 + 2 * 3)  # 2.5
  assert thickness[2] == 2 * 75 / (2 * 15 + 2 * 5)  # 3.75
  assert thickness[2] > thickness[1] > thickness[0]
  assert thickness[3] == 0


def test_faint_pixels_are_not_ink_and_the_border_counts_as_edge():
  image = _bar(3)
  image[:, 0] = 127  # Below the ink threshold: ignored.
  edge = _blank()[0]
  edge[0:15, 0:3] = 128  # Touching the image's corner: same as inside.
  thickness = captions.measure(np.stack([image, edge]))["thickness"]
  np.testing.assert_array_equal(thickness, [2.5, 2.5])


def test_slant_of_drawn_lines():
  slash, rows, cols = _line(lambda r: 20 - r // 2)  # '/': top right.
  backslash, _, mirror_cols = _line(lambda r: 7 + r // 2)
  horizontal = _blank()[0]
  horizontal[12, 5:20] = 255
  images = np.stack([_bar(1), _bar(3), slash, backslash, horizontal, _blank()[0]])
  slant = captions.measure(images)["slant"]
  assert slant[0] == 0 and slant[1] == 0
  # One column every two rows: a shear of about 0.5 (least squares: 0.496).
  assert slant[2] == pytest.approx(0.5, abs=0.01)
  assert slant[2] == pytest.approx(-np.polyfit(rows, cols, 1)[0], abs=1e-9)
  assert slant[3] == pytest.approx(-slant[2], abs=1e-9)
  assert slant[3] == pytest.approx(-np.polyfit(rows, mirror_cols, 1)[0],
                                   abs=1e-9)
  assert slant[4] == 0 and slant[5] == 0


def test_height_of_drawn_bars():
  images = np.stack([_bar(2, top=5, height=15), _bar(1, top=0, height=28),
                     _bar(4, top=27, height=1), _blank()[0]])
  np.testing.assert_array_equal(captions.measure(images)["height"],
                                [15, 28, 1, 0])


def test_measure_rejects_colour_images():
  with pytest.raises(ValueError, match="shape"):
    captions.measure(np.zeros((2, 28, 28, 3), np.uint8))


def test_thresholds_are_what_the_module_says_on_the_embedded_digits(train):
  images, _ = train
  stats = captions.measure(images)
  # Thickness: the terciles, a third of the digits per word.
  terciles = np.quantile(stats["thickness"], [1 / 3, 2 / 3])
  np.testing.assert_allclose(captions.THICKNESS_THRESHOLDS, terciles,
                             atol=0.006)
  counts = collections.Counter(captions.thickness_words(stats["thickness"]))
  assert len(counts) == 3, counts
  for word, count in counts.items():
    assert abs(count / len(images) - 1 / 3) < 0.03, (word, count)
  # Slant: fixed shears, with the shares the module documents.
  counts = collections.Counter(captions.slant_words(stats["slant"]))
  shares = [counts[w] / len(images) for w in captions.SLANT_WORDS]
  np.testing.assert_allclose(shares, [0.15, 0.44, 0.41], atol=0.02)


# ---------------------------------------------------------------- captions


def test_caption_grammar():
  assert captions.caption(7, "thick", "upright") == "a thick, upright seven"
  assert captions.caption(2, "thin", "slanted") == "a thin, slanted two"
  assert captions.caption(0, "thin", "upright", keep_slant=False) == (
      "a thin zero")
  assert captions.caption(3, "", "slanted left") == "a slanted left three"
  assert captions.caption(9, "thick", "upright", keep_thickness=False) == (
      "an upright nine")
  assert captions.caption(8, "thick", "upright", False, False) == "an eight"
  assert captions.caption(7, "thick", "upright", False, False) == "a seven"
  assert captions.caption(1, "", "upright", keep_slant=False) == "a one"
  with pytest.raises(ValueError, match="thickness"):
    captions.caption(1, "medium", "upright")
  with pytest.raises(ValueError, match="slant"):
    captions.caption(1, "thin", "left")
  with pytest.raises(ValueError, match="digit"):
    captions.caption(10, "thin", "upright")


def test_digit_captions_keep_all_or_nothing(train):
  images, labels = train[0][:300], train[1][:300]
  names = [f"a {captions.DIGIT_NAMES[y]}" for y in labels]
  bare = captions.digit_captions(images, labels, np.random.default_rng(0),
                                 keep_prob=0.0)
  assert bare == names

  full = captions.digit_captions(images, labels)
  stats = captions.measure(images)
  thick = captions.thickness_words(stats["thickness"])
  slant = captions.slant_words(stats["slant"])
  assert full == captions.digit_captions(images, labels,
                                         np.random.default_rng(0), 1.0)
  for text, y, t, s in zip(full, labels, thick, slant):
    assert text == captions.caption(int(y), t, s)
    assert text.endswith(captions.DIGIT_NAMES[y]) and s in text
    if t:
      assert text.startswith(f"a {t}, ")
    else:
      assert not {"thin", "thick", "thin,", "thick,"} & set(text.split())
  assert {"thin", "", "thick"} == set(thick)


def test_digit_captions_drop_each_word_independently(train):
  images, labels = train[0][:400], train[1][:400]
  texts = captions.digit_captions(images, labels, np.random.default_rng(1),
                                  keep_prob=0.5)
  has_slant = np.array([any(w in t for w in captions.SLANT_WORDS)
                        for t in texts])
  has_thickness = np.array([("thin" in t) or ("thick" in t) for t in texts])
  assert 0.4 < has_slant.mean() < 0.6
  assert 0.2 < has_thickness.mean() < 0.45  # Half of the two thirds named.
  # Words without the other: the draws are independent.
  assert (has_slant & ~has_thickness).any()
  assert (has_thickness & ~has_slant).any()
  with pytest.raises(ValueError, match="rng"):
    captions.digit_captions(images, labels, keep_prob=0.5)
  with pytest.raises(ValueError, match="labels"):
    captions.digit_captions(images, labels[:5])


# ---------------------------------------------------------------- parse


def test_parse_inverts_caption():
  slant_of = {"slanted left": "left", "upright": "upright",
              "slanted": "right"}
  for label, t, s, keep_t, keep_s in itertools.product(
      range(10), captions.THICKNESS_WORDS, captions.SLANT_WORDS,
      (True, False), (True, False)):
    parsed = captions.parse(captions.caption(label, t, s, keep_t, keep_s))
    assert parsed == {"label": label,
                      "thickness": (t or None) if keep_t else None,
                      "slant": slant_of[s] if keep_s else None}


def test_parse_free_prompts():
  assert captions.parse("A THICK Seven, please!") == {
      "label": 7, "thickness": "thick", "slant": None}
  assert captions.parse("draw an upright 'four' in blue") == {
      "label": 4, "thickness": None, "slant": "upright"}
  assert captions.parse("slanted right") == {
      "label": None, "thickness": None, "slant": "right"}
  assert captions.parse("something else entirely") == {
      "label": None, "thickness": None, "slant": None}


# ---------------------------------------------------------------- bytes


def test_encode_decode():
  texts = ["a seven", "héllo", ""]
  ids = captions.encode(texts, 10)
  assert ids.dtype == np.int32 and ids.shape == (3, 10)
  np.testing.assert_array_equal(ids[:, 0], captions.BYTE_BOS)
  np.testing.assert_array_equal(ids[0, 1:8], np.frombuffer(b"a seven",
                                                           np.uint8) + 2)
  np.testing.assert_array_equal(ids[0, 8:], captions.BYTE_PAD)
  assert (ids[1, 1:7] > 1).all() and (ids[1, 7:] == 0).all()  # 6 bytes.
  np.testing.assert_array_equal(ids[2, 1:], 0)
  assert ids.max() < captions.VOCAB_SIZE
  assert [captions.decode(row) for row in ids] == texts

  cut = captions.encode(["a thick, upright seven"], 6)
  assert cut.shape == (1, 6) and captions.decode(cut[0]) == "a thi"
  emoji = captions.encode(["7 😀"], 8)
  np.testing.assert_array_equal(emoji[0], [1, 57, 34, 242, 161, 154, 130, 0])
  assert captions.decode(emoji[0]) == "7 😀"
  with pytest.raises(ValueError, match="vocabulary"):
    captions.decode(np.array([1, captions.VOCAB_SIZE]))
