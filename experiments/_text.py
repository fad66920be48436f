"""Config builders shared by the language-model experiments (not an experiment).

Experiment files load this with `config_lib.load_module("_text")`.
"""

import ml_collections

from gen_jax.families import autoregressive


def transformer_defaults() -> ml_collections.ConfigDict:
  """`config.model` of a Transformer, with every key the family reads."""
  m = ml_collections.ConfigDict()
  m.arch = "transformer"
  m.context_length = 256
  m.num_layers = 6
  m.num_heads = 6
  m.width = 384
  m.mlp_width = 0  # 0: 4 * width
  m.dropout = 0.0
  m.positions = "learned"  # 'learned' | 'rotary'
  m.tie_embeddings = True
  m.use_bias = True
  m.remat = False
  m.lora_rank = 0  # > 0: train only rank-r adapters (qkv, attn_out, fc, mlp_out)
  m.lora_alpha = 0.0  # adapter scale alpha / r; 0: alpha = r
  # In training: '' (by backend) | 'einsum' | 'xla' | 'cudnn'.
  m.attention_impl = ""
  return m


def lstm_defaults() -> ml_collections.ConfigDict:
  """`config.model` of an LSTM, with every key the family reads."""
  m = ml_collections.ConfigDict()
  m.arch = "lstm"
  m.embed_dim = 128
  m.hidden = 512
  m.num_layers = 2
  m.dropout = 0.0
  return m


def finetune_defaults() -> ml_collections.ConfigDict:
  """`config.model` of a Transformer whose architecture is read from
  `config.init_from`: only the training options the family takes with it."""
  d = transformer_defaults()
  m = ml_collections.ConfigDict({"arch": "transformer"})
  for key in autoregressive.PRETRAINED_OPTIONS:
    m[key] = d[key]
  return m


def add_text_defaults(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The data and sampling keys of a language-model experiment."""
  c.family = "autoregressive"
  c.init_from = ""  # a Hugging Face GPT-2 checkpoint directory
  c.data.name = "python_stdlib"  # | 'tiny_shakespeare'
  c.data.vocab = "byte"  # 'byte' | 'char' | 'gpt2' (the init_from tokenizer)
  c.data.seq_len = 256  # tokens per training window (plus one target)
  c.data.image_shape = ()
  c.data.num_classes = 0
  c.eval.num_samples = 4  # samples in samples/step_N.txt
  c.sample.prompts = ("",)  # '' starts from the tokenizer's bos token
  c.sample.max_new_tokens = 256
  c.sample.temperature = 0.8  # 0: greedy
  c.sample.top_k = 0  # 0: off
  c.sample.top_p = 1.0  # 1: off
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The ':smoke' shrink of a language-model experiment, after the loop's
  (`config.smoke`): short windows and a tiny network."""
  c.data.seq_len = 32
  c.data.batch_size = 8
  c.data.eval_batch_size = 16
  c.eval.num_examples = 32
  c.eval.num_samples = 2
  c.sample.max_new_tokens = 16
  for key, value in (("context_length", 32), ("num_layers", 2),
                     ("num_heads", 2), ("width", 32), ("hidden", 32),
                     ("embed_dim", 16)):
    if key in c.model:
      c.model[key] = value
  return c
