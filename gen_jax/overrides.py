"""Command-line text -> typed config values: `--config.*` overrides and the
short flags of `gen_jax.main`.

Each value is parsed into the type of the key's current value; anything
malformed raises one `UserError` that names the key, the value given and what
is valid. A value wrapped in one pair of matching quotes (which launch
scripts may pass through literally) is read without them. An int key takes
any exact integer, '1e3' included; a float key only finite numbers.
"""

import ast
import decimal
import difflib
import math
from typing import Any, Sequence

import ml_collections

from gen_jax.errors import UserError

# The short flags of `gen_jax.main`: flag -> (config key, type, help). Each
# is an alias of its config key, resolved by `flag_overrides`; a family
# without that key refuses the flag in one line.
FLAG_ALIASES = {
    "sampler": ("sample.sampler", str,
                "Sampler of --mode=sample/eval: ddpm|ddim|dpm_solver++ "
                "(DDPM), euler|heun|stochastic|dpm_solver++|adaptive (EDM, "
                "flow matching)."),
    "num_steps": ("sample.num_steps", int,
                  "Sampling steps, 0 = the sampler's default (DDPM: all T; "
                  "--sampler alone implies 0)."),
    "guidance_scale": ("sample.guidance_scale", float,
                       "Classifier-free guidance scale: 0 unconditional, 1 "
                       "conditional, >1 guided."),
    "temperature": ("sample.temperature", float,
                    "Sampling temperature: of the latent noise (flows) or of "
                    "the next-token distribution (language models; 0 = "
                    "greedy)."),
    "prompt": ("sample.prompts", list,
               "Text to continue (language models) or to draw (text-to-"
               "image); repeat the flag for several prompts."),
    "source": ("sample.sources", list,
               "A sentence to translate (translation models); repeat the "
               "flag for several."),
    "beam_size": ("sample.beam_size", int,
                  "Beam size of translation (1 = greedy)."),
    "top_k": ("sample.top_k", int,
              "Sample among the k most likely tokens, 0 = all."),
    "top_p": ("sample.top_p", float,
              "Nucleus sampling: the most likely tokens up to total "
              "probability p, 1 = all."),
    "max_new_tokens": ("sample.max_new_tokens", int,
                       "Tokens to generate per prompt."),
    "num_samples": ("sample.num_samples", int,
                    "--mode=sample also writes this many samples as an .npz "
                    "(uint8 images, or token ids and text)."),
    "labels": ("sample.labels", list,
               "Class ids cycled over the samples of a conditional model "
               "(repeat the flag or give a,b,c)."),
    "seed": ("sample.seed", int, "Seed of --mode=sample's draws."),
    "input": ("score.input", str,
              "--mode=score: an .npz of uint8 images, a folder of images, "
              "or a .txt/.jsonl file of texts."),
    "background": ("score.background", str,
                   "--mode=score: a background model's workdir (likelihood "
                   "ratio)."),
}

# Keys whose default may be an empty tuple: the type of their entries.
_ENTRY_TYPES = {"sample.labels": int, "data.image_shape": int,
                "eval.prompts": str,
                "mesh.shape": int, "mesh.axes": str, "sample.prompts": str,
                "sample.sources": str, "eval.beam_sizes": int}
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError,
                   RecursionError)
_MISSING = object()


def _flag_text(name: str, value: Any) -> str:
  """A given short flag's value as the text of its config key's override."""
  if isinstance(value, float) and not math.isfinite(value):
    raise UserError(f"--{name}={value}: expected a finite number.")
  if name == "labels":  # --labels=1,2 --labels=3 -> (1, 2, 3)
    given = ",".join(map(str, value))
    try:
      value = tuple(int(v) for item in value for v in str(item).split(",")
                    if v.strip())
    except ValueError:
      raise UserError(f"--labels={given}: expected class ids such as "
                      "0,3,7.") from None
    if any(v < 0 for v in value):
      raise UserError(f"--labels={given}: class ids must be >= 0.")
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def flag_overrides(values: dict[str, Any], explicit: Sequence[str] = ()
                   ) -> list[str]:
  """Short flags that were given -> 'key=value' overrides of their config
  keys.

  Args:
    values: flag name -> value (None: not given).
    explicit: the `--config.*` overrides given too; a sampler named alone
      implies all steps (`sample.num_steps=0`) unless one of them sets
      sample.num_steps.
  """
  values = {k: v for k, v in values.items() if v is not None}
  set_keys = {o.partition("=")[0] for o in explicit}
  if ("sampler" in values and "num_steps" not in values
      and "sample.num_steps" not in set_keys):
    values["num_steps"] = 0
  return [f"{FLAG_ALIASES[name][0]}={_flag_text(name, value)}"
          for name, value in values.items()]


