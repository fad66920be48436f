"""End to end: the language-model experiments through `python -m gen_jax.main`."""

import json

from conftest import run_main, write_gpt2_checkpoint


def _records(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def test_transformer_trains_and_continues_prompts(data_dir, tmp_path):
  workdir = tmp_path / "tc"
  args = ["--exp=transformer_code:smoke", f"--workdir={workdir}"]
  run_main(args, data_dir)
  final = [r for r in _records(workdir) if r["split"] == "eval"][-1]
  assert final["step"] == 20
  assert 0 < final["bits_per_byte"] < 8.1
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
  run_main(args + ["--config.train.num_steps=4"], data_dir)
  final = [r for r in _records(workdir) if r["split"] == "eval"][-1]
  assert final["step"] == 4 and final["loss"] > 0
