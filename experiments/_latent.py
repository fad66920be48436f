"""Config builders shared by the latent experiments (not an experiment):
flow matching over the latents of vqvae_mnist (ldm_mnist), with captions
(txt2img_mnist). Experiment files load this with
`config_lib.load_module("_latent")`.
"""

import ml_collections

from gen_jax import config as config_lib

_continuous = config_lib.load_module("_continuous")


def autoencoder(c, workdir: str, exp: str):
  """Names the stage-1 VQ-VAE run (loaded read-only at step 0)."""
  c.autoencoder = ml_collections.ConfigDict()
  c.autoencoder.workdir = workdir
  c.autoencoder.exp = exp  # the experiment that trains it (for messages)
  return c


def mnist():
  """Flow matching on vqvae_mnist's 7x7x4 latents: a two-level U-Net (7x7,
  4x4) with attention at both, fm_mnist's batch, optimizer and EMA."""
  c = _continuous.fm_settings(_continuous.mnist("flow_matching"))
  autoencoder(c, "runs/vqvae_mnist", "vqvae_mnist")
  c.model.patch_size = 1
  c.model.channels = 64
  c.model.channel_mults = (1, 2)  # 7x7, 4x4
  c.model.num_res_blocks = 2
  c.model.attention_resolutions = (7, 4)
  c.model.num_groups = 16
  c.eval.ode_rows = 0  # the ODE likelihood is of pixels
  return c


def captions(c):
  """Text conditioning on the digit captions: a 2-block byte Transformer
  (width 64) read by cross-attention after every attention block; captions
  dropped at 10% for classifier-free guidance."""
  c.data.captions = "digits"  # '' | 'digits' (label + measured ink)
  c.data.caption_length = 40  # byte ids per caption, BOS included
  c.data.caption_keep_prob = 0.5  # training: each attribute word kept
  c.model.text_width = 64
  c.model.text_depth = 2
  c.model.text_heads = 4
  c.model.label_dropout = 0.1  # caption dropout: the empty caption
  c.sample.guidance_scale = 2.0
  c.train.num_steps = 3000  # twice ldm_mnist's: the captions take longer
  c.train.eval_every = 1000
  c.train.sample_every = 1000
  c.sample.prompts = ("a thick seven", "a thin seven", "a slanted one",
                      "an upright one", "a thick, slanted two",
                      "a thin, upright zero", "a thick four",
                      "a slanted left nine")
  # Final eval and --mode=eval: class accuracy and attribute agreement of
  # samples for these prompts at these guidance scales
  # (gen_jax/evaluation/prompt_agreement.py).
  c.eval.prompts = ("a thick zero", "a thin zero", "a thick, upright one",
                    "a thin, slanted one", "a slanted two", "an upright two",
                    "a thick three", "a thin three", "a slanted four",
                    "an upright four", "a thick, slanted five",
                    "a thin, upright six", "a thick seven", "a thin seven",
                    "an upright eight", "a slanted left nine")
  c.eval.guidance_scales = (1.0, 2.0, 4.0)
  c.eval.samples_per_prompt = 25
  return c


def smoke(c, stage1_workdir: str = "runs/vqvae_mnist_smoke"):
  """A smoke run whose stage 1 is vqvae_mnist:smoke."""
  _continuous.smoke(c)
  c.eval.ode_rows = 0
  c.model.channel_mults = (1,)
  c.model.attention_resolutions = (7,)
  c.model.num_groups = 4
  autoencoder(c, stage1_workdir, "vqvae_mnist:smoke")
  if "text_width" in c.model:
    c.eval.prompts = ()
    c.model.text_width = 16
    c.model.text_depth = 1
    c.model.text_heads = 2
  return c
