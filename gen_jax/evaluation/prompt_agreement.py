"""How well a text-to-image model follows its prompts (the 'prompts'
evaluator): for each held-out prompt of `eval.prompts` and each guidance
scale of `eval.guidance_scales`, `eval.samples_per_prompt` samples are drawn
and measured as the training captions were (`data/captions.py`):

  accuracy_s<scale>: the MNIST classifier's agreement with the prompted
      digit, over the prompts that name one (per prompt too:
      accuracy_s<scale>/<prompt>);
  thickness_agreement_s<scale>, slant_agreement_s<scale>: the fraction of
      samples whose measured thickness (slant) word is the prompted one,
      over the prompts that name one (chance: about 1/3);
  thick_minus_thin_s<scale>: mean measured stroke width (pixels) of samples
      of 'thick' prompts minus that of 'thin' prompts;
  slanted_minus_upright_s<scale>: the same for the shear of 'slanted' and
      'upright' prompts.

The same two gaps of the held-out digits under their own captions are
reported as real_thick_minus_thin and real_slanted_minus_upright, the
scale of a perfect model.
"""

import numpy as np

from gen_jax.data import captions
from gen_jax.errors import UserError
from gen_jax.evaluation import features as features_lib

_SLANT_WORD = {"left": "slanted left", "upright": "upright",
               "right": "slanted"}


def _gap(values: np.ndarray, groups: list, high: str, low: str) -> float:
  groups = np.asarray(groups, dtype=object)
  a, b = values[groups == high], values[groups == low]
  return float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")


def real_gaps(images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """The two gaps of real digits grouped by their measured words."""
  stats = captions.measure(images)
  thick = captions.thickness_words(stats["thickness"])
  slant = captions.slant_words(stats["slant"])
  del labels
  return {"real_thick_minus_thin": _gap(stats["thickness"], thick, "thick",
                                        "thin"),
          "real_slanted_minus_upright": _gap(stats["slant"], slant,
                                             "slanted", "upright")}


def agreement(images: np.ndarray, prompts: list[str],
              predicted: np.ndarray) -> dict[str, float]:
  """The metrics of one guidance scale (unsuffixed): samples [N, ...] drawn
  for prompts [N] (as `captions.parse` reads them), classifier predictions
  [N]."""
  stats = captions.measure(images)
  thick_w = captions.thickness_words(stats["thickness"])
  slant_w = captions.slant_words(stats["slant"])
  asked = [captions.parse(p) for p in prompts]
  out = {}
  named = [i for i, a in enumerate(asked) if a["label"] is not None]
  if named:
    out["accuracy"] = float(np.mean(
        [predicted[i] == asked[i]["label"] for i in named]))
    for prompt in dict.fromkeys(prompts[i] for i in named):
      rows = [i for i in named if prompts[i] == prompt]
      out[f"accuracy/{prompt}"] = float(np.mean(
          [predicted[i] == asked[i]["label"] for i in rows]))
  for key, words, table in (("thickness", thick_w, None),
                            ("slant", slant_w, _SLANT_WORD)):
    rows = [i for i, a in enumerate(asked) if a[key] is not None]
    if rows:
      want = [asked[i][key] if table is None else table[asked[i][key]]
              for i in rows]
      out[f"{key}_agreement"] = float(np.mean(
          [words[i] == w for i, w in zip(rows, want)]))
  thickness = [a["thickness"] for a in asked]
  slant = [{"right": "slanted"}.get(a["slant"], a["slant"]) for a in asked]
  out["thick_minus_thin"] = _gap(stats["thickness"], thickness, "thick",
                                 "thin")
  out["slanted_minus_upright"] = _gap(stats["slant"], slant, "slanted",
                                      "upright")
  return {k: v for k, v in out.items() if not np.isnan(v)}


def evaluate(config, ctx, classifier: features_lib.FeatureExtractor
             ) -> dict[str, float]:
  """Draws and scores the samples of every prompt at every scale."""
  if not ctx.captioned:
    raise UserError("--config.eval.prompts: this model is not conditioned "
                    "on captions (set data.captions), so it has no prompts "
                    "to follow.")
  e = config.eval
  if e.samples_per_prompt < 1 or not e.guidance_scales:
    raise UserError("--config.eval.samples_per_prompt must be >= 1 and "
                    "eval.guidance_scales not empty.")
  prompts = [p for p in e.prompts for _ in range(e.samples_per_prompt)]
  result = {}
  for scale in e.guidance_scales:
    images, seconds = ctx.sample_prompts(prompts, float(scale))
    predicted = np.argmax(classifier(images)["logits"], axis=-1)
    uint8 = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    for key, value in agreement(uint8, prompts, predicted).items():
      head, _, tail = key.partition("/")
      result[f"{head}_s{scale:g}" + (f"/{tail}" if tail else "")] = value
    result[f"sample_seconds_per_image_s{scale:g}"] = seconds
  real = [b for b in ctx.real_batches()]
  result.update(real_gaps(np.concatenate([b["image"] for b in real]),
                          np.concatenate([b["label"] for b in real])))
  return result
