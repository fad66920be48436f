"""End to end: the translation experiments through `python -m gen_jax.main`
(train, evaluate with sacrebleu, translate typed sentences)."""

import json
import re

import sacrebleu

from conftest import run_main
from gen_jax import files


def _evals(workdir):
  return [r for r in files.read_jsonl(workdir / "metrics.jsonl")
          if r["split"] == "eval"]


def test_transformer_trains_translates_and_scores_with_sacrebleu(
    data_dir, tmp_path):
  workdir = tmp_path / "tt"
  args = ["--exp=transformer_translate:smoke", f"--workdir={workdir}"]
  proc = run_main(args, data_dir)
  # The scores are printed with sacrebleu's signatures, and saved.
  assert re.search(r"beam 2: BLEU \S+ \(nrefs:1\|case:mixed\|eff:no\|"
                   r"tok:13a\|smooth:exp\|version:2\.\S+\), chrF \S+ "
                   r"\(nrefs:1\|", proc.stdout), proc.stdout
  saved = json.loads((workdir / "translations" / "scores.json").read_text())
  assert saved["beam2"]["bleu_signature"].startswith("nrefs:1|")
  records = files.read_jsonl(workdir / "metrics.jsonl")
  train = [r for r in records if r["split"] == "train"]
  # Uniform over the 400-token vocabulary: ln 400 = 5.99 nats.
  assert train[-1]["nll"] < train[0]["nll"] - 0.5, train
  final = _evals(workdir)[-1]
  assert final["step"] == 20 and final["loss"] < 5.9, final
  assert 0 < final["token_accuracy"] < 1
  for beam in (1, 2):
    for key in ("bleu", "chrf", "sentences_per_second"):
      assert f"{key}_beam{beam}" in final, final
  # The written hypotheses are what was scored: sacrebleu on the files
  # gives the logged figures.
  out = workdir / "translations"
  refs = (out / "references.txt").read_text().splitlines()
  assert len(refs) == 30
  for beam in (1, 2):
    hyps = (out / f"translations_beam{beam}.txt").read_text().split("\n")[:-1]
    assert len(hyps) == 30
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    assert abs(bleu - final[f"bleu_beam{beam}"]) < 1e-6
    assert abs(chrf - final[f"chrf_beam{beam}"]) < 1e-6
  assert (workdir / "tokenizer.json").exists()
  assert "reference:" in (workdir / "samples" / "step_20.txt").read_text()
  # Typed sentences, placeholders given back.
  proc = run_main(args + ["--mode=sample", "--source=Cannot open file %s",
                          "--source=Show hidden files", "--beam_size=3"],
                  data_dir)
  typed = proc.stdout.split("===== typed 1 =====")[1]
  assert "source:     Cannot open file %s" in typed, proc.stdout
  assert "beam 3:" in typed and "greedy:" in typed
  assert "source:     Show hidden files" in typed
  # --mode=eval: the same figures from the checkpoint.
  run_main(args + ["--mode=eval"], data_dir)
  result = json.loads((workdir / "eval_step_20.json").read_text())
  for key in ("loss", "bleu_beam1", "chrf_beam2"):
    assert abs(result[key] - final[key]) < 1e-4, (key, result, final)


def test_attention_lstm_trains_and_bad_options_fail_in_one_line(
    data_dir, tmp_path):
  workdir = tmp_path / "lt"
  args = ["--exp=lstm_translate:smoke", f"--workdir={workdir}",
          "--config.model.attention=multiplicative"]
  run_main(args, data_dir)
  train = [r for r in files.read_jsonl(workdir / "metrics.jsonl")
           if r["split"] == "train"]
  # Measured: 5.97 nats at steps 1-5, 5.54 at steps 16-20.
  assert train[-1]["nll"] < train[0]["nll"] - 0.3, train
  assert _evals(workdir)[-1]["loss"] < 5.9
  # (The options' own checks: test_seq2seq.py, test_translation_data.py.)
  proc = run_main(["--exp=lstm_translate:smoke", f"--workdir={tmp_path / 'b'}",
                   "--config.model.attention=dot"], data_dir, check=False)
  assert proc.returncode == 2, proc.stderr
  assert "is not one of additive, multiplicative" in proc.stderr
  assert "Traceback" not in proc.stderr, proc.stderr
  proc = run_main(["--exp=vae_mnist:smoke", f"--workdir={tmp_path / 'v'}",
                   "--source=Hello"], data_dir, check=False)
  assert proc.returncode == 2 and "takes no --source" in proc.stderr


def test_resume_with_length_buckets_equals_uninterrupted(data_dir, tmp_path):
  """Length-bucketed batches of changing shapes: a run stopped after 4
  steps and resumed ends with the parameters of one that was not."""
  import chex  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from gen_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from gen_jax import train  # pylint: disable=g-import-not-at-top
  config = config_lib.get_config("transformer_translate:smoke", [
      f"data.data_dir={data_dir}", "train.num_steps=8", "data.bucket_pool=4",
      "train.ckpt_every=100", "train.eval_every=100", "train.sample_every=100",
      "eval.beam_sizes=()", "train.log_every=1"])
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(config, str(straight))
  assert train.train_and_evaluate(config, str(resumed), stop_after=4) == {}
  train.train_and_evaluate(config, str(resumed))
  restore = lambda w: ocp.StandardCheckpointer().restore(
      f"{w}/checkpoints/8/state")
  chex.assert_trees_all_equal(restore(straight), restore(resumed))
  # The 8 batches came in more than one shape.
  from gen_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data = pipeline.make(config, run_dir=str(straight))
  shapes = {next(data.train)["source"].shape for _ in range(8)}
  assert len(shapes) > 1, shapes
