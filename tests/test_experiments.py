"""Every experiment's default config (not only :smoke) fits 8 devices: its
family builds, its train, eval and sampling batches lay out over an 8-device
mesh (eval and sampling batches padded to a multiple of the devices)."""

import jax
import numpy as np
import pytest

from conftest import write_gpt2_checkpoint
from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import parallel
from gen_jax.data import pipeline
from gen_jax.data import text
from gen_jax.data import tokenizers
from gen_jax.data import translation

DEVICES = 8
# Data no test machine has (TFDS cifar10): only the family and the batch
# arithmetic are checked.
_NO_DATA = ("cifar10", "celeb_a_hq/256", "wmt14_translate")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  # GPT-2's context (1,024 positions) at a tiny width.
  return write_gpt2_checkpoint(tmp_path_factory.mktemp("gpt2"),
                               n_positions=1024)


def _stage1(config, tmp_path) -> list[str]:
  """A two-stage experiment's stage-1 run, as far as building needs: the
  config.json of the experiment it names."""
  if "autoencoder" not in config:
    return []
  workdir = tmp_path / "stage1"
  workdir.mkdir()
  saved = config_lib.get_config(config.autoencoder.exp)
  (workdir / "config.json").write_text(config_lib.to_json(saved))
  return [f"autoencoder.workdir={workdir}"]


@pytest.mark.parametrize("name", config_lib.list_experiments())
def test_default_config_lays_out_on_8_devices(name, data_dir, gpt2_dir,
                                              tmp_path):
  overrides = [f"data.data_dir={data_dir}"]
  config = config_lib.get_config(name, overrides)
  overrides += _stage1(config, tmp_path)
  config = config_lib.get_config(name, overrides)
  if config.data.get("vocab", "") == "gpt2":  # a checkpoint's tokenizer
    config = config_lib.get_config(name, overrides + [f"init_from={gpt2_dir}"])
  mesh = parallel.make_mesh(config, jax.devices()[:DEVICES])
  eval_rows = pipeline.padded_size(config.data.eval_batch_size, DEVICES)
  assert eval_rows % DEVICES == 0 and eval_rows >= config.data.eval_batch_size
  if config.data.name in _NO_DATA or config.data.get("vocab", "") == "gpt2":
    # The family alone (the data is not on this machine, or its BPE
    # encoding of the whole corpus would dominate the test).
    tokenizer = (tokenizers.make(config) if config.data.name in text.NAMES
                 else None)
    if config.data.name in translation.NAMES:  # a vocabulary of bytes
      tokenizer = translation.SubwordTokenizer.train(["a"], 300)
    family = families.build(config, tokenizer)
    parallel.check_model_axis(mesh, family.model_parallel, config.family)
    return
  config = config_lib.get_config(name, overrides + ["eval.num_examples=40"])
  data = pipeline.make(config, batch_shards=DEVICES)
  family = families.build(config, data.tokenizer)
  parallel.check_model_axis(mesh, family.model_parallel, config.family)
  assert data.eval_batch_size == eval_rows
  batches = {"init": data.init_batch, "eval": next(iter(data.eval_batches()))}
  for what, local in batches.items():
    batch = parallel.global_batch(local, mesh)
    rows = next(iter(batch.values()))
    devices = len(rows.sharding.device_set)
    assert devices == DEVICES, (what, devices)
    if what == "eval":  # split, never replicated: padded to fit
      assert rows.sharding.shard_shape(rows.shape)[0] == eval_rows // DEVICES
      assert np.asarray(batch["mask"]).sum() == 40
