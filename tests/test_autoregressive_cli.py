"""End to end: the language-model experiments through `python -m gen_jax.main`."""

from conftest import run_main, write_gpt2_checkpoint
from gen_jax import files


def _records(workdir):
  return files.read_jsonl(workdir / "metrics.jsonl")


def test_transformer_trains_and_continues_prompts(data_dir, tmp_path):
  workdir = tmp_path / "tc"
  args = ["--exp=transformer_code:smoke", f"--workdir={workdir}"]
  run_main(args, data_dir)
  final = [r for r in _records(workdir) if r["split"] == "eval"][-1]
  assert final["step"] == 20
  # A fresh byte model is near uniform: about 8 bits/byte; measured 7.90
  # (lr 0; 7.93, 7.93 at seeds 1, 2). After these 20 steps: 7.21 (7.18, 7.27).
  assert 0 < final["bits_per_byte"] < 7.6, final
  assert final["bits_per_byte"] == final["bits_per_token"]  # byte tokens
  assert "===== sample 1 (prompt 'def '" in (
      workdir / "samples" / "step_20.txt").read_text()
  # Two prompts of different lengths in one batch, greedy: printed.
  proc = run_main(args + ["--mode=sample", "--prompt=def main(", "--prompt=x",
                          "--temperature=0", "--max_new_tokens=8"], data_dir)
  assert "(prompt 'def main(', 8 new tokens)" in proc.stdout
  assert "(prompt 'x', 8 new tokens)" in proc.stdout


def test_gpt2_checkpoint_samples_untrained_then_fine_tunes_with_lora(
    data_dir, tmp_path):
  ckpt = write_gpt2_checkpoint(tmp_path / "gpt2")
  workdir = tmp_path / "ft"
  args = ["--exp=gpt2_finetune:lora-smoke", f"--workdir={workdir}",
          f"--config.init_from={ckpt}"]
  # The pretrained model itself, from an empty workdir.
  proc = run_main(args + ["--mode=sample", "--prompt=Hello",
                          "--max_new_tokens=4"], data_dir)
  assert "(prompt 'Hello', 4 new tokens)" in proc.stdout
  # lr 1e-2 (the experiment's LoRA rate, 1e-3, moved the loss 0.006 nats in
  # these 4 steps).
  run_main(args + ["--config.train.num_steps=4",
                   "--config.train.learning_rate=1e-2"], data_dir)
  final = [r for r in _records(workdir) if r["split"] == "eval"][-1]
  # The random checkpoint is near uniform over its 257 tokens (ln 257 = 5.549
  # nats); measured 5.557 before fine-tuning (lr 0; 5.542, 5.562 for
  # checkpoint seeds 1, 2), 5.505 after these 4 steps (5.506, 5.534).
  assert final["step"] == 4 and 0 < final["loss"] < 5.53, final