def check_conflicts(config: ml_collections.ConfigDict,
                    explicit: Sequence[str], values: dict[str, Any]) -> None:
  """Refuses a short flag given together with the `--config.*` key it
  aliases when the two values differ (the same value twice is fine)."""
  last = dict(o.partition("=")[::2] for o in explicit)  # the last one counts
  for name, value in values.items():
    key = FLAG_ALIASES[name][0]
    if value is None or key not in last or _leaf(config, key) is _MISSING:
      continue
    current = _leaf(config, key)
    mine = parse_value(key, _flag_text(name, value), current)
    if mine != parse_value(key, last[key], current):
      shown = ",".join(map(str, value)) if isinstance(value, list) else value
      raise UserError(f"--{name}={shown} conflicts with --config.{key}="
                      f"{last[key]}; give one of them.")


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      keys += flat_keys(v, f"{prefix}{k}.")
    else:
      keys.append(f"{prefix}{k}")
  return keys


def _leaf(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at dotted `key` (a section is a ConfigDict), or _MISSING."""
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return _MISSING
    node = node[part]
  return node


def unquote(text: str) -> str:
  """`text` without one pair of matching surrounding quotes, if it has them."""
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
    return text[1:-1]
  return text


def _as_int(text: str) -> int | None:
  """An exact integer ('12', '1e3', '2.0'), else None."""
  try:
    return int(text)
  except ValueError:
    pass
  try:
    number = decimal.Decimal(text.strip())
  except decimal.InvalidOperation:
    return None
  if (not number.is_finite() or number.adjusted() > 18
      or number != number.to_integral_value()):
    return None  # not an integer, or beyond any int64 ('1e999999')
  return int(number)


def _entry(value: Any, kind: type | None) -> Any:
  """A tuple entry as `kind` (None: any), or _MISSING if it is not one."""
  if kind is None or (isinstance(value, kind) and not isinstance(value, bool)):
    return value
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return _MISSING
  if kind is int and isinstance(value, float) and value.is_integer():
    return int(value)
  if kind is float and math.isfinite(value):
    return float(value)
  return _MISSING


def _parse_tuple(key: str, text: str, current: Sequence[Any], fail) -> tuple:
  kind = type(current[0]) if current else _ENTRY_TYPES.get(key)
  body = text.strip() if kind is str else unquote(text.strip()).strip()
  if not body:
    return ()
  try:
    value = ast.literal_eval(body if body.startswith(("(", "["))
                             else f"({body},)")
  except _LITERAL_ERRORS:
    if kind is not str:
      fail("a tuple such as 1,2,3")
    value = [unquote(v.strip()) for v in body.split(",")]  # data,fsdp
  value = value if isinstance(value, (tuple, list)) else (value,)
  entries = tuple(_entry(v, kind) for v in value)
  if any(v is _MISSING for v in entries):
    fail(f"a tuple of {kind.__name__}")
  return entries


def parse_value(key: str, text: str, current: Any) -> Any:
  """Parses `text` into the type of `current`, or raises a one-line UserError."""
  def fail(expected):
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise UserError(f"--config.{key}: expected {expected}, got '{shown}'.")

  if isinstance(current, (tuple, list)):
    return type(current)(_parse_tuple(key, text, current, fail))
  plain = unquote(text)
  if isinstance(current, bool):
    low = plain.strip().lower()
    if low in ("true", "1", "yes"):
      return True
    if low in ("false", "0", "no"):
      return False
    fail("a bool (true/false)")
  if isinstance(current, int):
    value = _as_int(plain)
    if value is None:
      fail("an int")
    return value
  if isinstance(current, float):
    try:
      value = float(plain)
    except ValueError:
      fail("a float")
    if not math.isfinite(value):
      fail("a finite float")
    return value
  if isinstance(current, str):
    return plain
  if current is None:
    if plain != text:  # quoted: a string
      return plain
    try:
      return ast.literal_eval(text)
    except _LITERAL_ERRORS:
      return text
  fail(type(current).__name__)


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> None:
  """Applies 'a.b=value' strings; unknown keys and bad values raise UserError."""
  valid = flat_keys(config)
  for item in overrides:
    key, sep, text = item.partition("=")
    if not key:
      raise UserError(f"--config.{item}: names no key; give "
                      "--config.SECTION.KEY=VALUE, e.g. "
                      "--config.train.num_steps=100.")
    node = _leaf(config, key)
    if isinstance(node, ml_collections.ConfigDict):
      keys = ", ".join(flat_keys(node))
      raise UserError(f"--config.{key}: is a section, not a key; set its keys "
                      f"one by one, as --config.{key}.KEY=VALUE (its keys: "
                      f"{keys or 'none'}).")
    if not sep:
      raise UserError(f"--config.{key}: needs a value, as --config.{key}=VALUE.")
    if key not in valid:
      near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
      if not near:  # Same leaf name in another section, e.g. 'num_steps'.
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in valid if k.rsplit(".", 1)[-1] == leaf][:3]
      hint = (f" Nearest valid keys: {', '.join('--config.' + k for k in near)}."
              if near else "")
      raise UserError(f"--config.{key}: unknown config key.{hint}")
    *path, leaf = key.split(".")
    parent = config
    for part in path:
      parent = parent[part]
    parent[leaf] = parse_value(key, text, node)
