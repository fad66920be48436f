"""The trainer in-process: resume equivalence, errors, logs (1 vs 8 devices:
test_sharding.py)."""

import json

import chex
import orbax.checkpoint as ocp
import pytest

from gen_jax import config as config_lib
from gen_jax import files
from gen_jax import train
from gen_jax.errors import UserError


def smoke_config(data_dir, *overrides):
  return config_lib.get_config(
      "vae_mnist:smoke",
      [f"data.data_dir={data_dir}", "model.channels=8,16",
       "model.hidden_dim=64", *overrides])


def restore_params(workdir, step):
  path = f"{workdir}/checkpoints/{step}/state"
  return ocp.StandardCheckpointer().restore(path)


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
    rows = files.read_jsonl(path / "metrics.jsonl")
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
  config = smoke_config(data_dir)
  # Set past the CLI's checks (which refuse a NaN rate): a run that diverges.
  config.train.learning_rate = float("nan")
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
