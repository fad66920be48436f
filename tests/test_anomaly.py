"""Anomaly scores against closed forms and independent computations; the
inputs --mode=score reads and their one-line errors."""

import bz2
import io
import json
import math

import numpy as np
from PIL import Image
import pytest
from scipy import stats

from gen_jax.data import score_inputs
from gen_jax.errors import UserError
from gen_jax.evaluation import anomaly


def _pairwise_auroc(a, b) -> float:
  """P(score of an out example > score of an in example), ties 1/2."""
  a, b = np.asarray(a)[:, None], np.asarray(b)[None, :]
  return float(np.mean((b > a) + 0.5 * (b == a)))


def test_auroc_perfect_reversed_random_and_brute_force():
  rng = np.random.default_rng(0)
  inside, outside = rng.normal(size=300), rng.normal(size=200) + 10
  assert anomaly.auroc(inside, outside) == 1.0
  assert anomaly.auroc(outside, inside) == 0.0
  a, b = rng.normal(size=2000), rng.normal(size=2000)
  assert abs(anomaly.auroc(a, b) - 0.5) < 0.03
  # Ties and overlap: against the Mann-Whitney count.
  a, b = rng.integers(0, 5, 300), rng.integers(1, 6, 250)
  assert anomaly.auroc(a, b) == pytest.approx(_pairwise_auroc(a, b))
  fpr, tpr = anomaly.roc_curve(a, b)
  assert np.trapezoid(tpr, fpr) == pytest.approx(_pairwise_auroc(a, b))
  with pytest.raises(ValueError, match="non-finite"):
    anomaly.auroc([0.0, np.nan], [1.0])


def _mixture_log_density(x_N2: np.ndarray) -> np.ndarray:
  """A 2-D mixture of two unit Gaussians at (-3, 0) and (3, 0)."""
  comps = [stats.multivariate_normal([m, 0.0], np.eye(2)).logpdf(x_N2)
           for m in (-3.0, 3.0)]
  return np.logaddexp(*comps) - math.log(2.0)


def test_exact_log_density_ranks_2d_points():
  """The raw score of the exact density separates points of the mixture
  from points between and around its modes."""
  rng = np.random.default_rng(1)
  modes = rng.choice([-3.0, 3.0], 1000)
  inside = np.stack([modes, np.zeros(1000)], 1) + rng.normal(size=(1000, 2))
  # Between the modes and far outside: low density, however simple.
  between = np.stack([np.zeros(300), rng.normal(size=300) * 0.3], 1)
  far = rng.normal(size=(300, 2)) * 0.3 + np.array([0.0, 6.0])
  bits = lambda x: -_mixture_log_density(x) / (2 * math.log(2))
  assert anomaly.auroc(bits(inside), bits(far)) > 0.999
  assert anomaly.auroc(bits(inside), bits(between)) > 0.9
  # Sign: scores are "larger = more unusual"; the negated density fails.
  assert anomaly.auroc(-bits(inside), -bits(far)) < 0.001


def test_typicality_catches_the_mode_the_likelihood_prefers():
  """In 256 dimensions a standard Gaussian's samples lie at radius ~16:
  inputs at the mode have far higher density (raw AUROC 0: the Nalisnick
  effect) yet are atypical, which the typicality score sees."""
  d, rng = 256, np.random.default_rng(2)
  bits = lambda x: 0.5 * np.sum(x**2 + math.log(2 * math.pi), 1) / (
      d * math.log(2))
  train, test = rng.normal(size=(2000, d)), rng.normal(size=(500, d))
  near_mode = 0.1 * rng.normal(size=(500, d))
  assert anomaly.auroc(bits(test), bits(near_mode)) == 0.0
  ref = anomaly.typicality_reference(bits(train[:1000]), bits(train[1000:]),
                                     batch_size=10, seed=0)
  # H = the Gaussian's differential entropy per dim, in bits.
  assert ref.entropy == pytest.approx(
      0.5 * math.log2(2 * math.pi * math.e), abs=0.01)
  assert anomaly.auroc(anomaly.typicality_scores(bits(test), ref),
                       anomaly.typicality_scores(bits(near_mode), ref)) == 1.0
  # The batch test: about alpha of in-distribution batches rejected, every
  # batch at the mode.
  _, rejected_in = anomaly.typicality_batches(bits(rng.normal(size=(
      5000, d))), ref)
  assert rejected_in.mean() < 0.05
  stats_out, rejected_out = anomaly.typicality_batches(bits(near_mode), ref)
  assert rejected_out.all() and len(stats_out) == 50


