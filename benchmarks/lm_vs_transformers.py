r"""Our Transformer against Hugging Face's GPT2LMHeadModel: train tokens/s,
KV-cache decode tokens/s and, on a GPU, model FLOPs utilization.

  python benchmarks/lm_vs_transformers.py            # CPU, a small GPT-2 shape
  python benchmarks/lm_vs_transformers.py --steps=3 --new_tokens=10 \
      --layers=2 --width=64                          # a smoke run
  python benchmarks/lm_vs_transformers.py --preset=gpt2 --count_only
  python benchmarks/lm_vs_transformers.py --preset=gpt2 --dtype=bfloat16 \
      --batch=16 --steps=20                          # GPU: MFU of GPT-2 124M

Both networks are built from the same flags (--vocab, --context, --width,
--layers, --heads; --preset=gpt2 sets GPT-2 small: 50257, 1024, 768, 12, 12,
and flags given on the command line override it): ours is
gen_jax.models.transformer.Transformer (learned positions, tied embeddings,
biases, tanh GELU, dropout 0); the peer is transformers.GPT2LMHeadModel with
every dropout at 0, eager PyTorch (no torch.compile), its default attention
(sdpa). The script asserts that the two parameter counts are equal. Unless
--nosame_weights, the peer's initial weights are copied into ours
(save_pretrained, then our GPT-2 importer), so both start from the same
function: the first-step losses then agree, and so do the greedy tokens.

Training: one batch of random tokens [B, T+1] lives on the device; both
networks read the first T tokens of each row and predict the last T (ours:
inputs [:, :-1], targets [:, 1:]; the peer: model(inputs, labels=targets,
shift_labels=targets), its loss with the shift already done). So both
process and predict exactly B * T tokens per step, and tokens/s counts these.
A step is the mean next-token cross entropy, its gradient and an AdamW
update with the same hyper-parameters (ours: optax.adamw inside one jax.jit
with the parameters and the optimizer state donated; the peer:
torch.optim.AdamW with its default implementation). After --warmup untimed
steps, each of --steps steps is timed alone up to its loss being on the host
(block_until_ready / loss.item()); the median is reported.

Decoding: --decode_batch prompts of --prompt_len random tokens, --new_tokens
greedy tokens each with the KV cache (ours: gen_jax.models.decoding.generate
compiled once, prefill plus one compiled loop; the peer:
model.generate(do_sample=False, use_cache=True) with no end-of-text token, so
every row runs to the end). Prompt plus new tokens must fit in --context.
Decode tokens/s = new tokens x batch / seconds (median of --decode_runs calls
after one untimed call). Ours runs one forward pass per new token; the
peer's last token needs none, so it runs one pass fewer.

With --dtype=bfloat16 ours computes in bf16 (float32 parameters, float32
logits) and the peer runs under torch.autocast(bfloat16): the same mixed
precision. Meant for a GPU.

MFU (GPU backend only; on a CPU there is no meaningful peak): FLOPs per
token = 6 N + 12 L D T (PaLM, appendix B: forward plus backward), N = every
parameter except the learned position embeddings (the tied token embedding
counts once: it is the output projection's matrix), L layers, D width, T
context. MFU = tokens/s x FLOPs per token / (--peak_tflops x 1e12); the
default 989 is an H100's dense bf16 peak. The FLOPs per token and the
achieved FLOP/s are printed on every backend.

Memory: the peak resident set of each side (benchmarks/memory.py: the
kernel's high-water mark, reset before each side, so the peer's peak is its
own even though it runs second in the same process), and on a GPU the peak
device memory each framework reports.

The machine's ceiling: an f32 2048^3 matmul timed with XLA (and torch), and
each train step's achieved FLOP/s as a fraction of its own framework's
matmul rate.

Reading the output: one line per network with its parameter count, train
tokens/s (and, on a GPU, MFU), decode tokens/s; then the ratios ours / peer
(> 1: ours is faster). Our compile times are reported apart. Threads: torch
uses --threads (default os.cpu_count()); XLA's CPU client runs its own
thread pool over the cores this process may use; the line 'threads' says
both. OMP_WAIT_POLICY is set to PASSIVE unless the environment sets it
(spin-waiting OpenMP threads slow torch badly on cores shared with other
work; ACTIVE measures torch's default on a dedicated machine). Without
torch or transformers (a GPU machine, say) the peer is skipped with a line
saying so and ours is still measured.
"""

import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

from absl import app
from absl import flags
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import memory
from gen_jax import logging as log_lib
from gen_jax.models import decoding
from gen_jax.importers import gpt2
from gen_jax.models import transformer

