"""Hugging Face GPT-2 checkpoints as `gen_jax.models.transformer` parameters.

A checkpoint is a directory as `save_pretrained` writes it: `config.json`
and the weights in `model.safetensors`, `pytorch_model.bin`, or shards listed
by `model.safetensors.index.json` / `pytorch_model.bin.index.json`. Neither
torch nor transformers is imported: safetensors files are parsed here and
`.bin` files by `gen_jax.importers.torch_files`.

Names map one to one (the 'transformer.' prefix is optional):

  wte.weight                  -> embed                [V, D]
  wpe.weight                  -> pos_embed            [ctx, D]
  h.{i}.ln_1.{weight,bias}    -> blocks/{i}/ln1/{scale,bias}
  h.{i}.attn.c_attn.*         -> blocks/{i}/qkv/{kernel,bias}
  h.{i}.attn.c_proj.*         -> blocks/{i}/attn_out/{kernel,bias}
  h.{i}.ln_2.*                -> blocks/{i}/ln2/{scale,bias}
  h.{i}.mlp.c_fc.*            -> blocks/{i}/fc/{kernel,bias}
  h.{i}.mlp.c_proj.*          -> blocks/{i}/mlp_out/{kernel,bias}
  ln_f.{weight,bias}          -> ln_f/{scale,bias}
  lm_head.weight              -> head/kernel (transposed; untied models only)

GPT-2's Conv1D stores its weight as [in, out] and computes x @ W + b, our
kernels' layout, so no matrix is transposed except an untied head (an
nn.Linear, [out, in]). The attention-mask buffers (h.{i}.attn.bias,
h.{i}.attn.masked_bias) are ignored, and so is lm_head.weight of a tied model
once checked equal to wte.weight.

Usage:
  cfg, params = gpt2.load(DIR, dtype="bfloat16")   # sampling
  model = gpt2.load_model(DIR, lora_rank=8, seed=0)  # fine-tuning
  gpt2.load_into(model, DIR)   # a model built (sharded) elsewhere
"""

import json
import os
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.importers import torch_files
from gen_jax.models import transformer

# Settings of the run, not of the checkpoint, that `read_config` accepts.
OVERRIDABLE = ("dtype", "dropout", "remat", "lora_rank", "lora_alpha",
               "attention_impl")
# Both name the tanh approximation of GELU, the one `transformer` computes.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")

_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")
_LAYER_NAMES = {"ln1": "ln_1", "ln2": "ln_2", "qkv": "attn.c_attn",
                "attn_out": "attn.c_proj", "fc": "mlp.c_fc",
                "mlp_out": "mlp.c_proj"}
_LEAF_NAMES = {"scale": "weight", "kernel": "weight", "bias": "bias"}

# safetensors dtype -> the little-endian numpy dtype of its bytes.
_SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


# --- config -----------------------------------------------------------------


