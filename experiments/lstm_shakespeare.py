r"""Character-level LSTM on tiny Shakespeare (Karpathy's char-rnn setting).

Two LSTM layers of 512 units, dropout 0.2 between them, windows of 128
characters, on the same data, char vocabulary, eval and sampler as
transformer_shakespeare. Offline, falls back (with a warning) to the Python
standard library sources.

Arguments: smoke (a run of seconds).

  python -m gen_jax.main --exp=lstm_shakespeare --workdir=runs/lstm_shakespeare
  python -m gen_jax.main --exp=lstm_shakespeare:smoke --workdir=/tmp/ls_smoke
"""

from gen_jax import config as config_lib

_text = config_lib.load_module("_text")
smoke = _text.smoke


def get_config():
  c = _text.add_text_defaults(config_lib.base_config())
  c.data.name = "tiny_shakespeare"
  c.data.vocab = "char"
  c.data.seq_len = 128
  c.data.batch_size = 64
  c.data.eval_batch_size = 64

  c.model = _text.lstm_defaults()
  c.model.embed_dim = 128
  c.model.hidden = 512
  c.model.num_layers = 2
  c.model.dropout = 0.2

  c.train.num_steps = 5000
  c.train.learning_rate = 2e-3
  c.train.lr_schedule = "cosine"
  c.train.final_lr_fraction = 0.1
  c.train.warmup_steps = 100
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.train.sample_every = 1000

  c.sample.prompts = ("\n", "ROMEO:")
  c.sample.max_new_tokens = 250
  c.sample.temperature = 0.8
  return c