_VOCAB = flags.DEFINE_integer("vocab", 256, "Vocabulary size.")
_CONTEXT = flags.DEFINE_integer("context", 128, "Tokens per training row "
                                "(T) and the models' context length.")
_WIDTH = flags.DEFINE_integer("width", 128, "Model width.")
_LAYERS = flags.DEFINE_integer("layers", 4, "Transformer blocks.")
_HEADS = flags.DEFINE_integer("heads", 4, "Attention heads.")
_PRESET = flags.DEFINE_enum("preset", "", ["", "gpt2"],
                            "gpt2: GPT-2 small (124M); flags given on the "
                            "command line override it.")
_BATCH = flags.DEFINE_integer("batch", 32, "Training rows per step.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed train steps (median).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compiling "
                                "(at least 1).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype of both (bfloat16: for a GPU).")
_LR = flags.DEFINE_float("learning_rate", 3e-4, "AdamW learning rate.")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", 0.01,
                                   "AdamW weight decay (all parameters).")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 8, "Prompts decoded "
                                     "together.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 16, "Tokens per prompt.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 100, "Tokens generated per "
                                   "prompt (0: skip decoding).")
_DECODE_RUNS = flags.DEFINE_integer("decode_runs", 3, "Timed generate calls "
                                    "(median).")
_PEAK = flags.DEFINE_float("peak_tflops", 989.0, "Peak TFLOP/s of the "
                           "device for MFU (default: H100 dense bf16).")
_PEER = flags.DEFINE_bool("peer", True, "Also measure GPT2LMHeadModel.")
_SAME_WEIGHTS = flags.DEFINE_bool("same_weights", True, "Start ours from "
                                  "the peer's initial weights.")
_COUNT_ONLY = flags.DEFINE_bool("count_only", False, "Build both models, "
                                "check the parameter counts and stop.")
_THREADS = flags.DEFINE_integer("threads", 0, "torch threads; 0: "
                                "os.cpu_count().")
_OUT = flags.DEFINE_string("out", "", "Optional path of a JSON result file.")

# Read when torch loads OpenMP (torch is imported lazily, after this).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Read when the GPU client starts: leave GPU memory to torch as well.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

GPT2_SMALL = {"vocab": 50257, "context": 1024, "width": 768, "layers": 12,
              "heads": 12}


def model_config() -> transformer.TransformerConfig:
  """The shared architecture: the flags, over --preset where given."""
  shape = {name: flags.FLAGS[name].value for name in GPT2_SMALL}
  if _PRESET.value == "gpt2":
    for name, value in GPT2_SMALL.items():
      if not flags.FLAGS[name].present:
        shape[name] = value
  if shape["width"] % shape["heads"]:
    raise app.UsageError(f"--width={shape['width']} is not divisible by "
                         f"--heads={shape['heads']}.")
  return transformer.TransformerConfig(
      vocab_size=shape["vocab"], context_length=shape["context"],
      num_layers=shape["layers"], num_heads=shape["heads"],
      width=shape["width"], dropout=0.0, positions="learned",
      tie_embeddings=True, use_bias=True, dtype=_DTYPE.value)


def flops_per_token(cfg: transformer.TransformerConfig,
                    num_params: int) -> int:
  """6 N + 12 L D T, N = parameters without the position embeddings."""
  n = num_params - cfg.context_length * cfg.width
  return 6 * n + 12 * cfg.num_layers * cfg.width * cfg.context_length


def median_seconds(fn, runs: int) -> float:
  """The median wall time of `runs` calls of fn() (each synchronizes)."""
  times = []
  for _ in range(runs):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def gpu_on_jax() -> bool:
  return jax.default_backend() == "gpu"


