r"""Attention LSTM (Bahdanau-style), English to German, on the system's gettext catalogs.

The recurrent baseline of transformer_translate, on the same data,
vocabulary and evaluation: a 2-layer bidirectional LSTM encoder (2 x 256
units), a 2-layer LSTM decoder (512 units) with input feeding and additive
attention ('multiplicative' for Luong's), embeddings 256, dropout 0.2,
label smoothing 0.1; Adam at 1e-3 (beta2 0.98) after a 400-step warm-up,
gradients clipped at 1.

Arguments: smoke (a run of seconds).

  python -m gen_jax.main --exp=lstm_translate --workdir=runs/lstm_translate
  python -m gen_jax.main --exp=lstm_translate --workdir=runs/lstm_translate \
      --mode=sample --source="Cannot open file %s"
  python -m gen_jax.main --exp=lstm_translate --workdir=runs/lstm_translate --config.model.attention=multiplicative
  python -m gen_jax.main --exp=lstm_translate:smoke --workdir=/tmp/lt_smoke
"""

from gen_jax import config as config_lib

_translate = config_lib.load_module("_translate")
smoke = _translate.smoke


def get_config():
  c = _translate.add_translation_defaults(config_lib.base_config())
  c.model = _translate.lstm_defaults()

  c.train.num_steps = 1100
  return c
