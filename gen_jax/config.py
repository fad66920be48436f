"""Experiment configs: the shared skeleton, loading by name, overrides, checks.

(The parsing of override text and short flags lives in `overrides.py`.)

An experiment is a file `experiments/NAME.py`; files whose names start with
'_' are not experiments but shared config builders (`_text.py`, `_gan.py`,
`_flow.py`), which experiment files load with `load_module("_text")`. An
experiment file defines:

  get_config(): the full-size config, starting from `base_config()`.
  VARIANTS (optional): the names of its variants, e.g. ("cond", "binarized");
    then it defines `get_config(variants=())`, which receives the variants
    given, in the order given.
  smoke(c) (optional): the model-specific part of its tiny variant, applied
    after the shared loop shrink `smoke(c)` of this module.

`--exp=NAME:ARGS` takes ARGS joined by '-', e.g. 'pixelcnn_mnist:cond-smoke'.
`get_config` here splits them, refuses any that is neither one of the
experiment's VARIANTS nor 'smoke' with one UserError, builds the experiment's
config with its variants and, when 'smoke' is given, shrinks it to a run of
seconds on a CPU: `smoke(c)` of this module, then the experiment's own
`smoke(c)`. 'smoke' is not among an experiment's VARIANTS: every experiment
has it.
"""

import ast
import difflib
import importlib.util
import json
import os
import pathlib
from typing import Any, Sequence

import ml_collections

from gen_jax.data import mixtures
from gen_jax.errors import UserError
from gen_jax.overrides import FLAG_ALIASES, apply_overrides, check_conflicts
from gen_jax.overrides import flag_overrides, flat_keys

EXPERIMENTS_DIR = pathlib.Path(__file__).resolve().parent.parent / "experiments"

# Sections whose values decide the shapes and meaning of a checkpoint. A workdir
# may only be resumed with a config that agrees with its own on these.
STRUCTURAL_KEYS = ("family", "model", "data.name", "data.image_shape",
                   "data.vocab")
# Structural keys added after runs were saved without them, with the value
# that such a run means: its checkpoints stay usable.
ASSUMED_WHEN_ABSENT = {"model.network": "unet", "model.reflow_from": "",
                       "model.reflow_sampler": "heun", "model.reflow_steps": 10,
                       "model.reflow_tolerance": 1e-4}


