r"""Out-of-distribution detection by generative models: AUROC per family,
per score and per out-of-distribution set.

  python benchmarks/anomaly.py --runs_dir=runs/anomaly --train
  python benchmarks/anomaly.py --runs_dir=runs/anomaly --text --train

Image models trained on the MNIST training digits score the held-out digits
(in-distribution) against the sets of `gen_jax/data/ood.py` (scikit-learn's
8x8 digits upsampled, letters and symbols of the machine's fonts, noisy and
inverted digits, uniform noise, constant images). With --text, the byte-
level Transformer and LSTM trained on the standard library's Python score
held-out Python against English prose, other languages' source files and
shuffled Python. Scores (`gen_jax/evaluation/anomaly.py`): raw bits/dim,
the likelihood ratio against a background model trained on perturbed
inputs (`NAME_bg`, where trained), the complexity-corrected score (PNG;
lzma for text), typicality per example and over batches of M, and the
reconstruction error of autoencoders. AUROC is scikit-learn's; the out-of-
distribution set is the positive class, so 0.5 is chance and a value below
it means the score ranks that set as *more* typical than the digits (the
Nalisnick effect).

With --train, a missing run RUNS_DIR/NAME is trained first with the
settings of MODELS (and its background with data.perturb_rate = 0.2).
Writes RUNS_DIR/anomaly[_text].{md,json} and a picture per model (score
histograms per set, ROC curves).
"""

import json
import pathlib
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import matplotlib
import numpy as np

from gen_jax import config as config_lib
from gen_jax import files
from gen_jax import logging as log_lib
from gen_jax import scoring
from gen_jax.data import ood
from gen_jax.data import pipeline
from gen_jax.data import text as text_data
from gen_jax.evaluation import anomaly

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

# name -> the training command's flags (the benchmark's settings).
MODELS = {
    "vae": ["--exp=vae_mnist", "--config.model.likelihood=gaussian",
            "--config.train.num_steps=2000",
            "--config.eval.num_importance_samples=100"],
    "glow": ["--exp=glow_mnist"],
    "pixelcnn": ["--exp=pixelcnn_mnist", "--config.train.num_steps=750"],
    "ddpm": ["--exp=ddpm_mnist"],
    "fm": ["--exp=fm_mnist"],
    "vqvae": ["--exp=vqvae_mnist"],
    # Its first stage: the vqvae run above.
    "vq_prior": ["--exp=vq_prior_mnist",
                 "--config.autoencoder.workdir={runs}/vqvae"],
    # The papers' setting (Nalisnick et al., Ren et al., Serra et al.):
    # Fashion-MNIST in, MNIST out (--tfds_ood=mnist); needs both in TFDS.
    "pixelcnn_fashion": ["--exp=pixelcnn_mnist",
                         "--config.data.name=fashion_mnist"],
    "glow_fashion": ["--exp=glow_mnist", "--config.data.name=fashion_mnist"],
    "wgan_gp": ["--exp=wgan_gp_mnist"],  # a discriminator without batch norm
    "classifier": ["--exp=mnist_classifier"],
    "transformer_code": ["--exp=transformer_code",
                         "--config.train.num_steps=900"],
    "lstm_code": ["--exp=lstm_code", "--config.train.num_steps=600"],
}
BACKGROUND = ["--config.data.perturb_rate=0.2"]
# Models --train also trains a background model NAME_bg for (Ren et al.).
WITH_BACKGROUND = ("vae", "glow", "pixelcnn", "pixelcnn_fashion",
                   "glow_fashion")

_RUNS = flags.DEFINE_string("runs_dir", "runs/anomaly", "One workdir per "
                            "model, named after it (NAME_bg: background).")
_MODELS = flags.DEFINE_list("models", ["vae", "glow", "pixelcnn", "ddpm"],
                            f"Image models, of {', '.join(MODELS)}.")
_TEXT_MODELS = flags.DEFINE_list("text_models",
                                 ["transformer_code", "lstm_code"],
                                 "Language models (with --text).")
_TEXT = flags.DEFINE_bool("text", False, "Run the text benchmark.")
_TRAIN = flags.DEFINE_bool("train", False, "Train missing runs first.")
_NUM = flags.DEFINE_integer("num", 500, "Examples per set.")
_LENGTH = flags.DEFINE_integer("length", 120, "Characters per text example.")
_BATCH = flags.DEFINE_integer("typicality_batch", 10,
                              "M of the batch typicality test.")
