r"""`--mode=score`: how unusual each input is to a trained model.

  python -m gen_jax.main --exp=glow_mnist --workdir=runs/glow --mode=score \
      --input=digits.npz [--background=runs/glow_bg]

Writes, beside each other (atomically), <stem>.jsonl (one row per input
row: its scores, or the reason it was skipped), <stem>.npz (the scores of
the scored rows and their indices) and <stem>.json (what each score is, the
typicality test's reference and batches); <stem> is `score.output` or
<workdir>/scores/<input's name>. The scores and their papers are in
`evaluation/anomaly.py`; what each family's likelihood is (exact or a
bound) in its `score_notes`.
"""

import hashlib
import json
import math
import pathlib
from typing import Sequence

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from gen_jax import config as config_lib
from gen_jax import files
from gen_jax import logging as log_lib
from gen_jax import parallel
from gen_jax import train
from gen_jax.data import pipeline
from gen_jax.data import score_inputs
from gen_jax.data import text as text_data
from gen_jax.errors import UserError
from gen_jax.evaluation import anomaly

Arrays = dict[str, np.ndarray]


class Model:
  """A trained run, restored read-only, that scores examples in batches."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.run, self.state, self.step = train.restore_latest(config, workdir)
    self.family = self.run.family
    self.config = config
    final = bool(config.score.final)
    self.notes = self.family.score_notes(final)
    mesh = self.run.mesh
    self._fn = jax.jit(
        lambda s, b, k: self.family.score(s, b, k, final=final),
        in_shardings=(self.run.state_shardings, parallel.batch_sharding(mesh),
                      parallel.replicated(mesh)),
        out_shardings=parallel.replicated(mesh))

  @property
  def image_shape(self) -> tuple[int, ...] | None:
    """The images the model reads; None for a language model."""
    return None if self.family.models_text else image_shape(self.config)

  def encode(self, examples) -> tuple[Arrays, list[tuple[int, str]]]:
    """Examples (uint8 images, or strings) -> the family's score batch
    arrays, one row per example (an unusable one empty), and (position,
    why) of the unusable ones."""
    if self.image_shape is not None:
      return {"image": np.asarray(examples, np.uint8)}, []
    tok = self.family.tokenizer
    context = getattr(self.family, "context_length", 0)
    ids, bad = [], []
    for i, text in enumerate(examples):
      row = [tok.bos_id] + [int(t) for t in tok.encode(text)]
      if context and len(row) - 1 > context:
        bad.append((i, f"{len(row) - 1} tokens, more than the model's "
                       f"context of {context}"))
        row = []
      elif tok.decode(row[1:]) != text:  # e.g. a character-level vocabulary
        bad.append((i, "characters the model's vocabulary does not have"))
        row = []
      ids.append(row)
    longest = max(len(r) for r in ids)
    tokens = np.zeros((len(ids), max(longest, 2)), np.int32)
    mask = np.zeros((len(ids), tokens.shape[1] - 1), np.float32)
    for i, row in enumerate(ids):
      tokens[i, :len(row)] = row
      mask[i, :max(len(row) - 1, 0)] = 1.0
    return {"tokens": tokens, "token_mask": mask}, bad

  def raw(self, arrays: Arrays, key: jax.Array, label: str = "score"
          ) -> Arrays:
    """The family's scores of every row of `arrays` (plus 'bits_per_dim'),
    in batches of data.eval_batch_size, with progress. A class-conditional
    model scores p(x) = mean over classes of p(x | y) (a lower bound on
    log p(x) from lower bounds of each log p(x | y))."""
    k = self.family.num_classes
    if not k:
      out = self._batches(arrays, key, label)
    else:  # other scores: the class that finds the input most usual
      per_class = []
      for y in range(k):
        labelled = {**arrays, "label": np.full(_rows(arrays), y, np.int32)}
        per_class.append(self._batches(labelled, key, f"{label} (class {y})"))
      out = {name: np.min(np.stack([p[name] for p in per_class]), axis=0)
             for name in per_class[0]}
      if "nll" in out:
        nll = np.stack([p["nll"] for p in per_class])  # [K, N]
        low = nll.min(axis=0)
        out["nll"] = low - np.log(np.mean(np.exp(low - nll), axis=0))
    if "nll" in out:
      out["bits_per_dim"] = out["nll"] / (np.maximum(out["dims"], 1.0)
                                          * math.log(2.0))
    return out

  @property
  def has_likelihood(self) -> bool:
    """Whether the family gives -log p(x) (else only its own score)."""
    return "nll" in self.notes

  def _batches(self, arrays: Arrays, key: jax.Array, label: str) -> Arrays:
    n = _rows(arrays)
    # score.batch_size (default the eval batch), or fewer rows than that: a
    # smaller batch, still divisible over the devices and processes.
    multiple = math.lcm(parallel.num_batch_shards(self.run.mesh),
                        jax.process_count())
    size = pipeline.padded_size(min(
        self.config.score.batch_size or self.run.data.eval_batch_size, n),
                                multiple)
    progress = log_lib.Progress(label, -(-n // size), " batches")
    outs = []
    for i, local in enumerate(pipeline.eval_batches(
        pipeline.ArraySource(arrays), size, n, jax.process_index(),
        jax.process_count())):
      out = self._fn(self.state, parallel.global_batch(local, self.run.mesh),
                     jax.random.fold_in(key, i))
      real = np.arange(i * size, (i + 1) * size) < n  # the whole batch's
      outs.append({k: np.asarray(v)[real] for k, v in
                   jax.device_get(out).items()})
      progress(i + 1)
    return {k: np.concatenate([o[k] for o in outs]).astype(np.float64)
            for k in outs[0]}

  def reference(self, num: int, key: jax.Array
                ) -> tuple[np.ndarray, np.ndarray]:
    """Bits/dim of the first `num` training examples (the pipeline's seeded
    order) and of the first `num` held-out ones: the typicality test's
    entropy and its bootstrap. A language model's token windows are scored
    as texts after BOS, like its inputs."""
    out = []
    for i, (split, batches) in enumerate((
        ("training", self.run.data.train),
        ("held-out", self.run.data.eval_batches()))):
      arrays = first_rows(batches, num)
      if "tokens" in arrays:
        texts = [self.family.tokenizer.decode(w[1:]) for w in
                 arrays["tokens"]]
        arrays, bad = self.encode(texts)
        arrays = _usable(arrays, bad)
      else:
        arrays = {"image": arrays["image"]}
      out.append(self.raw(arrays, jax.random.fold_in(key, i),
                          f"typicality reference ({split})")["bits_per_dim"])
    return out[0], out[1]


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """The [H, W, C] images a config's model reads; vectors refused."""
  shape = tuple(config.data.image_shape)
  if len(shape) != 3:
    raise UserError(f"--mode=score reads images [H, W, C] or texts; this "
                    f"model reads vectors of shape {shape} (score them "
                    "with the family's score() in Python).")
  return shape


