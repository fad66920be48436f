r"""Transformer-base on WMT14 English-German (Vaswani et al. 2017): the paper's setting.

6 + 6 blocks, width 512, 8 heads, MLP 2048, dropout 0.1, label smoothing
0.1, a shared 37,000-token BPE vocabulary; Adam (beta1 0.9, beta2 0.98)
with 4,000 warm-up steps and the inverse-square-root schedule (peak
512^-0.5 x 4000^-0.5 = 7.0e-4), 100,000 steps; beam 4, length penalty 0.6,
at most source length + 50 tokens. The paper reports 27.3 BLEU on
newstest2014 (its own tokenized BLEU, from the average of the last 5
checkpoints; sacrebleu's detokenized BLEU is typically ~1 lower).

Differences, said here rather than hidden: batches are 512 sentence pairs
(about the paper's 25,000 tokens at WMT's ~27 BPE tokens per side, without
length bucketing); blocks are pre-LayerNorm (the paper's are post-LN);
Adam's epsilon is 1e-8 (the paper's 1e-9); no checkpoint averaging.
Needs TFDS wmt14_translate/de-en prepared (about 4.5M pairs; 8 GPUs for
12 hours in the paper) - not run here.

  python -m gen_jax.main --exp=transformer_wmt14_base --workdir=runs/transformer_wmt14_base
"""

from gen_jax import config as config_lib

_translate = config_lib.load_module("_translate")
smoke = _translate.smoke


def get_config():
  c = _translate.add_translation_defaults(config_lib.base_config())
  c.data.name = "wmt14_translate"
  c.data.source = "tfds"  # never falls back to a different corpus
  c.data.language_pair = "en-de"
  c.data.vocab_size = 37000
  c.data.max_len = 256
  c.data.batch_size = 512
  c.data.eval_batch_size = 512
  c.model = _translate.transformer_defaults()  # the paper's base sizes

  c.train.num_steps = 100_000
  c.train.learning_rate = 512 ** -0.5 * 4000 ** -0.5
  c.train.lr_schedule = "rsqrt"
  c.train.warmup_steps = 4000
  c.train.b1 = 0.9
  c.train.b2 = 0.98
  c.train.grad_clip_norm = 0.0
  c.train.dtype = "bfloat16"
  c.train.log_every = 100
  c.train.eval_every = 10_000
  c.train.ckpt_every = 2000
  c.train.sample_every = 10_000
  c.sample.max_len_a = 1.0
  c.sample.max_len_b = 50
  c.sample.sources = ("The agreement was signed in Brussels on Monday.",)
  return c
