"""The MNIST feature classifier: family, CLI run and feature extractor."""

import json
import pathlib

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import run_main
from gen_jax import checkpointing
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax.data import pipeline
from gen_jax.errors import UserError
from gen_jax.evaluation import features as features_lib
from gen_jax.families import classifier as classifier_family
from gen_jax.models import classifier as classifier_model


def test_random_shift_moves_each_image_within_range():
  x = np.zeros((16, 9, 9, 1), np.float32)
  x[:, 4, 4, 0] = 1.0  # one bright pixel in the middle
  out = np.asarray(classifier_family.random_shift(jnp.asarray(x),
                                                  jax.random.key(0), 2))
  rows, cols = np.nonzero(out[..., 0])[1:]
  assert out.shape == x.shape and np.all(out.sum((1, 2, 3)) == 1.0)
  assert np.all(np.abs(rows - 4) <= 2) and np.all(np.abs(cols - 4) <= 2)
  assert len({(r, c) for r, c in zip(rows, cols)}) > 5  # offsets differ
  np.testing.assert_array_equal(
      classifier_family.random_shift(jnp.asarray(x), jax.random.key(0), 0), x)


def test_max_pool_matches_nnx():
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 3))
  np.testing.assert_array_equal(classifier_model.max_pool_2x2(x),
                                nnx.max_pool(x, (2, 2), strides=(2, 2)))


def test_conv_kernel_init_is_lecun_normal():
  key, shape = jax.random.key(3), (3, 3, 8, 16)
  np.testing.assert_array_equal(
      classifier_model.conv_kernel_init(key, shape),
      nnx.initializers.lecun_normal()(key, shape))


def _restore_train_state(workdir: pathlib.Path, family):
  abstract = jax.eval_shape(family.init, jax.random.key(0), None)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = checkpointing.abstract_with_shardings(
      abstract, jax.tree.map(lambda _: device, abstract))
  ckpt = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    return ckpt.restore_newest(abstract)[0]
  finally:
    ckpt.close()


def test_smoke_run_then_features(data_dir, tmp_path):
  wd = tmp_path / "clf"
  out = run_main(["--exp=mnist_classifier:smoke", f"--workdir={wd}"],
                 data_dir).stdout
  assert "final eval @ 20" in out
  rows = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  final = [r for r in rows if r["split"] == "eval"][-1]
  assert 0.0 <= final["accuracy"] <= 1.0 and final["nll"] > 0
  assert (wd / "samples" / "step_20.png").stat().st_size > 500
  text = (wd / "samples" / "hardest_labels_step_20.txt").read_text()
  probs = [float(t.split("(")[1].rstrip(")")) for t in text.split()
           if "->" in t and "(" in t]
  assert len(probs) == 16 and probs == sorted(probs)  # hardest first

  config = ml_collections.ConfigDict(
      json.loads((wd / "config.json").read_text()))
  config.data.data_dir, config.data.source = data_dir, "embedded"
  batch = next(iter(pipeline.make(config).eval_batches()))  # the 200 eval rows
  images, labels = batch["image"], batch["label"]
  assert images.shape == (200, 28, 28, 1) and batch["mask"].all()

  extractor = features_lib.MnistClassifierFeatures(str(wd), batch_size=128)
  assert extractor.name == "mnist_classifier" and extractor.step == 20
  result = extractor(images)  # uint8, 200 rows: one full batch, one padded
  assert result["features"].shape == (200, config.model.feature_dim)
  assert result["logits"].shape == (200, 10)
  assert all(v.dtype == np.float32 for v in result.values())
  assert result["features"].min() >= 0.0  # after the ReLU
  as_float = extractor(images[:20].astype(np.float32) / 255.0)
  np.testing.assert_allclose(as_float["logits"], result["logits"][:20],
                             rtol=1e-5, atol=1e-5)

  # The family's own predictions, from the trainer's (EMA) state.
  family = families.build(config)
  state = _restore_train_state(wd, family)
  family_logits = jax.jit(family.predict)(state, jnp.asarray(images))
  predicted = np.argmax(result["logits"], -1)
  np.testing.assert_array_equal(predicted, np.argmax(family_logits, -1))
  np.testing.assert_allclose(result["logits"], family_logits, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(np.mean(predicted == labels), final["accuracy"],
                             atol=1e-6)


def test_missing_workdir_names_the_training_command(tmp_path):
  wd = tmp_path / "nothing_here"
  with pytest.raises(UserError) as info:
    features_lib.MnistClassifierFeatures(str(wd))
  message = str(info.value)
  assert "\n" not in message
  assert (f"python -m gen_jax.main --exp=mnist_classifier --workdir={wd}"
          in message)


def test_wrong_family_is_a_user_error(tmp_path):
  config = config_lib.get_config("vae_mnist:smoke")
  (tmp_path / "checkpoints" / "20").mkdir(parents=True)
  (tmp_path / "config.json").write_text(config_lib.to_json(config))
  with pytest.raises(UserError, match="holds a 'vae' run"):
    features_lib.MnistClassifierFeatures(str(tmp_path))
