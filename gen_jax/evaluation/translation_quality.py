"""BLEU and chrF of a translation model's held-out translations, by
sacrebleu (Post 2018): the standard, reproducible implementation, scoring
detokenized text against detokenized references, with its signature
(tokenizer, smoothing, version) reported beside the score.

For each beam size in `config.eval.beam_sizes` (1: greedy) the whole
held-out split is translated (in order of length, in batches of the eval
batch's rows); reported per beam K: bleu_beamK, chrf_beamK
and sentences_per_second_beamK (decoding only); each beam's scores are
printed with their signatures. With an output directory the hypotheses are
written one per line, in the split's order, as translations_beamK.txt, next
to references.txt and scores.json (the scores and signatures).
"""

import json
import time

import jax
import numpy as np
import sacrebleu

from gen_jax import files
from gen_jax import logging as log_lib


def corpus_scores(hypotheses: list[str], reference_streams: list[list[str]]
                  ) -> dict[str, float | str]:
  """Corpus BLEU and chrF of `hypotheses` against one or more reference
  streams (each: one reference per hypothesis), and sacrebleu's signatures
  of both."""
  bleu = sacrebleu.metrics.BLEU()
  chrf = sacrebleu.metrics.CHRF()
  b = bleu.corpus_score(hypotheses, reference_streams)
  c = chrf.corpus_score(hypotheses, reference_streams)
  return {"bleu": b.score, "chrf": c.score,
          "bleu_signature": str(bleu.get_signature()),
          "chrf_signature": str(chrf.get_signature())}


def evaluate(ctx, beam_sizes) -> dict[str, float]:
  """Translates the held-out split at each beam size and scores it.

  Sentences are decoded in order of length (batches of similar lengths
  decode in fewer steps) and put back in the split's order."""
  batches = list(ctx.real_batches())
  references = [ctx.detokenize(row) for b in batches for row in b["target"]]
  sources = np.concatenate([b["source"] for b in batches])
  num, rows = len(sources), max(len(b["source"]) for b in batches)
  order = np.argsort(np.sum(sources != 0, axis=1), kind="stable")
  result, signed = {}, {}
  for beam in beam_sizes:
    progress = log_lib.Progress(f"translating (beam {beam})", num,
                                " sentences")
    hypotheses, seconds = [""] * num, 0.0
    for start in range(0, num, rows):
      chunk = order[start:start + rows]
      t0 = time.time()
      out = np.asarray(ctx.translate(sources[chunk], beam))
      seconds += time.time() - t0
      for i, row in zip(chunk, out):
        hypotheses[i] = ctx.detokenize(row)
      progress(start + len(chunk))
    scores = corpus_scores(hypotheses, [references])
    signed[f"beam{beam}"] = scores
    if jax.process_index() == 0:
      print(f"beam {beam}: BLEU {scores['bleu']:.2f} "
            f"({scores['bleu_signature']}), chrF {scores['chrf']:.2f} "
            f"({scores['chrf_signature']}), {num} sentences", flush=True)
    result[f"bleu_beam{beam}"] = scores["bleu"]
    result[f"chrf_beam{beam}"] = scores["chrf"]
    result[f"sentences_per_second_beam{beam}"] = num / max(seconds, 1e-9)
    if ctx.output_dir is not None:
      files.write_text(ctx.output_dir / f"translations_beam{beam}.txt",
                       "".join(h + "\n" for h in hypotheses))
  if ctx.output_dir is not None:
    files.write_text(ctx.output_dir / "references.txt",
                     "".join(r + "\n" for r in references))
    files.write_text(ctx.output_dir / "scores.json",
                     json.dumps(signed, indent=2))
  return result
