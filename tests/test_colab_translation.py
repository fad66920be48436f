"""The translation Colab notebook runs top to bottom (at a tiny size); then
its run, through `python -m gen_jax.main`: typed sentences, `--mode=eval`
and a stopped-and-resumed run of the same experiment."""

import json
import re

import numpy as np
import sacrebleu

from conftest import execute_notebook, notebook_text, run_main
from gen_jax import files


def _losses(workdir):
  return {r["step"]: r["loss"] for r in files.read_jsonl(
      workdir / "metrics.jsonl") if r["split"] == "train"}


def test_translation_notebook_and_its_run_through_the_cli(
    data_dir, tmp_path, monkeypatch):
  outputs = execute_notebook("translation.ipynb", data_dir, tmp_path / "run",
                             monkeypatch)
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert len(images) >= 2  # the curves, the attention map
  text = notebook_text(outputs)
  loss = float(re.search(r"held-out: loss (\S+) nats/token", text).group(1))
  assert 0 < loss < 5.9, text  # ln 400 = 5.99: uniform over the vocabulary
  # Printed in training with sacrebleu's signatures; the written files
  # reproduce the logged BLEU.
  assert re.search(r"beam 2: BLEU \S+ \(nrefs:1\|case:mixed\|eff:no\|"
                   r"tok:13a\|smooth:exp\|version:2\.\S+\), chrF \S+ "
                   r"\(nrefs:1\|", text), text
  logged = re.search(r"beam 2: BLEU (\S+), chrF (\S+),", text)
  again = re.search(r"30 sentences: BLEU (\S+) \(nrefs:1\|case:mixed\|"
                    r"eff:no\|tok:13a\|smooth:exp\|version:2\.", text)
  assert logged and again and logged.group(1) == again.group(1), text
  for sentence in ("File not found", "%d files copied"):
    assert f"{sentence}\n  greedy: " in text and "  beam 4: " in text
  rows = re.search(r"attention \((\d+), (\d+)\): rows sum to (\S+)\.\.(\S+)",
                   text)
  assert rows and abs(float(rows.group(3)) - 1) < 1e-3, text
  assert abs(float(rows.group(4)) - 1) < 1e-3

  workdir = tmp_path / "run" / "transformer"
  records = files.read_jsonl(workdir / "metrics.jsonl")
  train = [r for r in records if r["split"] == "train"]
  assert train[-1]["nll"] < train[0]["nll"] - 0.5, train
  final = [r for r in records if r["split"] == "eval"][-1]
  assert final["step"] == 20 and 0 < final["token_accuracy"] < 1
  out = workdir / "translations"
  refs = (out / "references.txt").read_text().splitlines()
  assert len(refs) == 30
  for beam in (1, 2):
    hyps = (out / f"translations_beam{beam}.txt").read_text().split("\n")[:-1]
    assert len(hyps) == 30
    assert abs(sacrebleu.corpus_chrf(hyps, [refs]).score
               - final[f"chrf_beam{beam}"]) < 1e-6
  saved = json.loads((out / "scores.json").read_text())
  assert saved["beam2"]["bleu_signature"].startswith("nrefs:1|")
  assert (workdir / "tokenizer.json").exists()
  assert "reference:" in (workdir / "samples" / "step_20.txt").read_text()

  # The same run through the command line: typed sentences.
  args = ["--exp=transformer_translate:smoke", f"--workdir={workdir}"]
  proc = run_main(args + ["--mode=sample", "--source=Cannot open file %s",
                          "--source=Show hidden files", "--beam_size=3",
                          "--num_samples=3"], data_dir)
  typed = proc.stdout.split("===== typed 1 =====")[1]
  assert "source:     Cannot open file %s" in typed, proc.stdout
  assert "beam 3:" in typed and "greedy:" in typed
  assert "source:     Show hidden files" in typed
  exported = np.load(workdir / "samples" / "sample_step_20.npz")
  assert list(exported["source"]) == ["Cannot open file %s",
                                      "Show hidden files",
                                      "Cannot open file %s"]
  assert exported["text"].shape == (3,) and exported["tokens"].shape[0] == 3
  # --mode=eval: the figures of the notebook's final eval.
  run_main(args + ["--mode=eval"], data_dir)
  result = json.loads((workdir / "eval_step_20.json").read_text())
  for key in ("loss", "bleu_beam1", "chrf_beam2"):
    assert abs(result[key] - final[key]) < 1e-4, (key, result, final)

  # Stopped after 10 steps and resumed to 20: the length-bucketed batches
  # (of changing shapes) continue where they stopped, so the losses are the
  # notebook run's (to 1e-4: XLA's optimization level differs in-process).
  resumed = tmp_path / "resumed"
  short = ["--exp=transformer_translate:smoke", f"--workdir={resumed}",
           "--config.eval.beam_sizes=()", "--config.sample.sources=()"]
  proc = run_main(short + ["--config.train.num_steps=10"], data_dir)
  assert proc.stdout.count("Compiled the train step") > 1, proc.stdout
  run_main(short, data_dir)
  straight, again = _losses(workdir), _losses(resumed)
  for step in (5, 10, 15, 20):
    np.testing.assert_allclose(again[step], straight[step], rtol=1e-4)