def matmul_rates(with_torch: bool, n: int = 2048) -> dict[str, float]:
  """GFLOP/s of an n^3 float32 matmul, XLA's (and torch's): the ceiling a
  matmul-bound step can reach on this machine."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  rates = {"xla": 2 * n**3 / median_seconds(
      lambda: f(a, a).block_until_ready(), 5) / 1e9}
  if with_torch:
    import torch  # pylint: disable=g-import-not-at-top
    if not gpu_on_jax():  # the torch model on CPU: its matmul there
      t = torch.randn(n, n)
      t @ t
      rates["torch"] = 2 * n**3 / median_seconds(lambda: t @ t, 5) / 1e9
  return rates


# --- ours ------------------------------------------------------------------


def bench_ours(model: transformer.Transformer, tokens_BT1: np.ndarray,
               prompts_BP: np.ndarray) -> dict:
  """Decode, then train, our Transformer."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  result = {}
  n = _NEW_TOKENS.value
  if n:
    def decode(params, prompt_BP, valid_BP, key):
      net = nnx.merge(graphdef, params, rest)
      return decoding.generate(net, prompt_BP, valid_BP, key, n,
                               temperature=0.0)

    prompt = jnp.asarray(prompts_BP)
    valid = jnp.ones(prompt.shape, bool)
    key = jax.random.key(0)
    t0 = time.perf_counter()
    decode_c = jax.jit(decode).lower(params, prompt, valid, key).compile()
    result["compile_decode_s"] = time.perf_counter() - t0
    new_BN = np.asarray(decode_c(params, prompt, valid, key))
    seconds = median_seconds(lambda: decode_c(
        params, prompt, valid, key).block_until_ready(), _DECODE_RUNS.value)
    result["decode_tokens_per_s"] = n * prompt.shape[0] / seconds
    result["new_tokens"] = new_BN

  tx = optax.adamw(_LR.value, b1=0.9, b2=0.999, eps=1e-8,
                   weight_decay=_WEIGHT_DECAY.value)
  opt_state = tx.init(params)

  def train_step(params, opt_state, tokens_BT1):
    def loss_fn(p):
      logits_BTV = nnx.merge(graphdef, p, rest)(tokens_BT1[:, :-1])
      return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
          logits_BTV, tokens_BT1[:, 1:]))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  tokens = jnp.asarray(tokens_BT1)
  t0 = time.perf_counter()
  train_c = jax.jit(train_step, donate_argnums=(0, 1)).lower(
      params, opt_state, tokens).compile()
  result["compile_train_s"] = time.perf_counter() - t0
  state = {"params": params, "opt_state": opt_state, "losses": []}

  def one_step():
    state["params"], state["opt_state"], loss = train_c(
        state["params"], state["opt_state"], tokens)
    state["losses"].append(float(loss))  # waits for the step

  for _ in range(max(_WARMUP.value, 1)):  # the first loss: a check
    one_step()
  seconds = median_seconds(one_step, _STEPS.value)
  result["first_loss"] = state["losses"][0]
  result["train_tokens_per_s"] = tokens_BT1.shape[0] * (
      tokens_BT1.shape[1] - 1) / seconds
  return result


# --- the peer: transformers' GPT2LMHeadModel -------------------------------


def peer_device() -> str | None:
  """Where the peer runs ('cpu', 'cuda'), or None (with the reason printed)
  when it cannot run beside ours."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    print(f"peer: skipped, torch / transformers cannot be imported ({e}); "
          "measuring ours alone.")
    return None
  if gpu_on_jax():
    if not torch.cuda.is_available():
      print("peer: skipped, ours runs on a GPU but this torch has no CUDA "
            "device; measuring ours alone.")
      return None
    return "cuda"
  return "cpu"


def build_peer(cfg: transformer.TransformerConfig, device: str, threads: int):
  """GPT2LMHeadModel of the same shape, dropout 0, no end-of-text token."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=cfg.vocab_size, n_positions=cfg.context_length,
      n_embd=cfg.width, n_layer=cfg.num_layers, n_head=cfg.num_heads,
      activation_function="gelu_new", layer_norm_epsilon=cfg.layer_norm_eps,
      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
      bos_token_id=None, eos_token_id=None, pad_token_id=0)
  return transformers.GPT2LMHeadModel(config).to(device)