_TFDS_OOD = flags.DEFINE_list(
    "tfds_ood", [], "TFDS datasets whose held-out images join the image "
    "sets (e.g. mnist for models of fashion_mnist); they must be prepared.")
_NAME = flags.DEFINE_string("name", "", "Output file stem under --runs_dir "
                            "(default anomaly, or anomaly_text).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the sets and the scores.")
_OVERRIDE = flags.DEFINE_multi_string(
    "override", [], "NAME:SECTION.KEY=VALUE config settings of one model's "
    "scoring, e.g. fm:score.reference_examples=200 (added to SETTINGS).")

# Scoring settings per model: DDPM's bound is an estimate per image whose
# spread falls with the strata (5 in periodic evals: too noisy to rank).
SETTINGS = {"ddpm": ["eval.periodic_vlb_timesteps=20"]}

SCORES = ("bits_per_dim", "likelihood_ratio", "complexity_corrected",
          "typicality", "typicality_batch", "reconstruction_error",
          "discriminator", "max_softmax")


def ensure_trained(name: str, workdir: pathlib.Path, background: bool
                   ) -> bool:
  """Whether a run is there; trains it first with --train."""
  if (workdir / "config.json").exists() and any(
      (workdir / "checkpoints").glob("[0-9]*")):
    return True
  if not _TRAIN.value:
    return False
  args = [a.format(runs=workdir.parent) for a in MODELS[name]] + (
      BACKGROUND if background else [])
  print(f"training {workdir}: {' '.join(args)}", flush=True)
  subprocess.run([sys.executable, "-m", "gen_jax.main",
                  f"--workdir={workdir}", *args], check=True)
  return True


def settings(name: str) -> list[str]:
  """The config overrides `name` is scored with."""
  given = [e.partition(":")[2] for e in _OVERRIDE.value
           if e.partition(":")[0] == name]
  return [*SETTINGS.get(name, []), f"score.typicality_batch={_BATCH.value}",
          f"score.seed={_SEED.value}", *given]


def held_out_images(model: scoring.Model, num: int) -> np.ndarray:
  """The first `num` images of the run's held-out split."""
  return scoring.first_rows(model.run.data.eval_batches(), num)["image"]


def held_out_texts(model: scoring.Model) -> list[str]:
  c = model.config.data
  return [text_data.load_corpus(c.name, c.source, c.data_dir).eval]


def evaluate(name: str, sets: dict[str, object], runs: pathlib.Path,
             background_name: str | None) -> dict:
  """Every score of every set under one model, and their AUROCs against
  the 'in-distribution' set."""
  model = scoring.from_workdir(str(runs / name), overrides=settings(name))
  background = None
  if background_name:
    background = scoring.load_background(model.config,
                                         str(runs / background_name))
  key = jax.random.key(_SEED.value)
  t0 = time.time()
  reference = (scoring.reference_for(model, key) if model.has_likelihood
               else None)
  scores = {}
  for set_name, examples in sets.items():
    out, bad = scoring.score_examples(model, examples, background, reference,
                                      label=f"{name} {set_name}")
    if bad:
      print(f"{name} {set_name}: {len(bad)} rows skipped ({bad[0][1]})")
    if reference:
      out["typicality_batch"], _ = anomaly.typicality_batches(
          out["bits_per_dim"], reference)
    scores[set_name] = out
  seconds = time.time() - t0
  table = {}
  inside = scores["in-distribution"]
  for score in SCORES:
    if score not in inside:
      continue
    row = {}
    for set_name, out in scores.items():
      if set_name == "in-distribution":
        continue
      row[set_name] = anomaly.auroc(_finite(inside[score]),
                                    _finite(out[score]))
    table[score] = row
  return {"model": name, "step": model.step, "notes": model.notes,
          "background": background_name, "seconds": seconds,
          "settings": settings(name),
          "entropy_bits_per_dim": reference and reference.entropy,
          "mean": {k: {s: float(np.nanmean(v[s])) for s in v}
                   for k, v in scores.items()},
          "non_finite_rows": {k: int(np.sum(~np.isfinite(v[SCORES[0]])))
                              for k, v in scores.items()
                              if SCORES[0] in v},
          "auroc": table, "scores": scores}


