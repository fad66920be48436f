r"""Byte-level Transformer on Python source code (the embedded default).

A 4-layer GPT (width 128, 4 heads, context 128 bytes, learned positions,
tied embeddings: 0.84M parameters, sized to train on 2 CPU cores in about
20 minutes) on the bytes of the running Python's standard library (its own
.py files, split into train/eval by file, deterministically): real data every
Python install has. Reports held-out bits per byte and perplexity; samples
are written to samples/step_N.txt.

Arguments (combine with '-'): rotary (rotary positions instead of learned),
smoke (a run of seconds).

  python -m gen_jax.main --exp=transformer_code --workdir=runs/transformer_code
  python -m gen_jax.main --exp=transformer_code --workdir=runs/transformer_code \
      --mode=sample --prompt="def fibonacci(n):" --temperature=0.8 --top_p=0.95
  python -m gen_jax.main --exp=transformer_code:smoke --workdir=/tmp/tc_smoke
"""

from gen_jax import config as config_lib

_text = config_lib.load_module("_text")
smoke = _text.smoke

VARIANTS = ("rotary",)


def get_config(variants=()):
  c = _text.add_text_defaults(config_lib.base_config())
  c.data.name = "python_stdlib"
  c.data.vocab = "byte"
  c.data.seq_len = 128
  c.data.batch_size = 32
  c.data.eval_batch_size = 64

  c.model = _text.transformer_defaults()
  c.model.context_length = 128
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.width = 128
  c.model.dropout = 0.0  # 11 MB of training text: no overfitting in this run

  c.train.num_steps = 1800
  c.train.learning_rate = 1e-3
  c.train.lr_schedule = "cosine"
  c.train.final_lr_fraction = 0.1
  c.train.warmup_steps = 100
  c.train.b2 = 0.99
  c.train.weight_decay = 0.1
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.train.sample_every = 900
  c.eval.num_examples = 2048  # held-out windows of 128 bytes per eval

  c.sample.prompts = ("def ", "class ", "import ", "")
  c.sample.max_new_tokens = 100
  c.sample.temperature = 0.8
  if "rotary" in variants:
    c.model.positions = "rotary"
  return c