def bench_peer(model, device: str, tokens_BT1: np.ndarray,
               prompts_BP: np.ndarray) -> dict:
  """Decode, then train, the peer (eager torch)."""
  import torch  # pylint: disable=g-import-not-at-top

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  def autocast():
    return torch.autocast(device, dtype=torch.bfloat16,
                          enabled=_DTYPE.value == "bfloat16")

  result = {}
  n = _NEW_TOKENS.value
  if n:
    model.eval()
    prompt = torch.from_numpy(prompts_BP.astype(np.int64)).to(device)
    mask = torch.ones_like(prompt)

    def generate():
      with torch.no_grad(), autocast():
        out = model.generate(prompt, attention_mask=mask, max_new_tokens=n,
                             do_sample=False, use_cache=True)
      sync()
      return out

    out = generate()
    if out.shape[1] != prompt.shape[1] + n:
      raise RuntimeError(f"the peer generated {out.shape[1] - prompt.shape[1]}"
                         f" tokens, not {n}.")
    result["new_tokens"] = out[:, prompt.shape[1]:].cpu().numpy()
    seconds = median_seconds(generate, _DECODE_RUNS.value)
    result["decode_tokens_per_s"] = n * prompt.shape[0] / seconds

  model.train()
  opt = torch.optim.AdamW(model.parameters(), lr=_LR.value,
                          betas=(0.9, 0.999), eps=1e-8,
                          weight_decay=_WEIGHT_DECAY.value)
  tokens = torch.from_numpy(tokens_BT1.astype(np.int64)).to(device)
  inputs_BT = tokens[:, :-1].contiguous()
  targets_BT = tokens[:, 1:].contiguous()
  losses = []

  def one_step():
    with autocast():
      loss = model(inputs_BT, labels=targets_BT, shift_labels=targets_BT).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())  # waits for the step

  for _ in range(max(_WARMUP.value, 1)):  # the first loss: a check
    one_step()
  seconds = median_seconds(one_step, _STEPS.value)
  result["first_loss"] = losses[0]
  result["train_tokens_per_s"] = tokens_BT1.shape[0] * (
      tokens_BT1.shape[1] - 1) / seconds
  result["torch"] = torch.__version__
  return result


def copy_peer_weights(peer_model, model: transformer.Transformer) -> None:
  """The peer's current weights into ours, through our GPT-2 importer."""
  with tempfile.TemporaryDirectory(prefix="gpt2_peer_") as path:
    peer_model.save_pretrained(path)
    gpt2.load_into(model, path)


# --- the report ------------------------------------------------------------


