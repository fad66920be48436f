"""End to end: the attention LSTM through `python -m gen_jax.main` (the
Transformer's train / eval / sample / resume: test_colab_translation.py, on
the notebook's run)."""

import pytest

from conftest import run_main
from gen_jax import config as config_lib
from gen_jax import files
from gen_jax.errors import UserError


def _evals(workdir):
  return [r for r in files.read_jsonl(workdir / "metrics.jsonl")
          if r["split"] == "eval"]


def test_attention_lstm_trains_and_bad_options_fail_in_one_line(
    data_dir, tmp_path):
  workdir = tmp_path / "lt"
  # (Its decoding: test_seq2seq.py; BLEU end to end:
  # test_colab_translation.py.)
  args = ["--exp=lstm_translate:smoke", f"--workdir={workdir}",
          "--config.model.attention=multiplicative",
          "--config.eval.beam_sizes=()", "--config.sample.sources=()"]
  run_main(args, data_dir)
  train = [r for r in files.read_jsonl(workdir / "metrics.jsonl")
           if r["split"] == "train"]
  # Measured: 5.97 nats at steps 1-5, 5.54 at steps 16-20.
  assert train[-1]["nll"] < train[0]["nll"] - 0.3, train
  assert _evals(workdir)[-1]["loss"] < 5.9
  # One line, exit 2, end to end (the options' own checks:
  # test_seq2seq.py, test_translation_data.py).
  proc = run_main(["--exp=lstm_translate:smoke", f"--workdir={tmp_path / 'b'}",
                   "--config.model.attention=dot"], data_dir, check=False)
  assert proc.returncode == 2, proc.stderr
  assert "is not one of additive, multiplicative" in proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  with pytest.raises(UserError, match="takes no --source"):
    config_lib.get_config("vae_mnist:smoke", flags={"source": ["Hello"]})
