"""Config builders shared by the translation experiments (not an experiment).

Experiment files load this with `config_lib.load_module("_translate")`.
"""

import ml_collections

# Typed sentences of --mode=sample (the kind of text the catalogs hold).
SOURCES = ("File not found", "Cannot open file %s",
           "Do you want to save the changes?",
           "The connection to the server was lost.",
           "Show hidden files", "%d files copied")


def transformer_defaults() -> ml_collections.ConfigDict:
  """`config.model` of the encoder-decoder Transformer, every key it reads."""
  m = ml_collections.ConfigDict()
  m.arch = "transformer"
  m.num_layers = 6  # encoder blocks
  m.decoder_layers = 0  # 0: num_layers
  m.num_heads = 8
  m.width = 512
  m.mlp_width = 0  # 0: 4 * width
  m.dropout = 0.1
  m.share_embeddings = True  # one table for source, target and output
  m.attention_impl = ""  # '' (by backend) | 'einsum' | 'xla' | 'cudnn'
  m.label_smoothing = 0.1
  return m


def lstm_defaults() -> ml_collections.ConfigDict:
  """`config.model` of the attention LSTM, every key it reads."""
  m = ml_collections.ConfigDict()
  m.arch = "lstm"
  m.embed_dim = 256
  m.hidden = 512
  m.num_layers = 2
  m.attention = "additive"  # 'additive' (Bahdanau) | 'multiplicative' (Luong)
  m.dropout = 0.2
  m.share_embeddings = True
  m.label_smoothing = 0.1
  return m


def add_translation_defaults(c: ml_collections.ConfigDict
                             ) -> ml_collections.ConfigDict:
  """The data, eval and decoding keys of a translation experiment: the
  offline English-German catalogs, sized for 2 CPU cores."""
  c.family = "seq2seq"
  c.data.name = "gettext"  # | 'wmt14_translate' | 'wmt16_translate'
  c.data.language_pair = "en-de"  # source-target
  c.data.vocab_size = 8000  # shared byte-level BPE, learned on train
  c.data.max_len = 48  # tokens per side; longer pairs are dropped
  c.data.batch_size = 64  # sentence pairs
  # Batches of similar lengths: pools of this many batches are sorted by
  # length and re-cut (1: plain shuffled batches), then each batch is cut to
  # its longest row.
  c.data.bucket_pool = 16
  c.data.eval_batch_size = 250
  c.data.image_shape = ()
  c.data.num_classes = 0
  c.train.b2 = 0.98
  c.train.grad_clip_norm = 1.0
  # The loop of the 2-CPU-core runs (about 15 minutes of training).
  c.train.learning_rate = 1e-3  # the peak, reached at the end of warm-up
  c.train.warmup_steps = 400
  c.train.log_every = 100
  c.train.eval_every = 500
  c.train.ckpt_every = 500
  c.train.sample_every = 500
  c.eval.num_samples = 6  # translations in samples/step_N.txt
  c.eval.beam_sizes = (1, 4)  # BLEU / chrF of the held-out split at each
  c.sample.sources = SOURCES  # --source=...: translate these instead
  c.sample.beam_size = 4
  c.sample.length_penalty = 0.6  # GNMT's alpha; 0: none
  c.sample.max_len_a = 1.5  # a row emits at most a * source length + b
  c.sample.max_len_b = 10
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The ':smoke' shrink, after the loop's (`config.smoke`)."""
  c.data.vocab_size = 400
  c.data.max_len = 16
  c.data.batch_size = 16
  c.data.eval_batch_size = 32
  c.eval.num_examples = 30  # the eval batch has 2 padding rows
  c.eval.num_samples = 2
  c.eval.beam_sizes = (1, 2)
  c.sample.max_len_b = 4
  c.train.warmup_steps = 0
  c.train.lr_schedule = "constant"  # 20 steps: no time to warm up and decay
  c.train.learning_rate = 3e-3
  for key, value in (("num_layers", 1), ("num_heads", 2), ("width", 32),
                     ("hidden", 32), ("embed_dim", 16)):
    if key in c.model:
      c.model[key] = value
  return c
