"""The command line on 8 devices with a default eval batch that does not
divide over them (500), and --mode=sample's .npz export."""

import numpy as np

from conftest import run_main

SMALL = ["--config.model.channels=8,16", "--config.model.hidden_dim=64"]


def test_eight_devices_default_eval_batch_and_sample_export(data_dir,
                                                            tmp_path):
  wd = str(tmp_path / "run")
  out = run_main(["--exp=cvae_mnist:smoke", f"--workdir={wd}", *SMALL,
                  "--config.train.num_steps=4",
                  "--config.data.eval_batch_size=500",  # vae_mnist's default
                  "--config.eval.num_examples=-1"], data_dir,
                 devices=8).stdout
  assert "final eval 2/2 batches" in out, out  # 1,000 digits in 2 x 504
  assert "final eval @ 4" in out
  npz = tmp_path / "run" / "samples" / "sample_step_4.npz"

  def sample(*flags):
    run_main(["--exp=cvae_mnist:smoke", f"--workdir={wd}", *SMALL,
              "--config.data.eval_batch_size=500", "--mode=sample",
              "--num_samples=10", *flags], data_dir, devices=8)
    with np.load(npz) as f:
      return {k: f[k] for k in f.files}

  first = sample("--labels=3,7", "--seed=1")
  assert first["images"].dtype == np.uint8
  assert first["images"].shape == (10, 28, 28, 1)
  np.testing.assert_array_equal(first["labels"], [3, 7] * 5)
  assert first["images"].std() > 0
  other = sample("--labels=3,7", "--seed=2")
  assert np.any(other["images"] != first["images"])
