"""Config builder: a Diffusion Transformer in place of the U-Net, for DDPM,
EDM and flow matching alike (not an experiment). Experiment files load this
with `config_lib.load_module("_dit")`.
"""

_UNET_KEYS = ("channels", "channel_mults", "num_res_blocks",
              "attention_resolutions", "dropout", "num_groups")


def dit(c, width: int, depth: int, num_heads: int, patch_size: int):
  """Swaps the U-Net's keys for a DiT of the given size."""
  for key in _UNET_KEYS:
    if key in c.model:
      del c.model[key]
  c.model.network = "dit"
  c.model.patch_size = patch_size
  c.model.width = width
  c.model.depth = depth
  c.model.num_heads = num_heads
  c.model.mlp_ratio = 4.0
  return c


def mnist(c):
  """6 blocks, width 128, 4 heads, on 4x4 patches: 49 tokens of 28x28."""
  return dit(c, width=128, depth=6, num_heads=4, patch_size=4)


def smoke(c):
  c.model.width = 16
  c.model.depth = 1
  c.model.num_heads = 2
  c.model.patch_size = 7
  return c