def test_typicality_threshold_is_the_held_out_bootstrap_quantile():
  rng = np.random.default_rng(3)
  train, held = rng.normal(3.0, 0.5, 2000), rng.normal(3.0, 0.5, 2000)
  ref = anomaly.typicality_reference(train, held, batch_size=4, alpha=0.05,
                                     seed=0)
  # |mean of 4 - H| ~ |N(0, 0.5 / 2)|: its 95% quantile is 1.96 * 0.25.
  assert ref.threshold == pytest.approx(1.96 * 0.25, rel=0.05)
  assert ref.entropy == pytest.approx(np.mean(train))
  # Held-out scores 0.5 higher (a model that overfits its training data):
  # |N(0.5, 0.25)|, whose 95% quantile is 0.5 + 1.645 * 0.25.
  shifted = anomaly.typicality_reference(train, held + 0.5, batch_size=4,
                                         alpha=0.05, seed=0)
  assert shifted.threshold == pytest.approx(0.5 + 1.645 * 0.25, rel=0.05)
  assert shifted.entropy == ref.entropy


def test_compressors_count_the_bits_of_their_output():
  rng = np.random.default_rng(4)
  noise = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
  flat = np.full((2, 28, 28, 1), 200, np.uint8)
  png_noise = anomaly.compressed_bits(noise, "png")
  buf = io.BytesIO()
  Image.fromarray(noise[0, ..., 0]).save(buf, format="PNG", optimize=True,
                                         compress_level=9)
  assert png_noise[0] == 8 * len(buf.getvalue())
  # Noise does not compress below 8 bits per pixel; a flat image does.
  assert png_noise[0] > 8 * 784 and anomaly.compressed_bits(
      flat, "png")[0] < 0.2 * 8 * 784
  text = ["abc" * 100, "".join(map(chr, rng.integers(33, 127, 300)))]
  assert anomaly.compressed_bits(text, "bz2")[0] == 8 * len(
      bz2.compress(text[0].encode(), 9))
  for codec in ("zlib", "bz2", "lzma"):
    repeated, random_text = anomaly.compressed_bits(text, codec)
    assert repeated < 0.3 * random_text
  with pytest.raises(ValueError, match="png compresses images"):
    anomaly.compressed_bits(text, "png")


def test_corrections_subtract_in_the_right_direction():
  bpd = np.array([2.0, 5.0])
  np.testing.assert_allclose(anomaly.likelihood_ratio(bpd, [1.5, 1.0]),
                             [0.5, 4.0])
  np.testing.assert_allclose(anomaly.complexity_corrected(bpd, [0.5, 6.0]),
                             [1.5, -1.0])


# --- inputs -----------------------------------------------------------------

SHAPE = (28, 28, 1)


def _save_png(path, array):
  Image.fromarray(array).save(path)


def test_npz_inputs_and_their_errors(tmp_path):
  images = np.arange(3 * 784, dtype=np.uint8).reshape(3, 28, 28, 1)
  np.savez(tmp_path / "ok.npz", images=images, labels=np.arange(3))
  got = score_inputs.read(str(tmp_path / "ok.npz"), SHAPE)
  np.testing.assert_array_equal(got.examples, images)
  assert list(got.index) == [0, 1, 2] and not got.bad
  np.savez(tmp_path / "hw.npz", images[..., 0])  # [N, H, W] for C = 1
  assert score_inputs.read(str(tmp_path / "hw.npz"), SHAPE).examples.shape == (
      3, 28, 28, 1)
  cases = {
      "shape.npz": (np.zeros((2, 32, 32, 3), np.uint8),
                    r"images of shape \(32, 32, 3\).*\[N, 28, 28, 1\]"),
      "float.npz": (np.zeros((2, 28, 28, 1), np.float32), "give uint8"),
  }
  for name, (array, message) in cases.items():
    np.savez(tmp_path / name, images=array)
    with pytest.raises(UserError, match=message) as e:
      score_inputs.read(str(tmp_path / name), SHAPE)
    assert "\n" not in str(e.value)
  np.savez(tmp_path / "two.npz", a=images, b=images)
  with pytest.raises(UserError, match="name the images 'images'"):
    score_inputs.read(str(tmp_path / "two.npz"), SHAPE)
  with pytest.raises(UserError, match="no such file"):
    score_inputs.read(str(tmp_path / "missing.npz"), SHAPE)


