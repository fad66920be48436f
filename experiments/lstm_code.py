r"""Byte-level LSTM on Python source code: the Transformer's recurrent peer.

Two LSTM layers of 256 units over 128-d byte embeddings (1.0M parameters,
about the Transformer's 0.84M), on the same data,
windows, eval and sampler as transformer_code, so the two compare on equal
footing (held-out bits per byte).

Arguments: smoke (a run of seconds).

  python -m gen_jax.main --exp=lstm_code --workdir=runs/lstm_code
  python -m gen_jax.main --exp=lstm_code --workdir=runs/lstm_code --mode=sample --prompt="def "
  python -m gen_jax.main --exp=lstm_code:smoke --workdir=/tmp/lstm_smoke
"""

from gen_jax import config as config_lib

_text = config_lib.load_module("_text")
smoke = _text.smoke


def get_config():
  c = _text.add_text_defaults(config_lib.base_config())
  c.data.name = "python_stdlib"
  c.data.vocab = "byte"
  c.data.seq_len = 128
  c.data.batch_size = 32
  c.data.eval_batch_size = 64

  c.model = _text.lstm_defaults()
  c.model.embed_dim = 128
  c.model.hidden = 256
  c.model.num_layers = 2

  c.train.num_steps = 1800  # the tokens transformer_code sees (32 x 128 each)
  c.train.learning_rate = 2e-3
  c.train.lr_schedule = "cosine"
  c.train.final_lr_fraction = 0.1
  c.train.warmup_steps = 100
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.train.sample_every = 900
  c.eval.num_examples = 2048  # held-out windows of 128 bytes per eval

  c.sample.prompts = ("def ", "class ", "import ", "")
  c.sample.max_new_tokens = 100
  c.sample.temperature = 0.8
  return c
