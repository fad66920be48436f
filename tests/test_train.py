"""The trainer in-process: sharding equivalence, resume equivalence, errors, logs."""

import json

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gen_jax import config as config_lib
from gen_jax import families
from gen_jax import train
from gen_jax.errors import UserError

from conftest import train_on_devices


def smoke_config(data_dir, *overrides):
  return config_lib.get_config(
      "vae_mnist:smoke",
      [f"data.data_dir={data_dir}", "model.channels=8,16",
       "model.hidden_dim=64", *overrides])


def restore_params(workdir, step):
  path = f"{workdir}/checkpoints/{step}/state"
  return ocp.StandardCheckpointer().restore(path)


def test_train_step_same_on_1_and_8_devices(data_dir):
  config = smoke_config(data_dir)
  family = families.build(config)
  rng = np.random.default_rng(0)
  batches = [{"image": rng.integers(0, 256, (32, 28, 28, 1), np.uint8),
              "label": rng.integers(0, 10, (32,)).astype(np.int32)}
             for _ in range(3)]
  results = {}
  for n in (1, 8):
    losses, state = train_on_devices(family, batches, n, ["loss"])
    results[n] = (losses[:, 0], state.params)
  np.testing.assert_allclose(results[1][0], results[8][0], rtol=1e-5)
  chex.assert_trees_all_close(results[1][1], results[8][1], rtol=1e-4,
                              atol=1e-6)


def test_resume_equals_uninterrupted_bit_for_bit(data_dir, tmp_path):
  config = smoke_config(data_dir, "train.num_steps=12", "train.ckpt_every=100",
                        "train.log_every=1",
                        "train.eval_every=100", "train.sample_every=100")
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(config, str(straight))
  assert train.train_and_evaluate(config, str(resumed), stop_after=6) == {}
  assert ocp.CheckpointManager(resumed / "checkpoints").latest_step() == 6
  train.train_and_evaluate(config, str(resumed))
  a, b = restore_params(straight, 12), restore_params(resumed, 12)
  chex.assert_trees_all_equal(a, b)
  # The logged losses of steps 7..12 agree exactly too.
  def losses(path):
    rows = [json.loads(l) for l in open(path / "metrics.jsonl")]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
  la, lb = losses(straight), losses(resumed)
  assert [la[s] for s in range(7, 13)] == [lb[s] for s in range(7, 13)]


def test_incompatible_checkpoint_is_refused(data_dir, tmp_path):
  config = smoke_config(data_dir, "train.num_steps=2")
  train.train_and_evaluate(config, str(tmp_path), stop_after=2)
  other = smoke_config(data_dir, "model.latent_dim=7")
  with pytest.raises(UserError, match="model.latent_dim: 32 -> 7"):
    train.setup(other, str(tmp_path))
  # Changing the run length or the learning rate is fine.
  train.setup(smoke_config(data_dir, "train.num_steps=40",
                           "train.learning_rate=0.01"), str(tmp_path))


def test_nan_stops_the_run_naming_step_and_metric(data_dir, tmp_path):
  config = smoke_config(data_dir, "train.learning_rate=nan")
  with pytest.raises(UserError, match=r"metric '\w+' is nan at step 2"):
    train.train_and_evaluate(config, str(tmp_path))


def test_logs_metrics_and_tensorboard(data_dir, tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  config = smoke_config(data_dir, "train.num_steps=10", "train.log_every=5",
                        "train.eval_every=5", "train.sample_every=10")
  result = train.train_and_evaluate(config, str(tmp_path))
  assert result["iwae_nll_k20"] > 0
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [(r["step"], r["split"]) for r in rows] == [
      (5, "train"), (5, "eval"), (10, "train"), (10, "eval")]
  assert {"loss", "elbo", "kl", "rec", "steps_per_sec"} <= set(rows[0])
  assert rows[-1]["iwae_nll_k20"] == pytest.approx(result["iwae_nll_k20"])
  acc = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  acc.Reload()
  assert [e.step for e in acc.Scalars("train/loss")] == [5, 10]
  assert acc.Scalars("train/loss")[-1].value == pytest.approx(rows[2]["loss"])
  assert "samples" in acc.Tags()["images"]
  for name in ("step_10", "reconstructions_step_10", "interpolation_step_10"):
    assert (tmp_path / "samples" / f"{name}.png").stat().st_size > 500
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["num_steps"] == 10