def test_image_folders_convert_and_skip_bad_files(tmp_path):
  folder = tmp_path / "imgs"
  folder.mkdir()
  digit = np.zeros((28, 28), np.uint8)
  digit[10:18, 12:16] = 255
  _save_png(folder / "a.png", digit)
  rgb = np.zeros((56, 56, 3), np.uint8)
  rgb[..., 1] = 255  # green: grey level 150 (ITU-R 601-2)
  _save_png(folder / "b.png", rgb)
  (folder / "c.txt").write_text("not an image")
  got = score_inputs.read(str(folder), SHAPE)
  assert got.names == ["a.png", "b.png"] and list(got.index) == [0, 1]
  np.testing.assert_array_equal(got.examples[0, ..., 0], digit)
  assert got.examples.shape == (2, 28, 28, 1)
  assert np.all(got.examples[1] == 150)
  assert got.notes == {1: "resized from 56x56"}
  assert got.bad == [(2, "c.txt: not a readable image "
                      "(UnidentifiedImageError)")]
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match="the folder is empty"):
    score_inputs.read(str(empty), SHAPE)
  only_text = tmp_path / "text_only"
  only_text.mkdir()
  (only_text / "x.jpg").write_bytes(b"\x00\x01")
  with pytest.raises(UserError, match="none of its 1 files is a readable "
                     "image"):
    score_inputs.read(str(only_text), SHAPE)
  with pytest.raises(UserError, match="this model scores images"):
    (tmp_path / "t.txt").write_text("hello\n")
    score_inputs.read(str(tmp_path / "t.txt"), SHAPE)


def test_text_inputs_skip_bad_rows(tmp_path):
  (tmp_path / "t.txt").write_text("first\n\nthird\n")
  got = score_inputs.read(str(tmp_path / "t.txt"), None)
  assert got.examples == ["first", "third"] and list(got.index) == [0, 2]
  assert got.bad == [(1, "line 2: empty")]
  (tmp_path / "t.jsonl").write_text("\n".join([
      json.dumps("a\nb"), "{oops", json.dumps({"text": "c"}),
      json.dumps(3)]) + "\n")
  got = score_inputs.read(str(tmp_path / "t.jsonl"), None)
  assert got.examples == ["a\nb", "c"] and list(got.index) == [0, 2]
  assert [i for i, _ in got.bad] == [1, 3]
  with pytest.raises(UserError, match="scores texts"):
    score_inputs.read(str(tmp_path), None)
  with pytest.raises(UserError, match="needs --input"):
    score_inputs.read("", None)


# --- the background model's training inputs ----------------------------------


def test_perturbed_training_inputs():
  """data.perturb_rate: each pixel (token) replaced with that probability
  by a uniform value, the same for a global batch however it is split."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from gen_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"seed": 3, "data": {
      "name": "mnist", "perturb_rate": 0.25}})
  perturb = pipeline.perturb_transform(config, None)
  image = np.zeros((64, 28, 28, 1), np.uint8)
  idx = np.arange(100, 164)
  out = perturb({"image": image, "label": np.arange(64)}, idx, slice(0, 64))
  changed = out["image"] != 0
  # Of the replaced pixels, 1/256 draw 0 again.
  assert changed.mean() == pytest.approx(0.25 * 255 / 256, abs=0.01)
  values = out["image"][changed]
  assert values.min() >= 1 and values.max() == 255
  assert abs(values.astype(float).mean() - 128) < 3  # uniform 1..255
  np.testing.assert_array_equal(out["label"], np.arange(64))
  # Two processes' halves of the same global batch: the same pixels.
  halves = [perturb({"image": image[s]}, idx, s)["image"]
            for s in (slice(0, 32), slice(32, 64))]
  np.testing.assert_array_equal(np.concatenate(halves), out["image"])
  other = perturb({"image": image}, idx + 64, slice(0, 64))["image"]
  assert not np.array_equal(other, out["image"])
  tokens = np.full((8, 33), 7, np.int32)

  class Tok:
    vocab_size = 50
  config.data.name = "python_stdlib"
  hit = pipeline.perturb_transform(config, Tok())(
      {"tokens": tokens}, np.arange(8), slice(0, 8))["tokens"]
  assert hit.max() < 50 and 0.1 < (hit != 7).mean() < 0.4
  config.data.perturb_rate = 0.0
  assert pipeline.perturb_transform(config, None) is None