def _rows(arrays: Arrays) -> int:
  return len(next(iter(arrays.values())))


def first_rows(batches, num: int) -> Arrays:
  """The first `num` real rows (the 'mask' of padded eval batches) of a
  data pipeline's batches; with several processes, their slices gathered
  into the global batches."""
  rows, count = [], 0
  for batch in batches:
    batch = {k: np.asarray(v) for k, v in batch.items()}
    if jax.process_count() > 1:
      batch = {k: np.asarray(v) for k, v in multihost_utils.process_allgather(
          batch, tiled=True).items()}
    mask = batch.pop("mask", None)
    if mask is not None:
      batch = {k: v[mask > 0] for k, v in batch.items()}
    rows.append(batch)
    count += _rows(batch)
    if count >= num:
      break
  return {k: np.concatenate([b[k] for b in rows])[:num] for k in rows[0]}


def _setting(config: ml_collections.ConfigDict, dotted: str):
  section, leaf = dotted.split(".")
  return config[section].get(leaf)


def from_workdir(workdir: str, score: ml_collections.ConfigDict
                 | None = None, overrides: Sequence[str] = ()) -> Model:
  """The model of a trained run, with its saved config, `score` settings
  (default the skeleton's) and `overrides` ('SECTION.KEY=VALUE', e.g. the
  eval estimates the scores use)."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise UserError(f"{workdir}: no trained run there (no config.json).")
  saved = config_lib.from_saved(json.loads(path.read_text()))
  if score is not None:
    saved.score = score
  config_lib.apply_overrides(saved, list(overrides))
  config_lib.validate(saved)
  return Model(saved, workdir)


def load_background(config: ml_collections.ConfigDict, workdir: str
                    ) -> Model:
  """The background model of `workdir`, checked to read the same data."""
  saved = pathlib.Path(workdir) / "config.json"
  # The eval settings given for this model (e.g. its importance samples)
  # hold for the background's estimates too, where it has them.
  overrides = []
  if saved.is_file():
    theirs = json.loads(saved.read_text()).get("eval", {})
    overrides = [f"eval.{k}={_text(v)}" for k, v in config.eval.items()
                 if k in theirs]
  background = from_workdir(workdir, config.score, overrides)
  if not background.has_likelihood:
    raise UserError(f"--background={workdir}: a '{background.config.family}'"
                    " run assigns no likelihood to take a ratio with.")
  for key in ("data.name", "data.image_shape"):
    ours, theirs = _setting(config, key), _setting(background.config, key)
    if ours != theirs:
      raise UserError(f"--background={workdir} was trained on {key}="
                      f"{theirs}, this model on {ours}: a likelihood ratio "
                      "needs the same data.")
  return background


def _text(value) -> str:
  """A config value as override text."""
  if isinstance(value, (tuple, list)):
    return ",".join(map(str, value))
  return str(value)


def compressor_of(config: ml_collections.ConfigDict, text: bool) -> str:
  """`score.compressor`, 'auto' resolved: png for images, lzma for text."""
  name = config.score.compressor
  if name == "auto":
    return "lzma" if text else "png"
  if name == "png" and text:
    raise UserError("--config.score.compressor=png compresses images; for "
                    "text use zlib, bz2, lzma or none.")
  return name


def reference_for(model: Model, key: jax.Array) -> anomaly.Typicality:
  """The typicality test's reference, measured once per checkpoint and
  settings (the estimator, as `score_notes` describes it) and kept under
  <workdir>/scores/."""
  s = model.config.score
  estimator = hashlib.sha1(json.dumps(model.notes, sort_keys=True).encode()
                           ).hexdigest()[:8]
  path = (model.run.workdir / "scores" /
          f"typicality_step{model.step}_n{s.reference_examples}_"
          f"m{s.typicality_batch}_seed{s.seed}_{estimator}.json")
  # One process reads the cache: several could see it at different times
  # and disagree about running the (collective) measurement.
  if path.exists() and jax.process_count() == 1:
    return anomaly.Typicality(**json.loads(path.read_text()))
  if s.reference_examples < 4:
    raise UserError(f"--config.score.reference_examples="
                    f"{s.reference_examples}: the typicality test needs at "
                    "least 4.")
  train_bpd, held_out_bpd = model.reference(s.reference_examples,
                                            jax.random.fold_in(key, 1))
  ref = anomaly.typicality_reference(train_bpd, held_out_bpd,
                                     s.typicality_batch, seed=s.seed)
  if jax.process_index() == 0:
    files.write_text(path, json.dumps(ref.__dict__, indent=2))
  return ref


def score_examples(model: Model, examples, background: Model | None = None,
                   reference: anomaly.Typicality | None = None,
                   label: str = "score") -> tuple[Arrays, list[tuple[int, str]]]:
  """Every score of `examples` (uint8 images or strings): the family's
  ('nll', 'dims', 'bits_per_dim', extras), 'complexity_bits_per_dim' and
  'complexity_corrected', 'likelihood_ratio' (with a background) and
  'typicality' (with a reference); over the usable rows, with (position,
  why) of the others."""
  s = model.config.score
  key = jax.random.key(s.seed)
  arrays, bad = model.encode(examples)
  out = model.raw(arrays, key, label)
  text = model.image_shape is None
  compressor = compressor_of(model.config, text)
  if "bits_per_dim" not in out:  # no likelihood: nothing to correct
    return _usable(out, bad), bad
  # A binarized image's bits are not the 8-bit image's: no compressor
  # measures the data such a model scores.
  if compressor != "none" and "binarized" not in model.notes["nll"]:
    bits = anomaly.compressed_bits(examples, compressor)
    out["complexity_bits_per_dim"] = bits / np.maximum(out["dims"], 1.0)
    out["complexity_corrected"] = anomaly.complexity_corrected(
        out["bits_per_dim"], out["complexity_bits_per_dim"])
  if background is not None:
    mine = model.family.tokenizer
    other = background.family.tokenizer
    if (mine is not None and other is not None
        and mine.fingerprint != other.fingerprint):
      raise UserError("--background: its tokens differ from this model's "
                      f"({other.fingerprint} vs {mine.fingerprint}); a "
                      "per-token ratio needs the same tokenizer.")
    theirs, their_bad = background.encode(examples)
    if [i for i, _ in their_bad] != [i for i, _ in bad]:
      raise UserError("--background: it cannot read the same rows as this "
                      f"model ({(their_bad or bad)[0][1]}).")
    back = background.raw(theirs, key, f"{label} (background)")
    out["background_bits_per_dim"] = back["bits_per_dim"]
    out["likelihood_ratio"] = anomaly.likelihood_ratio(
        out["bits_per_dim"], back["bits_per_dim"])
  if reference is not None:
    out["typicality"] = anomaly.typicality_scores(out["bits_per_dim"],
                                                  reference)
  return _usable(out, bad), bad


def _usable(out: Arrays, bad: list[tuple[int, str]]) -> Arrays:
  keep = np.ones(_rows(out), bool)
  keep[[i for i, _ in bad]] = False
  return {k: v[keep] for k, v in out.items()}


def score(config: ml_collections.ConfigDict, workdir: str
          ) -> list[pathlib.Path]:
  """`--mode=score`: scores `score.input` and writes the three files."""
  s = config.score
  # The input is read, and refused, before the model is restored.
  text = config.data.name in text_data.NAMES  # the language models' data
  compressor_of(config, text)
  inputs = score_inputs.read(s.input, None if text else image_shape(config))
  model = Model(config, workdir)
  if not model.has_likelihood and s.background:
    raise UserError(f"--background={s.background}: a likelihood ratio needs "
                    f"a likelihood, and the '{config.family}' family has "
                    "none.")
  background = load_background(config, s.background) if s.background else None
  reference = (reference_for(model, jax.random.key(s.seed))
               if model.has_likelihood else None)
  scores, unusable = score_examples(model, inputs.examples, background,
                                    reference)
  bad = inputs.bad + [(int(inputs.index[i]), f"row {int(inputs.index[i])}: "
                       f"{why}") for i, why in unusable]
  if len(unusable) == len(inputs.index):
    raise UserError(f"--input={s.input}: no row can be scored (first: "
                    f"{bad[-len(unusable)][1]}).")
  index = np.delete(inputs.index, [i for i, _ in unusable])
  dropped = {j for j, _ in unusable}
  names = [n for i, n in enumerate(inputs.names) if i not in dropped]
  stats, rejected = (anomaly.typicality_batches(scores["bits_per_dim"],
                                                reference)
                     if reference else (np.zeros(0), np.zeros(0, bool)))
  stem = pathlib.Path(s.output) if s.output else (
      model.run.workdir / "scores" / _input_name(s.input))
  paths = [stem.with_name(stem.name + ext)
           for ext in (".jsonl", ".npz", ".json")]
  if jax.process_index() == 0:
    # 'exact', 'upper bound' or 'estimate': the note's first words.
    kind = ({"nll_kind": model.notes["nll"].split(":")[0]}
            if model.has_likelihood else {})
    rows = {int(i): {"index": int(i), **({"name": n} if n else {}), **kind,
                     **{k: _number(v[j]) for k, v in scores.items()},
                     **({"converted": inputs.notes[int(i)]}
                        if int(i) in inputs.notes else {})}
            for j, (i, n) in enumerate(zip(index, names))}
    rows.update({i: {"index": i, "error": why} for i, why in bad})
    with files.atomic_open(paths[0], "w") as f:
      for i in sorted(rows):
        f.write(json.dumps(rows[i]) + "\n")
    with files.atomic_open(paths[1], "wb") as f:
      np.savez(f, index=index, **scores)
    summary = {
        "input": s.input, "step": model.step, "scored": len(index),
        "skipped": [{"index": i, "error": why} for i, why in bad],
        "notes": {**model.notes, **({
            **_NOTES, "complexity_bits_per_dim":
            f"{compressor_of(config, text)} bits / dims"}
                                    if model.has_likelihood else {})},
        "background": s.background or None,
        "typicality": reference and {
            **reference.__dict__,
            "batch_statistics": [_number(x) for x in stats],
            "batches_rejected": int(rejected.sum()), "batches": len(stats)},
        "mean": {k: _number(np.nanmean(v)) if np.isfinite(v).any()
                 else None for k, v in scores.items()}}
    files.write_text(paths[2], json.dumps(summary, indent=2))
    for i, why in bad:
      print(f"skipped {why}", flush=True)
    print(f"scored {len(index)} of {len(index) + len(bad)} rows @ step "
          f"{model.step}: " + ", ".join(
              f"{k} {summary['mean'][k]:.4g}" for k in _SHOWN
              if k in summary["mean"]) +
          (f"; typicality test: {int(rejected.sum())} of {len(stats)} "
           f"batches of {reference.batch_size} atypical" if reference
           else "") + "\nwrote " + ", ".join(map(str, paths)), flush=True)
  return paths


def _input_name(path: str) -> str:
  """An input's name for its score files: 'a.test.npz' -> 'a.test', a
  folder -> its name."""
  p = pathlib.Path(path).resolve()
  known = score_inputs.TEXT_SUFFIXES + (".npz",)
  return p.stem if p.suffix.lower() in known else p.name


_SHOWN = ("bits_per_dim", "likelihood_ratio", "complexity_corrected",
          "typicality", "reconstruction_error", "discriminator",
          "max_softmax")
_NOTES = {
    "bits_per_dim": "nll / (dims ln 2)",
    "complexity_corrected": "bits_per_dim - complexity_bits_per_dim (Serra "
                            "et al. 2020)",
    "likelihood_ratio": "bits_per_dim - background_bits_per_dim (Ren et al. "
                        "2019)",
    "typicality": "|bits_per_dim - entropy| (Nalisnick et al. 2019b)",
}


def _number(x) -> float | None:
  x = float(x)
  return x if math.isfinite(x) else None
