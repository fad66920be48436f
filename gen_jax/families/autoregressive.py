"""Autoregressive sequence models: a decoder-only Transformer or an LSTM.

log p(x) = sum_t log p(x_t | x_<t) over token windows of `data.seq_len + 1`
(the first token is only context). Trained with the mean next-token cross
entropy; evaluated on non-overlapping held-out windows as nats per token
(loss), bits per token, perplexity exp(loss), and bits per byte: the total
bits divided by the UTF-8 bytes the target tokens stand for, the figure that
compares byte, character and BPE vocabularies on the same text.

Both architectures offer `__call__(tokens)` for training and
`extend(tokens, valid, cache)` for decoding, so sampling is the same code
(`gen_jax.models.decoding`): left-padded prompts of any lengths, one prefill,
then one compiled loop that draws each token (greedy at temperature 0,
otherwise temperature, top-k, top-p) and updates the fixed-size cache in
place.

Pretrained weights: `config.init_from=DIR` (a Hugging Face GPT-2 checkpoint)
replaces the fresh parameters of step 0 (`warm_start`). `model.lora_rank > 0`
trains only low-rank adapters: the train state's `params` are the adapters
alone (what the optimizer and the EMA see), the frozen weights ride in
`rest`; sampling and eval fold the adapters into the weights first.
"""

import dataclasses
import math

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gen_jax import parallel
from gen_jax.errors import UserError
from gen_jax.families import base, likelihoods, register
from gen_jax.models import attention
from gen_jax.models import decoding
from gen_jax.importers import gpt2
from gen_jax.models import lora
from gen_jax.models import lstm
from gen_jax.models import transformer

_ARCHS = {"transformer": transformer.TransformerConfig,
          "lstm": lstm.LSTMConfig}


# With init_from, the architecture comes from the checkpoint's config.json;
# config.model then holds only these training options.
PRETRAINED_OPTIONS = ("dropout", "remat", "lora_rank", "lora_alpha",
                      "attention_impl")


def _check_options(config) -> None:
  """The model options of either architecture that a network can use."""
  m = config.model
  sizes = ("width", "num_heads", "num_layers", "context_length", "embed_dim",
           "hidden")
  base.check_sizes(
      config, positive=[f"model.{k}" for k in sizes if k in m],
      nonnegative=[f"model.{k}" for k in ("mlp_width", "lora_rank") if k in m])
  if "dropout" in m:
    base.check_fraction(config, "model.dropout")
  if m.get("attention_impl", "") not in attention.IMPLEMENTATIONS:
    raise UserError(f"--config.model.attention_impl: '{m.attention_impl}' is "
                    "not one of einsum, xla, cudnn ('' chooses by backend).")


def _model_config(config, vocab_size: int):
  _check_options(config)
  m = config.model.to_dict()
  arch = m.pop("arch", None)
  init_from = config.get("init_from", "")
  if init_from:
    if arch != "transformer":
      raise UserError("--config.init_from: GPT-2 weights load into "
                      "model.arch='transformer' only.")
    extra = sorted(set(m) - set(PRETRAINED_OPTIONS))
    if extra:
      raise UserError(f"--config.model.{extra[0]}: with --config.init_from "
                      "the architecture comes from the checkpoint; valid "
                      f"model options: {', '.join(PRETRAINED_OPTIONS)}.")
    m["attention_impl"] = m.get("attention_impl") or None
    cfg = gpt2.read_config(init_from, dtype=config.train.dtype, **m)
    if cfg.vocab_size != vocab_size:
      raise UserError(f"--config.init_from={init_from}: the checkpoint's "
                      f"vocabulary has {cfg.vocab_size} tokens, the "
                      f"'{config.data.vocab}' tokenizer {vocab_size}; use "
                      "--config.data.vocab=gpt2.")
    if config.data.seq_len > cfg.context_length:
      raise UserError(f"--config.data.seq_len={config.data.seq_len} exceeds "
                      f"the checkpoint's context length {cfg.context_length}.")
    return cfg
  if arch not in _ARCHS:
    raise UserError(f"--config.model.arch: '{arch}' is not one of "
                    f"{', '.join(_ARCHS)}.")
  cls = _ARCHS[arch]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(m) - fields)
  if unknown:
    raise UserError(f"--config.model.{unknown[0]}: not an option of the "
                    f"{arch} (valid: {', '.join(sorted(fields - {'vocab_size', 'dtype'}))}).")
  if arch == "transformer":
    m["attention_impl"] = m.get("attention_impl") or None
    if m.get("positions", "learned") not in ("learned", "rotary"):
      raise UserError(f"--config.model.positions: '{m['positions']}' is not "
                      "one of learned, rotary.")
    if m["width"] % m["num_heads"]:
      raise UserError(f"--config.model.width={m['width']} must be divisible "
                      f"by --config.model.num_heads={m['num_heads']}.")
    if config.data.seq_len > m["context_length"]:
      raise UserError(f"--config.data.seq_len={config.data.seq_len} exceeds "
                      f"--config.model.context_length={m['context_length']}.")
  return cls(vocab_size=vocab_size, dtype=config.train.dtype, **m)