def base_config() -> ml_collections.ConfigDict:
  """The skeleton every experiment edits; holds every shared key and its type."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.family = ""

  c.data = ml_collections.ConfigDict()
  c.data.name = "mnist"
  c.data.source = "auto"  # 'auto' | 'tfds' | 'embedded'
  c.data.data_dir = ""  # '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets
  c.data.batch_size = 128  # global, over all processes and devices
  c.data.eval_batch_size = 500
  c.data.image_shape = (28, 28, 1)
  c.data.num_classes = 10
  c.data.random_flip = False  # horizontal flips in training (natural images)
  c.data.cache = True  # decode each split once into host memory (small data)
  # Training inputs perturbed for a background model (Ren et al. 2019): each
  # pixel (or token) replaced, with this probability, by a uniform random
  # value (token id). 0 leaves them as they are.
  c.data.perturb_rate = 0.0

  c.model = ml_collections.ConfigDict()

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.learning_rate = 1e-3
  # 'constant' | 'cosine' | 'linear' | 'rsqrt' (warm-up, then
  # peak * sqrt(warmup / step): the Transformer paper's)
  c.train.lr_schedule = "constant"
  c.train.final_lr_fraction = 0.0  # cosine/linear decay ends at this x peak
  c.train.warmup_steps = 0
  c.train.grad_clip_norm = 0.0  # 0 disables clipping
  c.train.weight_decay = 0.0
  c.train.b1 = 0.9  # Adam's betas
  c.train.b2 = 0.999
  c.train.log_every = 100
  c.train.eval_every = 1000
  c.train.ckpt_every = 1000
  c.train.keep_ckpts = 3
  c.train.sample_every = 1000
  c.train.ema_decay = 0.0  # 0 disables the EMA of parameters
  c.train.dtype = "float32"  # compute dtype: 'float32' | 'bfloat16'
  # Convolutions: 'auto' (the fastest forms of the backend: on CPU 1x1 as
  # matmuls), 'xla' (XLA's own everywhere), 'matmul' (1x1 as matmuls and the
  # im2col kernel gradient for larger kernels, on every backend). See
  # gen_jax/models/conv.py.
  c.train.conv = "auto"

  c.eval = ml_collections.ConfigDict()
  c.eval.num_examples = -1  # -1: the whole held-out split
  c.eval.num_samples = 64  # images in a sample grid
  # Sample quality (image families; final eval and --mode=eval): Fréchet
  # distance, precision/recall, class accuracy / Inception Score of this many
  # samples against the held-out split. 0 turns it off.
  c.eval.quality_samples = 0
  # 'mnist_classifier' | 'inception_v3' | 'mixture_modes' (2-D mixtures:
  # modes captured and high-quality samples, no features).
  c.eval.quality_features = "mnist_classifier"
  c.eval.classifier_workdir = ""  # '' -> ~/.cache/gen_jax/mnist_classifier
  c.eval.inception_weights = ""  # path to pt_inception-2015-12-05-6726825d.pth
  c.eval.stats_dir = ""  # reference statistics cache; '' -> ~/.cache/gen_jax

  # Sampling. --mode=sample writes the family's pictures and, with
  # num_samples > 0, that many samples as samples/sample_step_N.npz.
  # Families add their sampler options here (diffusion's sampler, num_steps,
  # guidance_scale; ...); main.py's short flags (FLAG_ALIASES) set them.
  c.sample = ml_collections.ConfigDict()
  c.sample.num_samples = 0
  c.sample.labels = ()  # class ids cycled over the samples; (): 0, 1, ...
  c.sample.seed = 0  # --mode=sample draws with this seed (any run's keys)

  # --mode=score: how unusual each input is (gen_jax/scoring.py).
  c.score = ml_collections.ConfigDict()
  # An .npz of uint8 images, a folder of image files, or for language models
  # a .txt file (one example per line) or .jsonl (one JSON string each).
  c.score.input = ""
  # '' -> <workdir>/scores/<input's name>.{jsonl,npz,json}
  c.score.output = ""
  # A background model's workdir: scores also as the likelihood ratio
  # (Ren et al. 2019). '' -> none.
  c.score.background = ""
  # The lossless compressor of the complexity correction (Serra et al. 2020):
  # 'auto' (png for images, lzma for text) | png | zlib | bz2 | lzma | none.
  c.score.compressor = "auto"
  # The typicality test (Nalisnick et al. 2019b): the model's entropy
  # measured on this many training examples, batches of this many inputs.
  c.score.reference_examples = 1000
  c.score.typicality_batch = 10
  c.score.final = False  # the final eval's estimates (slower, tighter)
  # Rows per compiled call (and progress line); 0: data.eval_batch_size.
  c.score.batch_size = 0
  c.score.seed = 0  # (--seed sets sample.seed, not this)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.axes = ("data",)
  c.mesh.shape = (-1,)  # -1: all remaining devices
  # With an 'fsdp' axis: state leaves of at least this many elements are
  # split over it (parameters, optimizer moments, EMA); smaller ones are
  # replicated.
  c.mesh.fsdp_min_size = 4096
  return c


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks the loop of any config to a run of seconds (keeps the model);
  `get_config` applies it for ':smoke', before the experiment's `smoke(c)`."""
  config.train.num_steps = 20
  config.train.log_every = 5
  config.train.eval_every = 20
  config.train.ckpt_every = 10
  config.train.sample_every = 20
  config.train.warmup_steps = 0
  config.data.batch_size = 32
  config.data.eval_batch_size = 200
  config.eval.num_examples = 200
  config.eval.num_samples = 16
  return config


def list_experiments() -> list[str]:
  return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py")
                if not p.stem.startswith("_"))


def describe(name: str) -> str:
  """First line of an experiment file's docstring (read without importing)."""
  doc = ast.get_docstring(ast.parse(_experiment_path(name).read_text()))
  return (doc or "").strip().splitlines()[0] if doc else ""


def _experiment_path(name: str) -> pathlib.Path:
  if name.endswith(".py") or os.sep in name:
    path = pathlib.Path(name)
    if not path.is_file():
      raise UserError(f"--exp: no experiment file at {name}.")
    return path
  path = EXPERIMENTS_DIR / f"{name}.py"
  if not path.is_file():
    _unknown_experiment(name)
  return path


def _unknown_experiment(name: str) -> None:
  valid = list_experiments()
  near = difflib.get_close_matches(name, valid, n=1)
  hint = f" Did you mean '{near[0]}'?" if near else ""
  raise UserError(f"--exp: unknown experiment '{name}'.{hint} "
                  f"Valid: {', '.join(valid)}.")


