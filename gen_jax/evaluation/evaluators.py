"""Evaluators: plug-ins that score a trained model's samples, chosen by config.

The trainer runs the configured evaluators after the family's own held-out
metrics, in the final evaluation and in `--mode=eval`, and knows none of
them: it hands each an `EvalContext` (how to draw samples over the mesh, the
held-out split, a way to train a run it depends on) and merges the metrics
it returns.

Which evaluator runs: `config.eval.quality_features` names it when
`config.eval.quality_samples > 0`:
  'mnist_classifier', 'inception_v3': Fréchet distance, precision/recall,
      class accuracy / Inception Score on that network's features
      (`sample_quality`);
  'mixture_modes': modes captured and high-quality samples on the 2-D
      Gaussian mixtures (`modes`).
With `config.eval.prompts` (text-to-image), 'prompts' runs too: class
accuracy and attribute agreement of samples drawn for those prompts
(`prompt_agreement`). With `config.eval.beam_sizes` (translation),
'translation' runs: sacrebleu's BLEU and chrF of the held-out split's
translations at each beam size (`translation_quality`).
A new evaluator registers itself with `@register(name)`.
"""

import abc
import dataclasses
import pathlib
from typing import Callable, Iterator

import ml_collections
import numpy as np

from gen_jax import config as config_lib
from gen_jax.data import mixtures
from gen_jax.errors import UserError
from gen_jax.evaluation import features as features_lib
from gen_jax.evaluation import modes
from gen_jax.evaluation import prompt_agreement
from gen_jax.evaluation import sample_quality
from gen_jax.evaluation import translation_quality


@dataclasses.dataclass
class EvalContext:
  """What an evaluator may use, provided by the trainer."""
  config: ml_collections.ConfigDict
  num_classes: int  # > 0: the family draws class-conditional samples
  split_name: str  # names the held-out split in caches, e.g. 'mnist-eval1000'
  # sample(num, labels) -> ([num, ...] samples on the host, seconds/sample)
  sample: Callable[[int, np.ndarray | None], tuple[np.ndarray, float]]
  # One pass over the held-out split: host batches of its real rows.
  real_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
  # train(config, workdir): trains a run this evaluation depends on.
  train: Callable[[ml_collections.ConfigDict, str], object]
  captioned: bool = False  # the family draws images for prompts
  # sample_prompts(prompts, guidance_scale) -> (one sample per prompt on the
  # host, seconds/sample); a captioned family only.
  sample_prompts: Callable[[list[str], float],
                           tuple[np.ndarray, float]] | None = None
  # translate(source ids [N, S], beam size) -> token ids [N, T]; a
  # translating family only, with detokenize(ids) -> text.
  translate: Callable[[np.ndarray, int], np.ndarray] | None = None
  detokenize: Callable[[np.ndarray], str] | None = None
  # Where an evaluator may write what it produced (None: nowhere).
  output_dir: pathlib.Path | None = None


class Evaluator(abc.ABC):
  """Scores a model through an `EvalContext`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def __call__(self, ctx: EvalContext) -> dict[str, float]:
    """The metrics, by name."""

  def labels(self, ctx: EvalContext, num: int) -> np.ndarray | None:
    """Class labels cycled over the samples of a conditional family."""
    return np.arange(num) % ctx.num_classes if ctx.num_classes else None


_REGISTRY: dict[str, type[Evaluator]] = {}


def register(name: str):
  """Class decorator: makes an evaluator available by name."""
  def wrap(cls):
    _REGISTRY[name] = cls
    return cls
  return wrap


def configured(config: ml_collections.ConfigDict) -> list[Evaluator]:
  """The evaluators the config asks for: sample quality when
  quality_samples > 0, prompt agreement when eval.prompts are given."""
  chosen = []
  if config.eval.quality_samples > 0:
    chosen.append(_REGISTRY[config.eval.quality_features](config))
  if config.eval.get("prompts", ()):
    chosen.append(_REGISTRY["prompts"](config))
  if config.eval.get("beam_sizes", ()):
    chosen.append(_REGISTRY["translation"](config))
  return chosen


def run_all(config: ml_collections.ConfigDict, ctx: EvalContext
            ) -> dict[str, float]:
  """Runs every configured evaluator; their metrics, merged."""
  result = {}
  for evaluator in configured(config):
    result.update(evaluator(ctx))
  return result


@register("translation")
class TranslationQuality(Evaluator):
  """sacrebleu's BLEU and chrF of the held-out translations, per beam."""

  def __call__(self, ctx):
    if ctx.translate is None:
      raise UserError("--config.eval.beam_sizes: this family does not "
                      "translate; leave it empty.")
    return translation_quality.evaluate(ctx, tuple(self.config.eval.beam_sizes))


@register("mixture_modes")
class ModeCoverage(Evaluator):
  """Modes captured and high-quality samples of a 2-D Gaussian mixture."""

  def __call__(self, ctx):
    num = self.config.eval.quality_samples
    samples, seconds = ctx.sample(num, self.labels(ctx, num))
    result = modes.mode_metrics(samples,
                                mixtures.MIXTURES[self.config.data.name])
    result["sample_seconds_per_image"] = seconds
    return result


class _FeatureQuality(Evaluator):
  """Fréchet distance and friends on a feature network's features."""

  def extractor(self, ctx: EvalContext):
    return sample_quality.make_extractor(self.config)

  def reference(self, ctx: EvalContext):
    """(the feature extractor, the held-out split's features), cached."""
    extractor = self.extractor(ctx)
    return extractor, sample_quality.reference_features(
        extractor, self.config, ctx.split_name,
        (batch["image"] for batch in ctx.real_batches()))

  def __call__(self, ctx):
    num = self.config.eval.quality_samples
    extractor, reference = self.reference(ctx)
    labels = self.labels(ctx, num)
    samples, seconds = ctx.sample(num, labels)
    result = sample_quality.evaluate(extractor, samples, reference, labels)
    result["sample_seconds_per_image"] = seconds
    return result


@register("inception_v3")
class InceptionQuality(_FeatureQuality):
  """FID, precision/recall and Inception Score on Inception-v3 features."""


@register("mnist_classifier")
class ClassifierQuality(_FeatureQuality):
  """Fréchet distance, precision/recall and class accuracy on the features
  of the project's MNIST classifier, trained on first use."""

  def extractor(self, ctx):
    workdir = sample_quality.classifier_workdir(self.config)
    if not any((workdir / "checkpoints").glob("[0-9]*")):
      self._train_classifier(ctx, workdir)
    return super().extractor(ctx)

  def _train_classifier(self, ctx: EvalContext, workdir: pathlib.Path):
    print(f"Sample quality uses the project's MNIST classifier; training it "
          f"once into {workdir} (python -m gen_jax.main "
          f"--exp=mnist_classifier --workdir={workdir}).", flush=True)
    overrides = [f"data.source={self.config.data.source}",
                 f"data.data_dir={self.config.data.data_dir}"]
    ctx.train(config_lib.get_config("mnist_classifier", overrides),
              str(workdir))


@register("prompts")
class PromptAgreement(ClassifierQuality):
  """Class accuracy and attribute agreement of samples drawn for held-out
  prompts at several guidance scales (`prompt_agreement`)."""

  def __call__(self, ctx):
    super().extractor(ctx)  # trains the classifier on first use
    classifier = features_lib.MnistClassifierFeatures(
        str(sample_quality.classifier_workdir(self.config)))
    return prompt_agreement.evaluate(self.config, ctx, classifier)
