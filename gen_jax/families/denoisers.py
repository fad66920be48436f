"""The networks of the diffusion-type families (DDPM, EDM, flow matching).

The objective and the network are independent choices: `model.network` is
'unet' (the DDPM U-Net, `models/unet.py`: keys channels, channel_mults,
num_res_blocks, attention_resolutions, dropout, num_groups, patch_size) or
'dit' (the Diffusion Transformer, `models/dit.py`: keys patch_size, width,
depth, num_heads, mlp_ratio). Every such network maps (x, t, y) to an image
of x's shape. This module also holds what the three families share about
classes: label dropout in training (a null class, id `num_classes`) and
classifier-free guidance, out_u + s (out_c - out_u).
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.families import base
from gen_jax.models import dit as dit_lib
from gen_jax.models import transformer
from gen_jax.models import unet

NETWORKS = ("unet", "dit")


class DenoiserFamily(base.OneNetwork):
  """The base of DDPM, EDM and flow matching: one network from `build` (its
  sizes checked), images in [-1, 1], optional classes."""

  def __init__(self, config, tokenizer=None):
    check(config)
    self.num_classes = config.model.num_classes
    self.model_parallel = name(config) == "dit"  # the DiT's heads split
    super().__init__(config, tokenizer)
    self.num_dims = int(np.prod(config.data.image_shape))

  def build_network(self, rngs):
    return build(self.config, rngs)

  def partition_rules(self):
    return partition_rules(self.config, tuple(self.config.mesh.axes))

  @staticmethod
  def to_model_space(image_BHWC: jax.Array) -> jax.Array:
    return image_BHWC.astype(jnp.float32) / 127.5 - 1.0


def name(config) -> str:
  return config.model.get("network", "unet")


def check(config) -> None:
  """Refuses, in one line, sizes the chosen network cannot use."""
  m = config.model
  network = name(config)
  if network not in NETWORKS:
    raise UserError(f"--config.model.network: '{network}' is not one of "
                    f"{', '.join(NETWORKS)}.")
  h, w, _ = base.check_images(config)
  base.check_sizes(config, positive=("model.patch_size",),
                   nonnegative=("model.num_classes",))
  base.check_fraction(config, "model.label_dropout", include_one=True)
  if network == "dit":
    base.check_sizes(config, positive=("model.width", "model.depth",
                                       "model.num_heads", "model.mlp_ratio"))
    if m.width % m.num_heads or m.width % 4:
      raise UserError(f"--config.model.width={m.width}: must be a multiple "
                      f"of 4 and of model.num_heads={m.num_heads}.")
    return
  base.check_sizes(config, positive=("model.channels", "model.channel_mults",
                                     "model.num_groups"),
                   nonnegative=("model.num_res_blocks",))
  if h % m.patch_size or w % m.patch_size:
    raise UserError(f"--config.model.patch_size={m.patch_size} does not "
                    f"divide the {h}x{w} image.")
  for c in {m.channels * k for k in (1, *m.channel_mults)}:
    if c % min(m.num_groups, c):
      raise UserError(f"--config.model.num_groups={m.num_groups} does not "
                      f"divide the U-Net's {c} channels (model.channels x "
                      "each of model.channel_mults).")
  base.check_fraction(config, "model.dropout")


def build(config, rngs: nnx.Rngs) -> nnx.Module:
  """The configured network with fresh weights."""
  m = config.model
  common = dict(image_shape=tuple(config.data.image_shape),
                patch_size=m.patch_size, num_classes=m.num_classes,
                dtype=config.train.dtype)
  if name(config) == "dit":
    return dit_lib.DiT(dit_lib.DiTConfig(
        width=m.width, depth=m.depth, num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio, **common), rngs=rngs)
  return unet.UNet(unet.UNetConfig(
      channels=m.channels, channel_mults=tuple(m.channel_mults),
      num_res_blocks=m.num_res_blocks,
      attention_resolutions=tuple(m.attention_resolutions),
      dropout=m.dropout, num_groups=m.num_groups, **common), rngs=rngs)


def partition_rules(config, axes):
  """The DiT shards like the language model; the U-Net takes the default
  'fsdp' layout."""
  return transformer.partition_rules(axes) if name(config) == "dit" else ()


def training_labels(batch, num_classes: int, label_dropout: float,
                    key: jax.Array, training: bool) -> jax.Array | None:
  """Class ids of a batch, replaced by the null class at `label_dropout`
  in training; None for an unconditional model."""
  if not num_classes:
    return None
  y = batch["label"].astype(jnp.int32)
  if training and label_dropout > 0:
    drop = jax.random.bernoulli(key, label_dropout, y.shape)
    y = jnp.where(drop, num_classes, y)
  return y


def guided(net, x_BHWC, t_B, y_B, scale: float, num_classes: int):
  """The network's output with classifier-free guidance at `scale` (one
  batched call for the conditional and unconditional halves)."""
  if not num_classes or scale == 1.0:
    return net(x_BHWC, t_B, y_B)
  null = jnp.full_like(y_B, num_classes)
  out = net(jnp.concatenate([x_BHWC, x_BHWC]), jnp.concatenate([t_B, t_B]),
            jnp.concatenate([y_B, null]))
  out_c, out_u = jnp.split(out, 2)
  return out_u + scale * (out_c - out_u)