def read_config(path: str, **overrides: Any) -> transformer.TransformerConfig:
  """The `TransformerConfig` of the GPT-2 checkpoint in `path`.

  Args:
    path: a directory holding a GPT-2 `config.json`.
    **overrides: the run's own settings, among `OVERRIDABLE` (dtype, dropout,
      remat, lora_rank, lora_alpha, attention_impl); the architecture comes
      from the checkpoint.

  Returns:
    The config: learned positions, tied embeddings (unless the checkpoint
    says otherwise), biases, GPT-2's LayerNorm epsilon.

  Raises:
    UserError: no readable config.json, not a GPT-2, an architecture variant
      `transformer` does not compute, or an override outside `OVERRIDABLE`.
  """
  unknown = sorted(set(overrides) - set(OVERRIDABLE))
  if unknown:
    raise UserError(f"cannot override {unknown} of a GPT-2 checkpoint: they "
                    f"come from its config.json (overridable: {OVERRIDABLE})")
  _check_dir(path)
  file = os.path.join(path, "config.json")
  try:
    with open(file) as f:
      hf = json.load(f)
  except FileNotFoundError:
    raise UserError(f"{path} has no config.json (not a Hugging Face "
                    "checkpoint directory?)") from None
  except (OSError, ValueError) as e:
    raise UserError(f"cannot read {file}: {e}") from None
  if not isinstance(hf, dict):
    raise UserError(f"{file} does not hold a JSON object")
  if hf.get("model_type") != "gpt2":
    raise UserError(f"{file} has model_type={hf.get('model_type')!r}; only "
                    "'gpt2' checkpoints can be imported")
  act = hf.get("activation_function", "gelu_new")
  if act not in SUPPORTED_ACTIVATIONS:
    raise UserError(f"{file} has activation_function={act!r}; the "
                    f"Transformer computes only the tanh GELU "
                    f"({' / '.join(SUPPORTED_ACTIVATIONS)})")
  # Variants that change the math of attention.
  for key, want in (("scale_attn_weights", True),
                    ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False)):
    if hf.get(key, want) != want:
      raise UserError(f"{file} has {key}={hf[key]}; only {key}={want} is "
                      "supported")
  try:
    width, heads = int(hf["n_embd"]), int(hf["n_head"])
    cfg = transformer.TransformerConfig(
        vocab_size=int(hf["vocab_size"]),
        context_length=int(hf.get("n_positions") or hf["n_ctx"]),
        num_layers=int(hf["n_layer"]),
        num_heads=heads,
        width=width,
        mlp_width=int(hf.get("n_inner") or 0),
        positions="learned",
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        use_bias=True,
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        **overrides)
  except KeyError as e:
    raise UserError(f"{file} lacks the key {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise UserError(f"{file} has a malformed value: {e}") from None
  if width % heads:
    raise UserError(f"{file} has n_embd={width} not divisible by "
                    f"n_head={heads}")
  return cfg


def _check_dir(path: str) -> None:
  if not os.path.isdir(path):
    raise UserError(f"GPT-2 checkpoint directory {path} does not exist")


# --- weights ----------------------------------------------------------------


def read_weights(path: str) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint in `path`, by its Hugging Face name.

  Looks for the files of `WEIGHT_FILES` in that order and reads the first
  present. Floating-point tensors come back as float32 (float16 and bfloat16
  widened exactly), others in their own dtype.

  Raises:
    UserError: the directory or the weight files are missing or unreadable.
  """
  _check_dir(path)
  for name in WEIGHT_FILES:
    file = os.path.join(path, name)
    if os.path.isfile(file):
      break
  else:
    raise UserError(f"no weights in {path}: looked for "
                    f"{', '.join(WEIGHT_FILES)}")
  if name.endswith(".index.json"):
    shards = _shard_files(file)
    read = (_read_safetensors if name.startswith("model.safetensors")
            else _read_torch)
    weights = {}
    for shard in shards:
      weights.update(read(os.path.join(path, shard)))
    return weights
  if name.endswith(".safetensors"):
    return _read_safetensors(file)
  return _read_torch(file)


def _shard_files(index_file: str) -> list[str]:
  try:
    with open(index_file) as f:
      weight_map = json.load(f)["weight_map"]
    return sorted(set(weight_map.values()))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise UserError(f"cannot read the shard index {index_file}: {e}") from None


def _as_float32(x: np.ndarray) -> np.ndarray:
  # ml_dtypes.bfloat16 (from .bin files) is no np.floating; its cast is exact.
  if np.issubdtype(x.dtype, np.floating) or x.dtype.name == "bfloat16":
    return x.astype(np.float32)
  return x


def _read_torch(file: str) -> dict[str, np.ndarray]:
  try:
    state = torch_files.load_state_dict(file)
  except (OSError, torch_files.TorchFileError) as e:
    raise UserError(f"cannot read {file}: {e}") from None
  return {k: _as_float32(v) for k, v in state.items()}


def _read_safetensors(file: str) -> dict[str, np.ndarray]:
  """Parses a .safetensors file: an 8-byte little-endian header size, a JSON
  header {name: {dtype, shape, data_offsets}}, then the raw little-endian
  data, the offsets counted from its start."""
  try:
    size = os.path.getsize(file)
    with open(file, "rb") as f:
      header_size = int.from_bytes(f.read(8), "little")
      if header_size > size - 8:
        raise ValueError(f"header of {header_size} bytes in a file of {size}")
      header = json.loads(f.read(header_size))
      if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
      start = 8 + header_size
      weights = {}
      for name, info in header.items():
        if name == "__metadata__":
          continue
        weights[name] = _read_tensor(f, info, start, size)
  except OSError as e:
    raise UserError(f"cannot read {file}: {e}") from None
  except (ValueError, KeyError, TypeError) as e:
    raise UserError(f"{file} is not a valid safetensors file: {e}") from None
  return weights


def _read_tensor(f, info: dict[str, Any], start: int, size: int
                 ) -> np.ndarray:
  kind = info["dtype"]
  if kind not in _SAFETENSORS_DTYPES:
    raise ValueError(f"unsupported dtype {kind}")
  dtype = _SAFETENSORS_DTYPES[kind]
  shape = tuple(int(n) for n in info["shape"])
  begin, end = (int(o) for o in info["data_offsets"])
  count = int(np.prod(shape, dtype=np.int64))
  if end - begin != count * dtype.itemsize or begin < 0 or start + end > size:
    raise ValueError(f"data_offsets {begin}, {end} do not fit a {kind} "
                     f"tensor of shape {list(shape)} in the file")
  f.seek(start + begin)
  raw = np.fromfile(f, dtype, count).reshape(shape)
  if kind == "BF16":  # the upper 16 bits of a float32
    return (raw.astype(np.uint32) << 16).view(np.float32)
  return _as_float32(raw.astype(dtype.newbyteorder("=")))


# --- mapping ----------------------------------------------------------------


def _hf_name(path: tuple[Any, ...]) -> str | None:
  """The Hugging Face name (without 'transformer.') of a parameter of ours;
  None for the adapters, which the checkpoint does not hold."""
  if path[-1] in ("lora_a", "lora_b"):
    return None
  if path == ("embed",):
    return "wte.weight"
  if path == ("pos_embed",):
    return "wpe.weight"
  if path == ("head", "kernel"):
    return "lm_head.weight"
  if path[0] == "ln_f":
    return f"ln_f.{_LEAF_NAMES[path[1]]}"
  _, i, layer, leaf = path  # ('blocks', i, layer, leaf)
  return f"h.{i}.{_LAYER_NAMES[layer]}.{_LEAF_NAMES[leaf]}"


def _strip(name: str) -> str:
  return name[len("transformer."):] if name.startswith("transformer.") else name


def _list(names: list[str], limit: int = 8) -> str:
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def _match(targets: dict[tuple[Any, ...], tuple[int, ...]],
           weights: dict[str, np.ndarray], cfg: transformer.TransformerConfig,
           path: str) -> dict[tuple[Any, ...], np.ndarray]:
  """Float32 values for every target (our path -> shape), from `weights`.

  Raises:
    UserError: listing the parameters the checkpoint lacks, the tensors
      nothing uses, and the shape mismatches.
  """
  by_name = {}
  for name, value in weights.items():
    short = _strip(name)
    if short in by_name:
      raise UserError(f"{path} holds {short} twice (with and without the "
                      "'transformer.' prefix)")
    by_name[short] = value
  used, missing, mismatched, values = set(), [], [], {}
  for target, shape in targets.items():
    name = _hf_name(target)
    if name is None:
      continue
    if name not in by_name:
      missing.append(name)
      continue
    used.add(name)
    value = by_name[name]
    if target == ("head", "kernel"):
      value = value.T  # nn.Linear's [out, in]
    if value.shape != shape:
      mismatched.append(f"{name} {list(value.shape)} (expected {list(shape)})")
      continue
    values[target] = np.asarray(value, np.float32)
  if cfg.tie_embeddings and "lm_head.weight" in by_name:
    used.add("lm_head.weight")
    head, wte = by_name["lm_head.weight"], by_name.get("wte.weight")
    if wte is not None and not np.array_equal(head, wte):
      raise UserError(f"{path}: config.json ties the embeddings, but "
                      "lm_head.weight differs from wte.weight")
  unexpected = sorted(n for n in by_name if n not in used
                      and not n.endswith(_IGNORED_SUFFIXES))
  problems = []
  if missing:
    problems.append(f"missing {_list(missing)}")
  if unexpected:
    problems.append(f"unexpected {_list(unexpected)}")
  if mismatched:
    problems.append(f"shape mismatches {_list(mismatched)}")
  if problems:
    raise UserError(f"{path} does not match a GPT-2 with {cfg.num_layers} "
                    f"layers, width {cfg.width}, vocab {cfg.vocab_size}: "
                    + "; ".join(problems))
  return values


def _targets(state: nnx.State) -> dict[tuple[Any, ...], tuple[int, ...]]:
  return {path: tuple(v.get_value().shape)
          for path, v in nnx.to_flat_state(state)}


# --- entry points -----------------------------------------------------------


def load(path: str, *, seed: int = 0, **overrides: Any
         ) -> tuple[transformer.TransformerConfig, nnx.State]:
  """The config and parameters of the GPT-2 checkpoint in `path`.

  Args:
    path: the checkpoint directory.
    seed: initializes the LoRA adapters' A matrices when lora_rank > 0
      (B starts at zero, so the model computes what the checkpoint does);
      unused otherwise.
    **overrides: see `read_config`.

  Returns:
    (cfg, params): params has the structure of
    `nnx.split(Transformer(cfg, rngs=...), nnx.Param, ...)[1]`, float32
    arrays on the default device; `load_model` merges them into a model.

  Raises:
    UserError: see `read_config`, `read_weights`; also when the checkpoint's
      tensors do not match the parameters one to one.
  """
  cfg = read_config(path, **overrides)
  weights = read_weights(path)
  abstract = nnx.eval_shape(
      lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(seed)))
  _, params, _ = nnx.split(abstract, nnx.Param, ...)
  values = {k: jnp.asarray(v)
            for k, v in _match(_targets(params), weights, cfg, path).items()}
  del weights
  if cfg.lora_rank > 0:
    # The model's own initialization of the adapters; the compiler drops the
    # other parameters' random draws.
    fresh = jax.jit(lambda: nnx.state(
        transformer.Transformer(cfg, rngs=nnx.Rngs(seed)), nnx.LoRAParam))()
    values.update((p, v.get_value()) for p, v in nnx.to_flat_state(fresh))
  flat = [(p, v.replace(values[p])) for p, v in nnx.to_flat_state(params)]
  return cfg, nnx.from_flat_state(flat)


def load_model(path: str, *, seed: int = 0, **overrides: Any
               ) -> transformer.Transformer:
  """A `Transformer` holding the GPT-2 checkpoint in `path` (see `load`)."""
  cfg, params = load(path, seed=seed, **overrides)
  graphdef, _, rest = nnx.split(nnx.eval_shape(
      lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(seed))),
                                nnx.Param, ...)
  return nnx.merge(graphdef, params, rest)


# (our field, its GPT-2 name, how to read it off a config)
_CHECKED_FIELDS = (
    ("vocab_size", "vocab_size", lambda c: c.vocab_size),
    ("width", "n_embd", lambda c: c.width),
    ("num_layers", "n_layer", lambda c: c.num_layers),
    ("num_heads", "n_head", lambda c: c.num_heads),
    ("context_length", "n_positions", lambda c: c.context_length),
    ("mlp_width", "n_inner", lambda c: c.hidden),
    ("positions", "positions", lambda c: c.positions),
    ("tie_embeddings", "tie_word_embeddings", lambda c: c.tie_embeddings),
    ("use_bias", "bias", lambda c: c.use_bias),
    ("layer_norm_eps", "layer_norm_epsilon", lambda c: c.layer_norm_eps),
)


def load_into(model: transformer.Transformer, path: str) -> None:
  """Copies the GPT-2 checkpoint in `path` into `model`, in place.

  Every parameter but the LoRA adapters is overwritten, each keeping its
  sharding (a model on the host, of numpy arrays, gets numpy arrays); the
  adapters keep their values (fresh ones: B = 0, so the model then computes
  what the checkpoint does).

  Raises:
    UserError: the model's architecture differs from the checkpoint's (one
      line naming the first differing setting), or see `load`.
  """
  ckpt = read_config(path)
  for field, hf_key, get in _CHECKED_FIELDS:
    if get(ckpt) != get(model.cfg):
      raise UserError(
          f"--config.init_from={path} holds a GPT-2 with {hf_key}="
          f"{get(ckpt)} but --config.model.{field}={getattr(model.cfg, field)}")
  params = nnx.state(model, nnx.Param)
  values = _match(_targets(params), read_weights(path), model.cfg, path)
  flat = []
  for p, v in nnx.to_flat_state(params):
    if p in values:
      value, old = values[p], v.get_value()
      if isinstance(old, jax.Array):
        # Each device (of every process) takes its slice of the host copy.
        value = jax.make_array_from_callback(
            value.shape, old.sharding, lambda index, x=value: x[index])
      flat.append((p, v.replace(value)))
  nnx.update(model, nnx.from_flat_state(flat))
