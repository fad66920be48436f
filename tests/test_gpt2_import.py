"""GPT-2 import: a small random Hugging Face GPT-2 and ours give the same
logits (full forward and KV-cache decoding), from safetensors and .bin files;
adapters and load_into, untied heads, the safetensors parser, the errors.

Only the parity test imports torch and transformers (inside it, so that
collecting this file on every test worker stays cheap); the others write
their checkpoints with numpy."""

import json
import os

from conftest import FAST_COMPILE, write_safetensors
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.errors import UserError
from gen_jax.importers import gpt2
from gen_jax.models import transformer

B, T, PREFILL = 2, 32, 20
V, D, L, N = 101, 48, 2, 4


@jax.jit(static_argnums=0, compiler_options=FAST_COMPILE)
def _forward(graphdef, params, tokens_BT):
  return nnx.merge(graphdef, params)(tokens_BT)


@jax.jit(static_argnums=0, compiler_options=FAST_COMPILE)
def _extend(graphdef, params, tokens_BT, cache):
  valid_BT = jnp.ones(tokens_BT.shape, bool)
  return nnx.merge(graphdef, params).extend(tokens_BT, valid_BT, cache)


def _graphdef(cfg):
  abstract = nnx.eval_shape(
      lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  return nnx.split(abstract, nnx.Param, ...)[0]


def test_logits_match_hugging_face(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=V, n_positions=T, n_embd=D, n_layer=L, n_head=N,
      resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0,
      eos_token_id=0)
  model = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    # Fresh LayerNorms (1, 0) and biases (0) would hide a mix-up of names;
    # larger embeddings give logits of order 10, not 0.5, so the tolerance
    # means something.
    for name, p in model.named_parameters():
      if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
        p.copy_(1 + 0.3 * torch.randn_like(p))
      elif name.endswith(".bias"):
        p.copy_(0.1 * torch.randn_like(p))
      elif name.endswith("wte.weight"):
        p.mul_(20)
    tokens = torch.randint(0, V, (B, T), generator=(
        torch.Generator().manual_seed(1)))
    hf_logits = model(tokens).logits.numpy()  # [B, T, V]
  assert 5 < np.abs(hf_logits).max() < 100
  tokens = tokens.numpy().astype(np.int32)

  st_dir, bin_dir = str(tmp_path / "safetensors"), str(tmp_path / "bin")
  model.save_pretrained(st_dir)
  assert os.listdir(st_dir).count("model.safetensors") == 1
  # An older checkpoint's layout: torch.save's state dict (lm_head.weight
  # included, sharing wte's storage) plus the attention-mask buffers.
  config.save_pretrained(bin_dir)
  state = dict(model.state_dict())
  state["transformer.h.0.attn.bias"] = torch.tril(torch.ones(1, 1, T, T))
  state["transformer.h.1.attn.masked_bias"] = torch.tensor(-1e4)
  torch.save(state, os.path.join(bin_dir, "pytorch_model.bin"))

  for path in (st_dir, bin_dir):
    cfg, params = gpt2.load(path)
    assert (cfg.vocab_size, cfg.context_length, cfg.width, cfg.num_layers,
            cfg.num_heads, cfg.hidden) == (V, T, D, L, N, 4 * D)
    logits = np.asarray(_forward(_graphdef(cfg), params, tokens))
    assert logits.shape == (B, T, V)
    np.testing.assert_allclose(logits, hf_logits, atol=1e-4, rtol=0)

  # KV cache: a prefill of PREFILL tokens, then one token a step.
  graphdef = _graphdef(cfg)
  cache = nnx.merge(graphdef, params).init_cache(B, T)
  steps = []
  for start, stop in [(0, PREFILL)] + [(t, t + 1) for t in range(PREFILL, T)]:
    logits, cache = _extend(graphdef, params, tokens[:, start:stop], cache)
    steps.append(np.asarray(logits))
  np.testing.assert_allclose(np.concatenate(steps, axis=1), hf_logits,
                             atol=1e-4, rtol=0)


# --- checkpoints written with numpy --------------------------------------------


def _config(**changes):
  config = {"model_type": "gpt2", "vocab_size": V, "n_positions": T,
            "n_embd": D, "n_layer": L, "n_head": N, "n_inner": None,
            "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": True}
  config.update(changes)
  return config


def _gpt2_arrays(seed=0):
  """Random float32 tensors under a GPT2LMHeadModel's names."""
  rng = np.random.default_rng(seed)
  shapes = {"wte.weight": (V, D), "wpe.weight": (T, D),
            "ln_f.weight": (D,), "ln_f.bias": (D,)}
  for i in range(L):
    for name, shape in [("ln_1.weight", (D,)), ("ln_1.bias", (D,)),
                        ("attn.c_attn.weight", (D, 3 * D)),
                        ("attn.c_attn.bias", (3 * D,)),
                        ("attn.c_proj.weight", (D, D)),
                        ("attn.c_proj.bias", (D,)),
                        ("ln_2.weight", (D,)), ("ln_2.bias", (D,)),
                        ("mlp.c_fc.weight", (D, 4 * D)),
                        ("mlp.c_fc.bias", (4 * D,)),
                        ("mlp.c_proj.weight", (4 * D, D)),
                        ("mlp.c_proj.bias", (D,))]:
      shapes[f"h.{i}.{name}"] = shape
  return {f"transformer.{k}": rng.normal(size=s).astype(np.float32)
          for k, s in shapes.items()}


def _checkpoint(path, arrays, **config_changes):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(_config(**config_changes), f)
  write_safetensors(os.path.join(path, "model.safetensors"), {
      k: ("F32", v.astype("<f4").tobytes(), v.shape)
      for k, v in arrays.items()})
  return str(path)


def test_adapters_start_fresh_and_load_into_keeps_them(tmp_path):
  arrays = _gpt2_arrays()
  path = _checkpoint(tmp_path, arrays)
  model = gpt2.load_model(path, lora_rank=2, seed=3)
  qkv = model.blocks[0].qkv
  wte = arrays["transformer.wte.weight"]
  np.testing.assert_array_equal(model.embed[...], wte)
  np.testing.assert_array_equal(model.blocks[1].fc.lora_b[...], 0.0)
  lora_a = np.asarray(qkv.lora_a[...])  # [D, 2], std 1/sqrt(D)
  assert lora_a.shape == (D, 2) and 0.5 < lora_a.std() * np.sqrt(D) < 1.5
  model.embed[...] = jnp.zeros_like(model.embed[...])
  qkv.kernel[...] = jnp.zeros_like(qkv.kernel[...])
  qkv.lora_b[...] = jnp.ones_like(qkv.lora_b[...])
  gpt2.load_into(model, path)
  np.testing.assert_array_equal(model.embed[...], wte)
  np.testing.assert_array_equal(
      qkv.kernel[...], arrays["transformer.h.0.attn.c_attn.weight"])
  np.testing.assert_array_equal(qkv.lora_a[...], lora_a)
  np.testing.assert_array_equal(qkv.lora_b[...], 1.0)
  # A model fetched to the host (numpy leaves) stays on the host.
  graphdef, state = nnx.split(model)
  host = nnx.merge(graphdef, jax.device_get(state))
  host.ln_f.scale.set_value(np.zeros(D, np.float32))
  gpt2.load_into(host, path)
  assert isinstance(host.ln_f.scale[...], np.ndarray)
  np.testing.assert_array_equal(host.ln_f.scale[...],
                                arrays["transformer.ln_f.weight"])


def test_bf16_and_f16_safetensors_read_exactly(tmp_path):
  x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
  bits = x.view(np.uint32) >> 16  # bfloat16: the upper half of a float32
  write_safetensors(tmp_path / "model.safetensors", {
      "a": ("BF16", bits.astype("<u2").tobytes(), x.shape),
      "b": ("F16", x.astype("<f2").tobytes(), x.shape)})
  weights = gpt2.read_weights(str(tmp_path))
  assert weights["a"].dtype == np.float32 and weights["a"].shape == (3, 5)
  np.testing.assert_array_equal(weights["a"],
                                (bits << 16).astype(np.uint32).view(np.float32))
  np.testing.assert_array_equal(weights["b"], x.astype(np.float16))


def test_unsupported_activation(tmp_path):
  path = _checkpoint(tmp_path, _gpt2_arrays(), activation_function="relu")
  with pytest.raises(UserError, match="activation_function='relu'"):
    gpt2.read_config(path)


def test_missing_weights_and_directory(tmp_path):
  with open(tmp_path / "config.json", "w") as f:
    json.dump(_config(), f)
  with pytest.raises(UserError, match="model.safetensors.*pytorch_model.bin"):
    gpt2.load(str(tmp_path))
  with pytest.raises(UserError, match="does not exist"):
    gpt2.load(str(tmp_path / "nowhere"))


def test_missing_and_unexpected_tensors(tmp_path):
  arrays = _gpt2_arrays()
  del arrays["transformer.h.1.mlp.c_fc.bias"]
  arrays["transformer.h.2.ln_1.weight"] = np.ones(D, np.float32)
  arrays["transformer.wpe.weight"] = np.zeros((T + 1, D), np.float32)
  with pytest.raises(UserError) as e:
    gpt2.load(_checkpoint(tmp_path, arrays))
  msg = str(e.value)
  assert "missing h.1.mlp.c_fc.bias" in msg
  assert "unexpected h.2.ln_1.weight" in msg
  assert "wpe.weight [33, 48] (expected [32, 48])" in msg


def test_untied_head(tmp_path):
  arrays = _gpt2_arrays()
  arrays["lm_head.weight"] = arrays["transformer.wte.weight"] + 1  # [V, D]
  cfg, params = gpt2.load(_checkpoint(
      tmp_path / "untied", arrays, tie_word_embeddings=False))
  assert not cfg.tie_embeddings
  np.testing.assert_array_equal(params["head"]["kernel"].get_value(),
                                arrays["lm_head.weight"].T)
  with pytest.raises(UserError, match="lm_head.weight differs"):
    gpt2.load(_checkpoint(tmp_path / "tied", arrays))


def test_load_into_rejects_other_architecture(tmp_path):
  path = _checkpoint(tmp_path, _gpt2_arrays())
  cfg = transformer.TransformerConfig(vocab_size=V, context_length=T,
                                      num_layers=1, num_heads=N, width=D)
  model = nnx.eval_shape(
      lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  with pytest.raises(UserError, match=r"n_layer=2 but "
                     r"--config.model.num_layers=1$"):
    gpt2.load_into(model, path)