@register("autoregressive")
class Autoregressive(base.OneNetwork):
  """A next-token model over text: Transformer or LSTM."""

  models_text = True

  def __init__(self, config, tokenizer=None):
    if tokenizer is None:
      raise UserError(f"--config.data.name={config.data.name}: the "
                      "autoregressive family models text; its data must come "
                      "with a tokenizer (text data).")
    self.model_cfg = _model_config(config, tokenizer.vocab_size)
    self.arch = config.model.arch
    self.model_parallel = self.arch == "transformer"
    self.lora = getattr(self.model_cfg, "lora_rank", 0) > 0
    self.init_from = config.get("init_from", "")
    if self.lora and not self.init_from:
      logging.warning("model.lora_rank > 0 without init_from: training "
                      "adapters on a randomly initialized model.")
    # LoRA: the adapters are the trainable parameters, the rest is frozen.
    self.trainable = nnx.LoRAParam if self.lora else nnx.Param
    super().__init__(config, tokenizer)
    self._sample_fns = {}
    s = config.sample
    if s.max_new_tokens < 1:
      raise UserError("--config.sample.max_new_tokens: must be >= 1.")
    if not s.prompts:
      raise UserError("--config.sample.prompts: needs at least one prompt "
                      "(--prompt=TEXT; '' starts from nothing).")
    if s.temperature < 0 or not 0 < s.top_p <= 1 or s.top_k < 0:
      raise UserError("--config.sample: temperature must be >= 0, top_k >= 0 "
                      f"and 0 < top_p <= 1 (got {s.temperature}, {s.top_k}, "
                      f"{s.top_p}).")

  def build_network(self, rngs):
    if self.arch == "transformer":
      return transformer.Transformer(self.model_cfg, rngs=rngs)
    return lstm.LSTMLM(self.model_cfg, rngs=rngs)

  def inference_network(self, state):
    network = super().inference_network(state)
    return lora.merge(network) if self.lora else network

  def warm_start(self, state, batch):
    """Step 0 from `init_from`'s GPT-2 weights (adapters keep their init)."""
    del batch  # nothing is measured
    if not self.init_from:
      return None
    model = self.host_network(state)
    gpt2.load_into(model, self.init_from)
    return self.with_network(state, model)

  def partition_rules(self):
    if self.arch == "transformer":
      return transformer.partition_rules(tuple(self.config.mesh.axes))
    return ()

  # --- objective -----------------------------------------------------------

  def token_nll(self, model, tokens_BT1, rngs=None) -> jax.Array:
    """Per-token negative log-likelihood [B, T] of tokens[:, 1:] given the
    tokens before them."""
    logits = model(tokens_BT1[:, :-1], rngs=rngs)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, tokens_BT1[:, 1:])

  def loss(self, network, batch, key):
    loss = jnp.mean(self.token_nll(network, batch["tokens"],
                                   nnx.Rngs(dropout=key)))
    return loss, {"bits_per_token": loss / likelihoods.LOG2}

  # --- evaluation ----------------------------------------------------------

  def eval_step(self, state, batch, key, final=False):
    del key, final  # exact: no sampling, nothing estimated
    tokens = batch["tokens"]
    nll = self.token_nll(self.inference_network(state), tokens)  # [B, T]
    target_bytes = jnp.asarray(self.tokenizer.token_bytes)[tokens[:, 1:]]
    t = tokens.shape[1] - 1
    return {"nll": base.masked_sum(jnp.sum(nll, axis=1), batch),
            "tokens": base.masked_sum(jnp.full(nll.shape[:1], t, jnp.float32),
                                      batch),
            "bytes": base.masked_sum(jnp.sum(target_bytes, axis=1), batch),
            "count": base.count(batch)}

  def score(self, state, batch, key, final=False):
    """batch: 'tokens' [B, T + 1] (BOS, the text, padding) and 'token_mask'
    [B, T], 1 where tokens[:, 1:] is the text (causal: the padding after
    it changes nothing before it)."""
    del key, final  # exact
    nll = self.token_nll(self.inference_network(state), batch["tokens"])
    mask = batch["token_mask"].astype(jnp.float32)
    return {"nll": jnp.sum(nll * mask, axis=1), "dims": jnp.sum(mask, axis=1)}

  def score_notes(self, final=False):
    return {"nll": "exact: -log p of the tokens after BOS (nats); per dim: "
                   "per token"}

  @property
  def context_length(self) -> int:
    """Tokens the network reads at once; 0: no limit (the LSTM)."""
    return getattr(self.model_cfg, "context_length", 0)

  def summarize_eval(self, totals):
    loss = totals["nll"] / totals["tokens"]
    return {"loss": loss, "bits_per_token": loss / likelihoods.LOG2,
            "perplexity": math.exp(min(loss, 700.0)),
            "bits_per_byte": totals["nll"] / likelihoods.LOG2 / max(totals["bytes"], 1.0)}

  # --- sampling --------------------------------------------------------------

  def encode_prompts(self, prompts) -> list[list[int]]:
    """Prompt strings -> token lists ('' -> [bos]), cut on the left to leave
    room for the new tokens in the Transformer's context."""
    s = self.config.sample
    room = self.context_length
    if room and s.max_new_tokens >= room:
      raise UserError(f"--config.sample.max_new_tokens={s.max_new_tokens} "
                      f"must be below the context length {room}.")
    out = []
    for text in prompts:
      ids = [int(i) for i in self.tokenizer.encode(text)] or [
          self.tokenizer.bos_id]
      if room and len(ids) + s.max_new_tokens > room:
        ids = ids[len(ids) + s.max_new_tokens - room:]
      out.append(ids)
    return out

  def _sample_fn(self, num_rows: int, prompt_len: int, sharding):
    cache_key = (num_rows, prompt_len, sharding)
    if cache_key not in self._sample_fns:
      s = self.config.sample

      def fn(state, prompt, valid, key):
        return decoding.generate(
            self.inference_network(state), prompt, valid, key,
            s.max_new_tokens, s.temperature, s.top_k, s.top_p)
      self._sample_fns[cache_key] = jax.jit(
          fn, in_shardings=(None, sharding, sharding, None),
          out_shardings=sharding)
    return self._sample_fns[cache_key]

  def generate(self, state, key, prompts, sharding=None):
    """Token ids [len(prompts), max_new_tokens] drawn after each prompt
    (token lists of any lengths; left-padded into one batch)."""
    tokens, valid = decoding.pad_prompts(prompts)
    fn = self._sample_fn(len(prompts), tokens.shape[1], sharding)
    return fn(state, tokens, valid, key)

  def sample(self, state, key, num, labels=None, sharding=None,
             progress=None):
    """`num` continuations [num, max_new_tokens] of the configured prompts
    (cycled over the rows)."""
    del labels
    prompts = self.encode_prompts(self.config.sample.prompts)
    rows = [prompts[i % len(prompts)] for i in range(num)]
    out = self.generate(state, key, rows, sharding)
    if progress is not None:
      out.block_until_ready()
      progress(1, 1)
    return out

  def export_samples(self, samples):
    ids = np.asarray(samples)
    return {"tokens": ids.astype(np.int32),
            "text": np.array([self.tokenizer.decode(row) for row in ids])}

  def visualize(self, state, batch, key):
    del batch
    s = self.config.sample
    texts = [s.prompts[i % len(s.prompts)]
             for i in range(max(self.config.eval.num_samples,
                                len(s.prompts)))]
    rows = self.encode_prompts(texts)
    new = np.asarray(parallel.to_host(self.generate(state, key, rows)))
    parts = []
    for i, (text, ids) in enumerate(zip(texts, new)):
      parts.append(f"===== sample {i + 1} (prompt {text!r}, "
                   f"{len(ids)} new tokens) =====\n"
                   f"{text}{self.tokenizer.decode(ids)}\n")
    return {"samples": "\n".join(parts)}
