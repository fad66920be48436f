r"""Encoder-decoder Transformer, English to German, on the system's gettext catalogs.

Sized for 2 CPU cores: 3 + 3 pre-LayerNorm blocks, width 256, 4 heads, MLP
1024, dropout 0.1, label smoothing 0.1, a shared 8,000-token byte-level
BPE; batches of 64 sentence pairs of at most 48 tokens; Adam (beta2 0.98)
with the paper's schedule (warm-up 400 steps to 1e-3, then inverse square
root), gradients clipped at 1. Evaluated by held-out cross entropy, token
accuracy, and sacrebleu BLEU / chrF of greedy and beam-4 translations
(length penalty 0.6). Offline data: see gen_jax/data/gettext_corpus.py.

Arguments: smoke (a run of seconds).

  python -m gen_jax.main --exp=transformer_translate --workdir=runs/transformer_translate
  python -m gen_jax.main --exp=transformer_translate --workdir=runs/transformer_translate \
      --mode=sample --source="Cannot open file %s" --source="Show hidden files"
  python -m gen_jax.main --exp=transformer_translate --workdir=runs/transformer_translate --mode=eval
  python -m gen_jax.main --exp=transformer_translate:smoke --workdir=/tmp/tt_smoke
"""

from gen_jax import config as config_lib

_translate = config_lib.load_module("_translate")
smoke = _translate.smoke


def get_config():
  c = _translate.add_translation_defaults(config_lib.base_config())
  c.model = _translate.transformer_defaults()
  c.model.num_layers = 3
  c.model.num_heads = 4
  c.model.width = 256

  c.train.num_steps = 1700
  c.train.lr_schedule = "rsqrt"
  return c
