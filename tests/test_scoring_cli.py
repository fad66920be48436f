"""`--mode=score` end to end: a VAE with a background model, a language
model, the files written, bad rows, seeds, and the one-line errors."""

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import run_main
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import scoring
from gen_jax.data import embedded
from gen_jax.errors import UserError

VAE = ["--exp=vae_mnist:smoke", "--config.model.likelihood=gaussian",
       "--config.data.eval_batch_size=96"]


@pytest.fixture(scope="module")
def vae_runs(data_dir, tmp_path_factory):
  """A smoke VAE."""
  root = tmp_path_factory.mktemp("scoring")
  run_main(VAE + [f"--workdir={root / 'vae'}"], data_dir)
  return root


def _digits(num: int) -> np.ndarray:
  return embedded.load_arrays()["test"][0][:num]


def test_score_writes_every_score_and_reports_bad_rows(vae_runs, data_dir,
                                                       tmp_path):
  folder = tmp_path / "inputs"
  folder.mkdir()
  digits = _digits(12)
  for i, d in enumerate(digits):
    Image.fromarray(d[..., 0]).save(folder / f"{i:02d}.png")
  (folder / "05b.txt").write_text("not an image")
  out = tmp_path / "out" / "scores"
  proc = run_main(VAE + [f"--workdir={vae_runs / 'vae'}", "--mode=score",
                         f"--input={folder}",
                         # Itself as the background: the same draws (one
                         # seed), so the ratio is exactly 0.
                         f"--background={vae_runs / 'vae'}",
                         f"--config.score.output={out}",
                         "--config.score.reference_examples=64",
                         "--config.score.typicality_batch=4",
                         "--config.score.batch_size=5"], data_dir)
  assert "skipped 05b.txt: not a readable image" in proc.stdout
  assert "scored 12 of 13 rows" in proc.stdout
  assert "score 3/3 batches" in proc.stdout  # progress, batches of 5
  rows = [json.loads(line) for line in
          out.with_suffix(".jsonl").read_text().splitlines()]
  assert [r["index"] for r in rows] == list(range(13))
  assert "error" in rows[6] and rows[6]["index"] == 6
  good = [r for r in rows if "error" not in r]
  assert [r["name"] for r in good][:2] == ["00.png", "01.png"]
  assert {r["nll_kind"] for r in good} == {"upper bound"}
  npz = np.load(out.with_suffix(".npz"))
  np.testing.assert_array_equal(npz["index"], [0, 1, 2, 3, 4, 5, 7, 8, 9, 10,
                                               11, 12])
  for r, nll, bpd in zip(good, npz["nll"], npz["bits_per_dim"]):
    assert r["nll"] == pytest.approx(nll)
    assert bpd == pytest.approx(nll / (784 * math.log(2)))
  np.testing.assert_array_equal(npz["background_bits_per_dim"],
                                npz["bits_per_dim"])
  np.testing.assert_array_equal(npz["likelihood_ratio"], 0.0)
  np.testing.assert_allclose(npz["complexity_corrected"], npz["bits_per_dim"]
                             - npz["complexity_bits_per_dim"], atol=1e-9)
  summary = json.loads(out.with_suffix(".json").read_text())
  ref = summary["typicality"]
  np.testing.assert_allclose(npz["typicality"],
                             np.abs(npz["bits_per_dim"] - ref["entropy"]))
  assert ref["batches"] == 3 and ref["batch_size"] == 4
  assert "IWAE, k=5" in summary["notes"]["nll"]
  assert summary["skipped"][0]["index"] == 6
  assert np.all(npz["reconstruction_error"] > 0)


def test_scores_are_reproducible_for_a_seed(vae_runs, data_dir, tmp_path):
  # 16 rows: one batch of 16 on 1 and on 8 devices (the draws follow the
  # batch shape).
  np.savez(tmp_path / "d.npz", images=_digits(16))
  results = []
  for seed, devices in ((0, 1), (0, 8), (1, 1)):
    out = tmp_path / f"s{len(results)}"
    run_main(VAE + [f"--workdir={vae_runs / 'vae'}", "--mode=score",
                    f"--input={tmp_path / 'd.npz'}", f"--config.score.seed="
                    f"{seed}", f"--config.score.output={out}",
                    "--config.score.reference_examples=32",
                    "--config.score.compressor=none"], data_dir,
             devices=devices)
    results.append(np.load(out.with_suffix(".npz")))
  # The same draws on 1 and on 8 devices (the batch split over them).
  np.testing.assert_allclose(results[0]["nll"], results[1]["nll"],
                             rtol=1e-5)
  # The IWAE bound is a Monte Carlo estimate: another seed, other draws.
  assert not np.allclose(results[0]["nll"], results[2]["nll"])
  assert "complexity_corrected" not in results[0]