def load_module(name: str):
  """Executes `experiments/NAME.py` (or a path to a .py file) as a module."""
  spec = importlib.util.spec_from_file_location(
      f"gen_jax_experiment_{pathlib.Path(name).stem}", _experiment_path(name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def one_of(variants: Sequence[str], choices: Sequence[str], default: str
           ) -> str:
  """The one entry of `choices` among `variants` (`default` if none); for
  variants that exclude each other, such as the data set to use."""
  picked = [v for v in variants if v in choices]
  if len(picked) > 1:
    raise UserError(f"--exp: {' and '.join(picked)} exclude each other; give "
                    f"one of {', '.join(choices)}.")
  return picked[0] if picked else default


def get_config(exp: str, overrides: Sequence[str] = (),
               flags: dict[str, Any] | None = None
               ) -> ml_collections.ConfigDict:
  """Loads `experiments/NAME.py` (`NAME[:ARGS]`) and applies `--config.*` overrides.

  Args:
    exp: experiment name, optionally with ':ARGS', its variants and 'smoke'
      joined by '-' (e.g. 'vae_mnist:smoke', 'pixelcnn_mnist:cond-smoke').
    overrides: strings 'a.b.c=value' (the part after '--config.').
    flags: the short flags of `gen_jax.main` (FLAG_ALIASES), name -> value
      (None: not given). Each sets its config key, after `overrides`; one
      whose key the experiment lacks is refused naming the flag, and one
      that contradicts an override of its key is refused naming both.

  Returns:
    The resolved, locked config.
  """
  name, _, arg = exp.partition(":")
  if name.startswith("_"):  # shared config builders, not experiments
    _unknown_experiment(name)
  module = load_module(name)
  variants = tuple(getattr(module, "VARIANTS", ()))
  args = tuple(dict.fromkeys(a for a in arg.split("-") if a))
  for a in args:
    if a != "smoke" and a not in variants:
      raise UserError(
          f"--exp={exp}: '{a}' is not an argument of {name}; valid: "
          f"{', '.join(variants + ('smoke',))} (join several with '-').")
  chosen = tuple(a for a in args if a != "smoke")
  config = module.get_config(chosen) if variants else module.get_config()
  if "smoke" in args:
    smoke(config)
    if hasattr(module, "smoke"):
      module.smoke(config)
  flags = {k: v for k, v in (flags or {}).items() if v is not None}
  valid = flat_keys(config)
  for flag in flags:
    key = FLAG_ALIASES[flag][0]
    if key not in valid:
      raise UserError(f"--{flag}: experiment '{name}' has no option {key} "
                      f"(its family, '{config.family}', takes no --{flag}).")
  check_conflicts(config, overrides, flags)
  apply_overrides(config, [*overrides, *flag_overrides(flags, overrides)])
  validate(config)
  config.lock()
  return config


_CHOICES = {
    "data.source": ("auto", "tfds", "embedded"),
    "train.dtype": ("float32", "bfloat16"),
    "train.conv": ("auto", "xla", "matmul"),
    "train.lr_schedule": ("constant", "cosine", "linear", "rsqrt"),
    "eval.quality_features": ("mnist_classifier", "inception_v3",
                              "mixture_modes"),
    "score.compressor": ("auto", "png", "zlib", "bz2", "lzma", "none"),
}


# Shared keys (numbers, or tuples of them) -> their lowest valid value.
_AT_LEAST = {
    **dict.fromkeys(
        ("train.num_steps", "data.batch_size", "data.eval_batch_size",
         "train.log_every", "train.eval_every", "train.ckpt_every",
         "train.sample_every", "train.keep_ckpts", "mesh.fsdp_min_size",
         "eval.num_samples", "data.image_shape"), 1),
    **dict.fromkeys(
        ("seed", "sample.seed", "score.seed", "score.batch_size",
         "sample.num_samples",
         "sample.labels",
         "data.num_classes", "train.warmup_steps", "train.learning_rate",
         "train.weight_decay", "train.grad_clip_norm",
         "train.final_lr_fraction"), 0),
    **dict.fromkeys(("score.reference_examples", "score.typicality_batch"),
                    1),
}
# in [0, 1)
_FRACTIONS = ("train.b1", "train.b2", "train.ema_decay", "data.perturb_rate")
_MAX_SEED = 2**32 - 1  # seeds are folded into keys as uint32
MESH_AXES = ("data", "fsdp", "model")


def _flag_name(key: str) -> str:
  """'--config.KEY', with the short flag that sets it, if any."""
  flag = [f for f, (k, _, _) in FLAG_ALIASES.items() if k == key]
  return f"--config.{key}" + (f" (--{flag[0]})" if flag else "")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values that types alone do not catch."""
  for key, choices in _CHOICES.items():
    section, leaf = key.split(".")
    value = config[section][leaf]
    if value not in choices:
      raise UserError(f"--config.{key}: '{value}' is not one of "
                      f"{', '.join(choices)}.")
  for key, low in _AT_LEAST.items():
    value = config[key]
    if any(v < low for v in (value if isinstance(value, tuple) else (value,))):
      rule = "must be positive" if low == 1 else f"must be >= {low}"
      raise UserError(f"{_flag_name(key)}: {rule}, got {value}.")
  for key in _FRACTIONS:
    if not 0 <= config[key] < 1:
      raise UserError(f"--config.{key}: must be in [0, 1), got "
                      f"{config[key]}.")
  for key in ("seed", "sample.seed", "score.seed"):
    if config[key] > _MAX_SEED:
      raise UserError(f"{_flag_name(key)}: must be at most {_MAX_SEED}, got "
                      f"{config[key]}.")
  mixture = config.data.name in mixtures.MIXTURES
  if (config.eval.quality_features == "mixture_modes") != mixture and (
      config.eval.quality_samples > 0):
    raise UserError(
        f"--config.eval.quality_features={config.eval.quality_features} does "
        f"not apply to data '{config.data.name}': 'mixture_modes' is for the "
        f"2-D mixtures ({', '.join(mixtures.MIXTURES)}), the feature "
        "extractors for images.")
  features = config.eval.quality_features
  if config.eval.quality_samples > 0 and features != "mixture_modes":
    # Precision/recall take each point's 3 nearest neighbours.
    if config.eval.quality_samples < 4 or 0 < config.eval.num_examples < 4:
      raise UserError(
          f"--config.eval.quality_samples={config.eval.quality_samples}, "
          f"--config.eval.num_examples={config.eval.num_examples}: sample "
          "quality needs at least 4 samples and 4 held-out examples.")
    if features == "mnist_classifier" and (
        tuple(config.data.image_shape) != (28, 28, 1)):
      raise UserError(
          "--config.eval.quality_features=mnist_classifier scores 28x28x1 "
          f"images, not {tuple(config.data.image_shape)}; use inception_v3.")
  axes, shape = tuple(config.mesh.axes), tuple(config.mesh.shape)
  if any(a not in MESH_AXES for a in axes) or len(set(axes)) < len(axes):
    raise UserError(f"--config.mesh.axes={axes}: each axis is one of "
                    f"{', '.join(MESH_AXES)}, at most once.")
  if len(axes) != len(shape):
    raise UserError("--config.mesh.shape: needs one entry per axis of "
                    f"--config.mesh.axes {axes}.")
  if any(s < 1 and s != -1 for s in shape) or shape.count(-1) > 1:
    raise UserError(f"--config.mesh.shape={shape}: sizes must be >= 1, or "
                    "-1 (all remaining devices) for one axis.")


def from_saved(saved: dict) -> ml_collections.ConfigDict:
  """A config read back from a run's config.json, on top of today's skeleton:
  a run saved before a shared key was added gets that key's default."""
  config = base_config()
  config.update(saved)
  return config


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def _lookup(tree: dict, dotted: str) -> Any:
  for part in dotted.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def structural_differences(saved: dict, config: ml_collections.ConfigDict
                           ) -> list[str]:
  """Lists 'key: saved -> new' for keys that change what a checkpoint holds."""
  new = json.loads(to_json(config))
  diffs = []
  for key in STRUCTURAL_KEYS:
    a, b = _lookup(saved, key), _lookup(new, key)
    if isinstance(a, dict) or isinstance(b, dict):
      for sub in sorted(set(a or {}) | set(b or {})):
        if sub not in (a or {}) and (b or {}).get(sub) == (
            ASSUMED_WHEN_ABSENT.get(f"{key}.{sub}", object())):
          continue  # saved before the key existed, meaning this value
        if (a or {}).get(sub) != (b or {}).get(sub):
          diffs.append(f"{key}.{sub}: {(a or {}).get(sub)!r} -> "
                       f"{(b or {}).get(sub)!r}")
    elif a != b:
      diffs.append(f"{key}: {a!r} -> {b!r}")
  return diffs
