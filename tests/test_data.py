"""Data: the embedded split, the offline decision, Grain order and sharding."""

import re

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gen_jax import config as config_lib
from gen_jax.data import embedded
from gen_jax.data import pipeline
from gen_jax.data import sources
from gen_jax.errors import UserError


def test_embedded_split_is_fixed_and_class_balanced():
  a, b = embedded.load_arrays(), embedded.load_arrays()
  assert a["train"][0].shape == (4000, 28, 28, 1)
  assert a["test"][0].shape == (1000, 28, 28, 1)
  assert a["train"][0].dtype == np.uint8 and a["train"][0].max() == 255
  np.testing.assert_array_equal(np.bincount(a["test"][1]), [100] * 10)
  np.testing.assert_array_equal(np.bincount(a["train"][1]), [400] * 10)
  np.testing.assert_array_equal(a["test"][0], b["test"][0])
  train_rows = {x.tobytes() for x in a["train"][0]}
  assert not any(x.tobytes() in train_rows for x in a["test"][0])


def test_embedded_reads_through_tfds_data_source(data_dir):
  splits = tfds.data_source(embedded.NAME, data_dir=data_dir)
  assert len(splits["train"]) == 4000 and len(splits["test"]) == 1000
  record = splits["test"][0]
  assert record["image"].shape == (28, 28, 1)
  labels = np.array([splits["test"][i]["label"] for i in range(1000)])
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)


def test_auto_falls_back_loudly(data_dir, caplog):
  name, _ = sources.resolve("mnist", "auto", data_dir)
  assert name == embedded.NAME
  assert any("embedded real subset" in r.getMessage() and "tfds build mnist"
             in r.getMessage() for r in caplog.records)


def test_prepared_tfds_data_wins(tmp_path):
  version = tmp_path / "mnist" / "3.0.1"
  version.mkdir(parents=True)
  (version / "mnist-train.array_record-00000-of-00001").write_bytes(b"")
  assert sources.resolve("mnist", "auto", str(tmp_path)) == (
      "mnist", str(tmp_path))


def test_forced_tfds_without_data_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="not prepared in"):
    sources.resolve("mnist", "tfds", str(tmp_path))
  with pytest.raises(UserError, match="no embedded data for 'cifar10'"):
    sources.resolve("cifar10", "embedded", str(tmp_path))


@pytest.mark.parametrize("source", ["auto", "tfds"])
def test_a_dataset_tfds_does_not_know_is_one_line(tmp_path, source):
  with pytest.raises(UserError, match="^" + re.escape(
      "--config.data.name=mnsit: TFDS has no such dataset, and none is "
      f"prepared in {tmp_path}.") + "$"):
    sources.resolve("mnsit", source, str(tmp_path))


def test_an_unwritable_data_dir_is_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(UserError, match=re.escape(
      f"cannot write the embedded 'mnist' into the data dir {blocker}/data")):
    sources.resolve("mnist", "embedded", str(blocker / "data"))


class _Source:
  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"image": np.full((2, 2, 1), i, np.uint8), "label": i}


def _labels(ds, steps, state=None):
  it = iter(ds)
  if state is not None:
    it.set_state(state)
  return [next(it)["label"] for _ in range(steps)], it.get_state()


def test_process_slices_tile_the_global_batch():
  src = _Source(50)
  whole, _ = _labels(pipeline.train_dataset(src, 8, 3, 0, 1), 20)
  parts = [_labels(pipeline.train_dataset(src, 8, 3, p, 4), 20)[0]
           for p in range(4)]
  for step in range(20):
    np.testing.assert_array_equal(
        np.concatenate([parts[p][step] for p in range(4)]), whole[step])
  # The stream is one permutation per epoch, freshly drawn each epoch.
  flat = np.concatenate(whole)
  assert sorted(flat[:50].tolist()) == list(range(50))
  assert sorted(flat[50:100].tolist()) == list(range(50))
  assert not np.array_equal(flat[:50], flat[50:100])


def test_iterator_state_resumes_the_same_order():
  ds = pipeline.train_dataset(_Source(37), 4, 0, 0, 1)
  straight, _ = _labels(ds, 30)
  first, state = _labels(ds, 12)
  rest, _ = _labels(ds, 18, state)
  np.testing.assert_array_equal(np.concatenate(first + rest),
                                np.concatenate(straight))
  other_seed, _ = _labels(pipeline.train_dataset(_Source(37), 4, 1, 0, 1), 30)
  assert not np.array_equal(np.concatenate(other_seed),
                            np.concatenate(straight))


def test_eval_pass_pads_and_masks():
  batches = list(pipeline.eval_batches(_Source(10), 4, 10, 0, 1))
  assert [b["mask"].tolist() for b in batches] == [
      [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]]
  np.testing.assert_array_equal(batches[2]["label"][:2], [8, 9])
  halves = [list(pipeline.eval_batches(_Source(10), 4, 10, p, 2))
            for p in range(2)]
  np.testing.assert_array_equal(
      np.concatenate([halves[0][2]["mask"], halves[1][2]["mask"]]),
      [1, 1, 0, 0])


def test_make_reads_embedded_mnist(data_dir):
  config = config_lib.get_config("vae_mnist:smoke",
                                 [f"data.data_dir={data_dir}"])
  data = pipeline.make(config)
  assert data.dataset == embedded.NAME and data.num_train == 4000
  assert data.num_eval == 200  # eval.num_examples of the smoke variant
  batch = next(data.train)
  assert batch["image"].shape == (32, 28, 28, 1)
  assert batch["image"].dtype == np.uint8 and batch["label"].dtype == np.int32
  assert isinstance(data.train, grain.DatasetIterator)
  bad = config_lib.get_config("vae_mnist:smoke", [
      f"data.data_dir={data_dir}", "data.image_shape=32,32,3"])
  with pytest.raises(UserError, match="image_shape"):
    pipeline.make(bad)