def test_bad_inputs_are_one_line_errors(vae_runs, data_dir, tmp_path):
  np.savez(tmp_path / "rgb.npz", images=np.zeros((2, 32, 32, 3), np.uint8))
  empty = tmp_path / "empty"
  empty.mkdir()
  for given, message in ((tmp_path / "rgb.npz", "images of shape (32, 32, "
                          "3)"), (empty, "the folder is empty")):
    proc = run_main(VAE + [f"--workdir={vae_runs / 'vae'}", "--mode=score",
                           f"--input={given}"], data_dir, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
  assert not (vae_runs / "vae" / "scores" / "rgb.jsonl").exists()


def test_language_model_scores_texts(data_dir, tmp_path):
  workdir = tmp_path / "lm"
  exp = ["--exp=transformer_code:smoke", f"--workdir={workdir}"]
  run_main(exp, data_dir)
  texts = ["import os", "", "x = 1\nprint(x)", "y" * 200]
  (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(t) for t in texts))
  proc = run_main(exp + ["--mode=score", f"--input={tmp_path / 't.jsonl'}",
                         "--config.score.reference_examples=16"], data_dir)
  assert "skipped line 2: empty" in proc.stdout
  assert "skipped row 3: 200 tokens, more than the model's context" in (
      proc.stdout)
  npz = np.load(workdir / "scores" / "t.npz")
  np.testing.assert_array_equal(npz["index"], [0, 2])
  np.testing.assert_array_equal(npz["dims"], [9, 14])  # bytes after BOS
  assert "likelihood_ratio" not in npz and np.all(npz["bits_per_dim"] > 0)


def _init(exp: str):
  family = families.build(config_lib.get_config(exp))
  images = jnp.asarray(_digits(4))
  state = jax.jit(family.init)(jax.random.key(0), {
      "image": images, "label": jnp.arange(4)})
  return family, state, images


def test_scores_of_families_without_a_likelihood():
  """A GAN's negated discriminator, per input; a classifier's 1 - max p;
  a batch-norm discriminator refused."""
  gan, state, images = _init("wgan_gp_mnist:smoke")
  out = jax.jit(gan.score)(state, {"image": images}, jax.random.key(0))
  d, _ = gan._discriminate(state.d_params, state.d_rest,
                           gan.preprocess(images), None)
  np.testing.assert_allclose(out["discriminator"], -d, rtol=1e-5, atol=1e-6)
  alone = gan.score(state, {"image": images[:1]}, jax.random.key(0))
  np.testing.assert_allclose(alone["discriminator"], out["discriminator"][:1],
                             rtol=1e-5, atol=1e-6)
  assert "not a likelihood" in gan.score_notes()["discriminator"]
  classifier, state, images = _init("mnist_classifier:smoke")
  out = classifier.score(state, {"image": images}, jax.random.key(0))
  probs = jax.nn.softmax(classifier.predict(state, images), -1)
  np.testing.assert_allclose(out["max_softmax"], 1 - probs.max(-1),
                             rtol=1e-6)
  dcgan = families.build(config_lib.get_config("dcgan_mnist:smoke"))
  with pytest.raises(UserError, match="batch statistics"):
    dcgan.score(None, None, None)


def test_class_conditional_scores_marginalize_the_label():
  """log p(x) = log mean_y p(x | y), from the per-class scores."""
  per_class = np.array([[10.0, 3.0], [12.0, 50.0], [11.0, 4.0]])  # [K, N]

  class Stub:
    num_classes = 3
  model = scoring.Model.__new__(scoring.Model)
  model.family = Stub()
  model._batches = lambda arrays, key, label: {
      "nll": per_class[int(arrays["label"][0])], "dims": np.full(2, 4.0)}
  out = model.raw({"image": np.zeros((2, 1, 1, 1), np.uint8)},
                  jax.random.key(0))
  want = -np.log(np.mean(np.exp(-per_class), axis=0))
  np.testing.assert_allclose(out["nll"], want)
  np.testing.assert_allclose(out["bits_per_dim"], want / (4 * math.log(2)))


def _text_model(tokenizer, context: int = 0):
  """A Model over a stub language-model family: its encoding alone."""
  class Stub:
    models_text = True
    context_length = context
  Stub.tokenizer = tokenizer
  model = scoring.Model.__new__(scoring.Model)
  model.family = Stub()
  return model


def test_texts_a_vocabulary_cannot_hold_are_skipped():
  from gen_jax.data import tokenizers  # pylint: disable=g-import-not-at-top
  chars = tokenizers.CharTokenizer.from_text("abc \n")
  arrays, bad = _text_model(chars).encode(["abc", "abz", "cab a"])
  assert [i for i, _ in bad] == [1] and "vocabulary" in bad[0][1]
  np.testing.assert_array_equal(arrays["token_mask"].sum(1), [3, 0, 5])
  byte = tokenizers.ByteTokenizer()
  arrays, bad = _text_model(byte, context=4).encode(["naïve", "abcd"])
  # 6 bytes after BOS: more than the context of 4.
  assert bad == [(0, "6 tokens, more than the model's context of 4")]
  np.testing.assert_array_equal(arrays["tokens"][1, :5],
                                [byte.bos_id, 97, 98, 99, 100])


def test_output_names_and_unscorable_data(tmp_path):
  assert scoring._input_name(str(tmp_path / "svhn.test.npz")) == "svhn.test"
  assert scoring._input_name(str(tmp_path / "v1.2")) == "v1.2"
  assert scoring._input_name(".") == pathlib.Path.cwd().name
  with pytest.raises(UserError, match=r"vectors of shape \(2,\)"):
    scoring.image_shape(config_lib.get_config("flow_2d:smoke"))
  config = config_lib.get_config("flow_2d:smoke",
                                 ["data.perturb_rate=0.1"])
  from gen_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  with pytest.raises(UserError, match="8-bit images and text"):
    pipeline.perturb_transform(config, None)
