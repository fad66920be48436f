"""OOD test sets: image and text sets, their shapes, content and determinism."""

import collections
import os
import time

import numpy as np
from PIL import Image
import pytest

from gen_jax.data import ood
from gen_jax.errors import UserError


def _in_dist(n: int = 50, seed: int = 0) -> np.ndarray:
  """Digit-like images: random ink in the 20x20 box of 28x28, black border."""
  images = np.zeros((n, 28, 28, 1), np.uint8)
  images[:, 4:24, 4:24, 0] = np.random.default_rng(seed).integers(
      0, 256, (n, 20, 20))
  return images


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
  """[B, 28, 28, 1] -> [B, 2] (row, col) intensity-weighted centres."""
  mass = images[..., 0].astype(np.float64)
  coords = np.arange(28, dtype=np.float64)
  total = mass.sum(axis=(1, 2))
  return np.stack([mass.sum(2) @ coords / total,
                   mass.sum(1) @ coords / total], 1)


def _rows(images: np.ndarray) -> collections.Counter:
  return collections.Counter(x.tobytes() for x in images)


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("name", ood.IMAGE_SETS)
def test_image_set_shape_dtype_and_determinism(name):
  in_dist = _in_dist()
  out = ood.image_set(name, in_dist, 12, seed=3)
  assert out.shape == (12, 28, 28, 1) and out.dtype == np.uint8
  assert out.any()
  np.testing.assert_array_equal(out, ood.image_set(name, in_dist, 12, seed=3))
  assert not np.array_equal(out, ood.image_set(name, in_dist, 12, seed=4))
  assert len(_rows(out)) > 1  # Not one image repeated.


@pytest.mark.parametrize("name", ["noisy", "inverted", "uniform_noise",
                                  "constant"])
def test_any_shape_sets_follow_in_dist_shape(name):
  in_dist = np.random.default_rng(0).integers(0, 256, (5, 16, 12, 3),
                                              dtype=np.uint8)
  out = ood.image_set(name, in_dist, 9, seed=0)
  assert out.shape == (9, 16, 12, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["digits_8x8", "glyphs"])
def test_mnist_only_sets_refuse_other_shapes(name):
  with pytest.raises(UserError, match="28x28x1") as e:
    ood.image_set(name, np.zeros((2, 32, 32, 3), np.uint8), 4, seed=0)
  assert "\n" not in str(e.value) and "32x32x3" in str(e.value)


def test_inverted_is_255_minus_chosen_rows():
  in_dist = _in_dist(50)
  for num in (20, 120):
    out = ood.image_set("inverted", in_dist, num, seed=1)
    match = np.all((255 - out)[:, None] == in_dist[None], axis=(2, 3, 4))
    assert (match.sum(1) == 1).all()  # Each is exactly one source, inverted.
    source = match.argmax(1)
    if num <= len(in_dist):
      assert len(set(source)) == num  # Without replacement.
      assert not np.array_equal(source, np.arange(num))  # A seeded choice.
    else:
      assert len(set(source)) < num


def test_noisy_adds_gaussian_noise_of_quarter_range():
  grey = np.full((10, 28, 28, 1), 128, np.uint8)
  noise = ood.image_set("noisy", grey, 40, seed=0).astype(np.float64) - 128
  # Clipping at 0 and 255 (2 std away) shrinks the std by about 3%.
  assert 0.9 * 0.25 * 255 < noise.std() < 1.01 * 0.25 * 255
  assert abs(noise.mean()) < 1.0
  in_dist = _in_dist(20)
  out = ood.image_set("noisy", in_dist, 20, seed=0)
  diff = np.abs(out[:, None].astype(int) - in_dist[None]).mean(axis=(2, 3, 4))
  assert diff.min() > 20  # No output is (nearly) an original.
  # Each is its source plus noise: much closer to one original than the rest.
  assert (np.sort(diff, 1)[:, 0] < 0.8 * np.sort(diff, 1)[:, 1]).all()


def test_constant_images_have_one_value_each():
  out = ood.image_set("constant", _in_dist(), 50, seed=0).reshape(50, -1)
  np.testing.assert_array_equal(out.min(1), out.max(1))
  assert len(set(out[:, 0])) > 25


def test_uniform_noise_covers_the_range():
  out = ood.image_set("uniform_noise", _in_dist(), 20, seed=0)
  assert out.min() == 0 and out.max() == 255
  assert abs(out.mean() - 127.5) < 2
  assert abs(out.std() - 256 / 12 ** 0.5) < 2


