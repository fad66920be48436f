r"""Character-level Transformer on tiny Shakespeare (nanoGPT's shakespeare_char).

The published setting: 6 layers, 6 heads, width 384, context 256, dropout
0.2, no biases, batch 64, AdamW (lr 1e-3, beta2 0.99, weight decay 0.1 on
matrices), 100 warm-up steps then cosine to 1e-4 over 5,000 steps, gradients
clipped at 1. nanoGPT reports a validation loss of 1.4697 nats per character
(its own 90/10 split of the same text; TFDS's validation split here).

Needs TFDS tiny_shakespeare; offline, the run falls back (with a warning) to
the Python standard library sources, a different corpus.

Arguments: smoke (a run of seconds).

  python -m gen_jax.main --exp=transformer_shakespeare --workdir=runs/transformer_shakespeare
  python -m gen_jax.main --exp=transformer_shakespeare --workdir=runs/transformer_shakespeare \
      --mode=sample --prompt="ROMEO:" --max_new_tokens=500
  python -m gen_jax.main --exp=transformer_shakespeare:smoke --workdir=/tmp/ts_smoke
"""

from gen_jax import config as config_lib

_text = config_lib.load_module("_text")
smoke = _text.smoke


def get_config():
  c = _text.add_text_defaults(config_lib.base_config())
  c.data.name = "tiny_shakespeare"
  c.data.vocab = "char"
  c.data.seq_len = 256
  c.data.batch_size = 64
  c.data.eval_batch_size = 64

  c.model = _text.transformer_defaults()
  c.model.context_length = 256
  c.model.num_layers = 6
  c.model.num_heads = 6
  c.model.width = 384
  c.model.dropout = 0.2
  c.model.use_bias = False

  c.train.num_steps = 5000
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
  c.train.sample_every = 1000

  c.sample.prompts = ("\n", "ROMEO:", "First Citizen:\n")
  c.sample.max_new_tokens = 250
  c.sample.temperature = 0.8
  return c