def picture(result: dict, path: pathlib.Path) -> None:
  """Histograms of the raw and corrected scores per set, ROC curves."""
  scores = result["scores"]
  shown = [s for s in ("bits_per_dim", "likelihood_ratio",
                       "complexity_corrected", "discriminator", "max_softmax")
           if s in scores["in-distribution"]]
  fig, axes = plt.subplots(2, len(shown), figsize=(5 * len(shown), 8),
                           squeeze=False)
  for j, score in enumerate(shown):
    ax = axes[0, j]
    # The range of the digits' scores, widened; the far sets (noise: tens
    # of bits/dim) pile up at the edges.
    inside = _finite(scores["in-distribution"][score])
    lo, hi = np.quantile(inside, [0.01, 0.99])
    lo, hi = lo - 2 * (hi - lo), hi + 2 * (hi - lo)
    for set_name, out in scores.items():
      ax.hist(np.clip(_finite(out[score]), lo, hi), bins=60, range=(lo, hi),
              alpha=0.5, density=True, label=set_name, histtype="stepfilled")
    ax.set_title(f"{result['model']}: {score}")
    ax.set_xlabel("larger = more unusual (values past an edge are drawn "
                  "at it)", fontsize=8)
    ax = axes[1, j]
    for set_name, out in scores.items():
      if set_name == "in-distribution":
        continue
      fpr, tpr = anomaly.roc_curve(inside, _finite(out[score]))
      ax.plot(fpr, tpr, label=f"{set_name} "
              f"{result['auroc'][score][set_name]:.2f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7)
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=80)
  plt.close(fig)


def _finite(values: np.ndarray) -> np.ndarray:
  return values[np.isfinite(values)]


def markdown(results: list[dict], set_names: list[str]) -> str:
  lines = ["| model | score | " + " | ".join(set_names) + " |",
           "|---|---|" + "---|" * len(set_names)]
  for r in results:
    for score, row in r["auroc"].items():
      cells = [f"{row[s]:.3f}" if s in row else "" for s in set_names]
      lines.append(f"| {r['model']} | {score} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  log_lib.quiet_library_logs()
  runs = pathlib.Path(_RUNS.value)
  text = _TEXT.value
  names = _TEXT_MODELS.value if text else _MODELS.value
  results = []
  sets = None
  for name in names:
    if name not in MODELS:
      raise app.UsageError(f"unknown model {name}: one of "
                           f"{', '.join(MODELS)}")
    if not ensure_trained(name, runs / name, False):
      print(f"skipping {name}: no run in {runs / name} (--train trains it)")
      continue
    bg = f"{name}_bg"
    has_bg = (runs / bg / "config.json").exists() or (
        _TRAIN.value and name in WITH_BACKGROUND)
    if has_bg:
      ensure_trained(name, runs / bg, True)
    if sets is None:  # the same sets for every model
      sets = make_sets(scoring.from_workdir(str(runs / name)), text)
    result = evaluate(name, sets, runs, bg if has_bg else None)
    picture(result, runs / f"anomaly_{name}.png")
    results.append(result)
    print(markdown([result], [s for s in sets if s != "in-distribution"]),
          flush=True)
  if not results:
    return
  set_names = [s for s in sets if s != "in-distribution"]
  table = markdown(results, set_names)
  stem = runs / (_NAME.value or ("anomaly_text" if text else "anomaly"))
  files.write_text(stem.with_suffix(".md"), table + "\n")
  files.write_text(stem.with_suffix(".json"), json.dumps(
      [{k: v for k, v in r.items() if k != "scores"} for r in results],
      indent=2))
  print(table)
  print(f"wrote {stem}.md, {stem}.json")


def make_sets(model: scoring.Model, text: bool) -> dict[str, object]:
  """The in-distribution examples and every out-of-distribution set."""
  num, seed = _NUM.value, _SEED.value
  if text:
    inside = ood.text_chunks(held_out_texts(model), 2 * num, _LENGTH.value,
                             seed)
    sets = {"in-distribution": inside[:num]}
    for name in ood.TEXT_SETS:
      sets[name] = ood.text_set(name, inside[num:], num, _LENGTH.value, seed)
    return sets
  images = held_out_images(model, 2 * num)
  sets = {"in-distribution": images[:num]}
  for name in ood.IMAGE_SETS:
    sets[name] = ood.image_set(name, images[num:], num, seed)
  for name in _TFDS_OOD.value:
    other = config_lib.from_saved(model.config.to_dict())
    other.data.name = name
    other.data.source = "tfds"  # the real set, never a stand-in
    data = pipeline.make(other)
    sets[name] = np.concatenate([
        np.asarray(b["image"])[np.asarray(b["mask"]) > 0]
        for b in data.eval_batches()])[:num]
  return sets


if __name__ == "__main__":
  app.run(main)