def test_digits_8x8_centred_like_mnist():
  out = ood.image_set("digits_8x8", _in_dist(), 300, seed=0)
  border = np.ones((28, 28), bool)
  border[4:24, 4:24] = False
  assert not out[:, border].any()
  assert out.max() == 255 and (out.max(axis=(1, 2, 3)) > 128).all()
  centre = _centre_of_mass(out)
  assert np.abs(centre.mean(0) - 13.5).max() < 1.0
  assert np.abs(centre - 13.5).max() < 4.5
  assert len(_rows(out)) > 250  # Not a few digits repeated.


def test_digits_8x8_are_the_sklearn_digits_once_each():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  small = load_digits().images
  out = ood.image_set("digits_8x8", _in_dist(), len(small), seed=5)
  assert _rows(out) == _rows(ood._digits_8x8())  # Without replacement.
  # Upright and unflipped: the 20x20 box shrunk back to 8x8 is the digit.
  full = ood._digits_8x8()
  for k in (0, 1, 7, 500, 1796):
    back = np.asarray(Image.fromarray(full[k, 4:24, 4:24, 0]).resize(
        (8, 8), Image.Resampling.BOX), np.float64)
    assert np.corrcoef(back.ravel(), small[k].ravel())[0, 1] > 0.9
    assert not np.allclose(small[k], small[k].T)  # The check can fail.
  many = ood.image_set("digits_8x8", _in_dist(), 2000, seed=5)
  assert many.shape == (2000, 28, 28, 1) and len(_rows(many)) <= len(small)