def main(argv):
  del argv
  log_lib.quiet_library_logs()
  cfg = model_config()
  n_new, p = _NEW_TOKENS.value, _PROMPT_LEN.value
  if n_new and p + n_new > cfg.context_length:
    raise app.UsageError(f"--prompt_len={p} plus --new_tokens={n_new} "
                         f"exceed the context {cfg.context_length}.")
  if n_new and p < 1:
    raise app.UsageError("--prompt_len must be >= 1.")
  threads = _THREADS.value or os.cpu_count()
  device = jax.devices()[0]
  device_name = str(getattr(device, "device_kind", device.platform))

  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  num_params = sum(int(np.prod(x.shape)) for x in
                   jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert num_params == cfg.num_params(), (num_params, cfg.num_params())
  fpt = flops_per_token(cfg, num_params)
  print(f"model: vocab {cfg.vocab_size}, context {cfg.context_length}, "
        f"width {cfg.width}, {cfg.num_layers} layers, {cfg.num_heads} heads, "
        f"{cfg.dtype}")
  print(f"ours: {num_params:,} parameters")

  peer_dev = peer_device() if _PEER.value else None
  peer_model = None
  if peer_dev:
    peer_model = build_peer(cfg, peer_dev, threads)
    peer_params = sum(x.numel() for x in peer_model.parameters())
    print(f"peer: {peer_params:,} parameters (GPT2LMHeadModel on {peer_dev})")
    assert peer_params == num_params, (
        f"parameter counts differ: ours {num_params:,}, peer "
        f"{peer_params:,}")
  print(f"FLOPs per token: 6 N + 12 L D T = {fpt:,} (N = "
        f"{num_params - cfg.context_length * cfg.width:,}: all parameters "
        "but the position embeddings)")
  if _COUNT_ONLY.value:
    return
  if peer_model is not None and _SAME_WEIGHTS.value:
    copy_peer_weights(peer_model, model)

  rng = np.random.default_rng(0)
  tokens_BT1 = rng.integers(0, cfg.vocab_size,
                            (_BATCH.value, cfg.context_length + 1), np.int32)
  prompts_BP = rng.integers(0, cfg.vocab_size, (_DECODE_BATCH.value, p),
                            np.int32)
  tokens_per_step = _BATCH.value * cfg.context_length
  print(f"train: batch {_BATCH.value} x {cfg.context_length} predicted "
        f"tokens = {tokens_per_step:,} tokens per step on both sides; median "
        f"of {_STEPS.value} steps after {_WARMUP.value} warm-up steps")
  if n_new:
    print(f"decode: {_DECODE_BATCH.value} prompts x {p} tokens, {n_new} new "
          f"tokens each, greedy, median of {_DECODE_RUNS.value} calls")
  if jax.default_backend() == "cpu":
    line = (f"threads: XLA CPU client over the {len(os.sched_getaffinity(0))}"
            " cores this process may use (XLA_FLAGS="
            f"{os.environ.get('XLA_FLAGS', '')!r})")
    if peer_model is not None:
      line += (f"; torch {threads} (OMP_WAIT_POLICY="
               f"{os.environ['OMP_WAIT_POLICY']})")
    print(line)
  print(f"backend: {jax.default_backend()} ({device_name})", flush=True)

  matmul = matmul_rates(peer_model is not None)
  print("f32 matmul 2048^3 (the machine's practical peak): " + ", ".join(
      f"{k} {v:,.1f} GFLOP/s" for k, v in matmul.items()), flush=True)

  rows = {}
  with memory.Peak() as mem:
    ours = bench_ours(model, tokens_BT1, prompts_BP)
  ours.update(mem.as_dict(), device_peak_bytes=memory.jax_device_peak())
  rows["ours"] = ours
  print(f"ours: compiled the train step in {ours['compile_train_s']:.1f}s"
        + (f", decoding in {ours['compile_decode_s']:.1f}s" if n_new else "")
        + f"; {mem.describe()}", flush=True)
  if peer_model is not None:
    with memory.Peak() as mem:
      rows["peer"] = bench_peer(peer_model, peer_dev, tokens_BT1, prompts_BP)
    rows["peer"].update(mem.as_dict(),
                        device_peak_bytes=memory.torch_device_peak())
    print(f"peer: {mem.describe()}", flush=True)

  print()
  labels = {"ours": "gen_jax Transformer", "peer": "GPT2LMHeadModel"}
  for name, row in rows.items():
    on_gpu = gpu_on_jax() if name == "ours" else peer_dev == "cuda"
    flops = row["train_tokens_per_s"] * fpt
    row["train_flops_per_s"] = flops
    line = (f"{name:<5} {labels[name]:<20} train "
            f"{row['train_tokens_per_s']:>10,.0f} tokens/s (")
    if on_gpu:
      row["mfu"] = flops / (_PEAK.value * 1e12)
      line += (f"{flops / 1e12:.1f} TFLOP/s, MFU {100 * row['mfu']:.1f}% of "
               f"{_PEAK.value:g})")
    else:
      line += f"{flops / 1e9:.1f} GFLOP/s)"
    if n_new:
      line += f"  decode {row['decode_tokens_per_s']:>9,.0f} tokens/s"
    line += f"  first loss {row['first_loss']:.5f}"
    line += f"  peak RSS {row['peak_rss_bytes'] / memory.GIB:.2f} GiB"
    if row["device_peak_bytes"]:
      line += f", device {row['device_peak_bytes'] / memory.GIB:.2f} GiB"
    print(line)
    engine = "xla" if name == "ours" else "torch"
    if not on_gpu and engine in matmul:
      print(f"      its train step runs at {flops / 1e9 / matmul[engine]:.0%} "
            f"of {'XLA' if name == 'ours' else 'torch'}'s matmul rate")
  if not gpu_on_jax():
    print(f"MFU: not meaningful on the {jax.default_backend()} backend (no "
          "fixed peak to divide by); --peak_tflops is used on a GPU.")
  if "peer" in rows:
    ours, peer = rows["ours"], rows["peer"]
    summary = {"train": ours["train_tokens_per_s"] / peer[
        "train_tokens_per_s"]}
    if n_new:
      summary["decode"] = ours["decode_tokens_per_s"] / peer[
          "decode_tokens_per_s"]
    print("ratio ours / peer: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in summary.items()))
    rows["ratio"] = summary
    if n_new and _SAME_WEIGHTS.value:
      same = float(np.mean(ours["new_tokens"] == peer["new_tokens"]))
      print(f"same weights: greedy tokens equal at {100 * same:.1f}% of "
            "positions; first losses "
            f"{ours['first_loss']:.5f} vs {peer['first_loss']:.5f}")
  elif _PEER.value:
    print("ratio ours / peer: no peer measured.")
  for row in rows.values():
    row.pop("new_tokens", None)

  if _OUT.value:
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "backend": jax.default_backend(), "device": device_name,
        "model": {"vocab": cfg.vocab_size, "context": cfg.context_length,
                  "width": cfg.width, "layers": cfg.num_layers,
                  "heads": cfg.num_heads, "dtype": cfg.dtype},
        "params": num_params, "flops_per_token": fpt,
        "batch": _BATCH.value, "steps": _STEPS.value,
        "warmup": _WARMUP.value, "decode_batch": _DECODE_BATCH.value,
        "prompt_len": p, "new_tokens": n_new,
        "peak_tflops": _PEAK.value, "torch_threads": threads,
        "matmul_gflops": matmul,
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "jax": jax.__version__, "python": platform.python_version(),
        "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
