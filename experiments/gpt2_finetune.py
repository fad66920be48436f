r"""Fine-tune a pretrained GPT-2 (a Hugging Face checkpoint directory).

--config.init_from=DIR is a directory holding config.json, model.safetensors
(or pytorch_model.bin), vocab.json and merges.txt, e.g. what
`GPT2LMHeadModel.from_pretrained('gpt2').save_pretrained(DIR)` plus
`GPT2Tokenizer.from_pretrained('gpt2').save_pretrained(DIR)` write. The
architecture (gpt2, -medium, -large, -xl) is read from it; the tokenizer is
GPT-2's byte-level BPE. Data: tiny Shakespeare (offline: the Python standard
library sources), windows of 256 tokens. The setting follows nanoGPT's
finetune_shakespeare (constant lr 3e-5, batch 32).

Arguments (combine with '-'): lora (rank-8 adapters on every projection,
only they train; lr 1e-3), smoke (a run of seconds).

  python -m gen_jax.main --exp=gpt2_finetune --workdir=runs/gpt2_ft --config.init_from=DIR
  python -m gen_jax.main --exp=gpt2_finetune:lora --workdir=runs/gpt2_lora --config.init_from=DIR
  # Sample from the pretrained model itself (no training, an empty workdir):
  python -m gen_jax.main --exp=gpt2_finetune --workdir=runs/gpt2 --config.init_from=DIR \
      --mode=sample --prompt="The meaning of life is" --top_k=40
"""

from gen_jax import config as config_lib

_text = config_lib.load_module("_text")

VARIANTS = ("lora",)


def get_config(variants=()):
  c = _text.add_text_defaults(config_lib.base_config())
  c.data.name = "tiny_shakespeare"
  c.data.vocab = "gpt2"
  c.data.seq_len = 256
  c.data.batch_size = 32
  c.data.eval_batch_size = 32

  c.model = _text.finetune_defaults()  # the rest: from init_from
  c.model.dropout = 0.0

  c.train.num_steps = 200
  c.train.learning_rate = 3e-5
  c.train.lr_schedule = "constant"
  c.train.grad_clip_norm = 1.0
  c.train.log_every = 10
  c.train.eval_every = 100
  c.train.ckpt_every = 100
  c.train.sample_every = 200
  c.eval.num_examples = 256

  c.sample.prompts = ("<|endoftext|>", "ROMEO:")
  c.sample.max_new_tokens = 128
  c.sample.temperature = 0.8
  c.sample.top_k = 40
  if "lora" in variants:
    c.model.lora_rank = 8
    c.model.lora_alpha = 16.0
    c.train.learning_rate = 1e-3
  return c


def smoke(c):
  _text.smoke(c)
  c.data.seq_len = 16
  return c