def test_glyphs_have_centred_ink_in_the_box():
  if not ood.font_paths():
    with pytest.raises(UserError, match="font"):
      ood.image_set("glyphs", _in_dist(), 10, seed=0)
    return
  out = ood.image_set("glyphs", _in_dist(), 80, seed=0)
  assert (out.max(axis=(1, 2, 3)) > 128).all()
  border = np.ones((28, 28), bool)
  border[4:24, 4:24] = False
  assert not out[:, border].any()
  for image in out[..., 0]:
    rows, cols = np.nonzero(image)
    extent = (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    assert 18 <= max(extent) <= 20  # Scaled to fit 20x20.
    assert abs((rows.max() + rows.min()) / 2 - 13.5) <= 1
    assert abs((cols.max() + cols.min()) / 2 - 13.5) <= 1
  assert np.abs(_centre_of_mass(out).mean(0) - 13.5).max() < 1.5
  assert len(_rows(out)) > 70


def test_glyphs_skip_missing_characters_and_bad_fonts(monkeypatch, tmp_path):
  dejavu = [p for p in ood.font_paths()
            if os.path.basename(p) == "DejaVuSans.ttf"]
  if dejavu:
    assert ood._glyph(dejavu[0], "A") is not None
    assert ood._glyph(dejavu[0], "\u4e00") is None  # No CJK in DejaVu.
  bad = tmp_path / "bad.ttf"
  bad.write_bytes(b"not a font")
  monkeypatch.setattr(ood, "font_paths", lambda: [str(bad)])
  with pytest.raises(UserError, match="fonts-dejavu"):
    ood.image_set("glyphs", _in_dist(), 3, seed=0)
  monkeypatch.setattr(ood, "font_paths", lambda: [])
  with pytest.raises(UserError, match="No TrueType"):
    ood.image_set("glyphs", _in_dist(), 3, seed=0)


# ---------------------------------------------------------------- text

_SOURCE = ["import os\nimport sys\n\n\ndef main(argv):\n  path = argv[1]\n"
           "  return os.path.exists(path)\n",
           "class A:\n  x = 1\n  y = 2\n\n  def f(self):\n    return self.x\n",
           "print('hello world from a one line example')"]


def test_chunks_keep_text_and_cut_at_lines():
  text = "first line\nsecond line here\n" + "word " * 30 + "\nlast\n"
  chunks = ood._chunks(text, 24)
  assert "".join(chunks) == text and max(map(len, chunks)) <= 24
  assert chunks[:2] == ["first line\n", "second line here\n"]
  assert chunks[2] == "word " * 4  # A long line is cut at a space.
  assert ood._chunks("x" * 10, 4) == ["xxxx", "xxxx", "xx"]


@pytest.mark.parametrize("name", ood.TEXT_SETS)
def test_text_set_lengths_and_determinism(name):
  out = ood.text_set(name, _SOURCE, 25, 120, seed=0)
  assert len(out) == 25 and all(isinstance(s, str) for s in out)
  assert all(0 < len(s) <= 120 for s in out)
  assert out == ood.text_set(name, _SOURCE, 25, 120, seed=0)
  assert out != ood.text_set(name, _SOURCE, 25, 120, seed=1)


def test_prose_is_english():
  out = ood.text_set("prose", [], 40, 300, seed=0)
  assert all(len(s) <= 300 for s in out)
  assert np.mean([len(s) >= 150 for s in out]) > 0.9  # About `length`.
  english = [s for s in out if any(w in s for w in (" the ", " is ", " of "))]
  assert len(english) >= 30
  assert np.mean([s.endswith("\n") for s in out]) > 0.8  # Cut at lines.


def test_other_code_is_not_python_and_quick():
  start = time.monotonic()
  out = ood.text_set("other_code", [], 40, 200, seed=0)
  assert time.monotonic() - start < 10
  assert len(out) == 40 and all(len(s) <= 200 for s in out)
  # C, shell and Perl: braces, semicolons, '$' or '#' directives.
  assert np.mean([any(c in s for c in ";{$#") for s in out]) > 0.6
  files = ood.code_files(np.random.default_rng(0))
  assert sum(map(len, files.values())) <= ood.MAX_CODE_FILES
  assert not any(p.endswith(".py") for ps in files.values() for p in ps)


def test_other_code_without_files_is_a_user_error(monkeypatch):
  monkeypatch.setattr(ood, "code_files", lambda rng: {"c": [], "perl": []})
  with pytest.raises(UserError, match="other_code"):
    ood.text_set("other_code", [], 3, 100, seed=0)


def test_interpreter_and_decode(tmp_path):
  cases = {"#!/bin/sh\necho": "shell", "#! /usr/bin/env bash\n": "shell",
           "#!/usr/bin/perl -w\n": "perl", "#!/usr/bin/python3\n": None,
           "#!/usr/share/tool\n": None, "echo hi\n": None}
  for i, (head, kind) in enumerate(cases.items()):
    path = tmp_path / f"s{i}"
    path.write_text(head)
    assert ood._interpreter(str(path)) == kind, head
  assert ood._decode(b"ab\0cd", False) is None
  assert ood._decode(b"\xff\xfe bad", False) is None
  assert ood._decode("caf\u00e9".encode()[:-1], True) == "caf"
  assert ood._decode("caf\u00e9".encode()[:-1], False) is None


def test_shuffled_keeps_the_lines_of_its_source():
  sources = [s.split("\n") for s in _SOURCE]
  out = ood.text_set("shuffled", _SOURCE, 30, 500, seed=0)
  for text in out:
    if "\n" in text:
      lines = collections.Counter(text.split("\n"))
      assert lines in [collections.Counter(s) for s in sources]
      assert text not in _SOURCE
    else:  # The one-line example: its words shuffled.
      assert sorted(text.split(" ")) == sorted(_SOURCE[2].split(" "))
      assert text != _SOURCE[2]
  assert len(set(out)) > 10


def test_shuffled_long_sources_are_cut_first():
  source = "".join(f"line_{i} = {i} * 2\n" for i in range(200))
  out = ood.text_set("shuffled", [source], 10, 100, seed=0)
  lines = collections.Counter(source.split("\n"))
  for text in out:
    assert 50 <= len(text) <= 100
    assert not collections.Counter(text.split("\n")) - lines


# ---------------------------------------------------------------- validation


def test_bad_arguments_are_user_errors():
  with pytest.raises(UserError, match="digits_8x8, glyphs"):
    ood.image_set("cifar", _in_dist(), 3, seed=0)
  with pytest.raises(UserError, match="prose, other_code, shuffled"):
    ood.text_set("poetry", _SOURCE, 3, 100, seed=0)
  with pytest.raises(UserError, match="constant"):
    ood.describe("nothing")
  with pytest.raises(UserError, match="num >= 1"):
    ood.image_set("constant", _in_dist(), 0, seed=0)
  with pytest.raises(UserError, match="num >= 1"):
    ood.text_set("prose", [], 0, 100, seed=0)
  with pytest.raises(UserError, match="length >= 1"):
    ood.text_set("prose", [], 3, 0, seed=0)
  with pytest.raises(UserError, match="uint8"):
    ood.image_set("noisy", _in_dist().astype(np.float32), 3, seed=0)
  with pytest.raises(UserError, match="at least one"):
    ood.image_set("inverted", _in_dist()[:0], 3, seed=0)
  with pytest.raises(UserError, match="no non-blank"):
    ood.text_set("shuffled", ["", "  \n"], 3, 100, seed=0)


def test_describe_every_set_in_one_line():
  for name in ood.IMAGE_SETS + ood.TEXT_SETS:
    text = ood.describe(name)
    assert text and "\n" not in text and len(text) < 80
