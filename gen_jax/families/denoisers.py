"""The networks of the diffusion-type families (DDPM, EDM, flow matching).

The objective and the network are independent choices: `model.network` is
'unet' (the DDPM U-Net, `models/unet.py`: keys channels, channel_mults,
num_res_blocks, attention_resolutions, dropout, num_groups, patch_size) or
'dit' (the Diffusion Transformer, `models/dit.py`: keys patch_size, width,
depth, num_heads, mlp_ratio). Every such network maps (x, t, y) to an array
of x's shape. This module also holds what the three families share about
conditions: dropout to a null condition in training (the null class, id
`num_classes`, or the empty caption) and classifier-free guidance,
out_u + s (out_c - out_u).

Two options beyond pixels and classes:
- latents (`config.autoencoder`, Rombach et al. 2022): the model learns the
  continuous latents of a trained VQ-VAE before quantization, divided by
  their standard deviation measured on the first batch; samples are decoded
  to pixels through the quantizer (`stage1.py`);
- text (`config.data.captions`; flow matching and EDM): the condition is a
  caption of byte ids
  from the data pipeline, read by a small Transformer text encoder that the
  network attends to through cross-attention
  (`models/text_conditioning.py`); `model.label_dropout` is then the
  caption dropout, and the empty caption is the unconditional input.
"""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.families import base, stage1
from gen_jax.models import dit as dit_lib
from gen_jax.models import text_conditioning
from gen_jax.models import transformer
from gen_jax.models import unet

NETWORKS = ("unet", "dit")


class DenoiserFamily(base.OneNetwork):
  """The base of DDPM, EDM and flow matching: one network from `build` (its
  sizes checked), images in [-1, 1] (or latents), optional classes or
  captions."""

  supports_text = False  # captions (flow matching, EDM)

  def __init__(self, config, tokenizer=None):
    self.latent = "autoencoder" in config
    self.text = self.captioned = bool(config.data.get("captions", ""))
    if self.text and not self.supports_text:
      raise UserError(f"--config.data.captions: the '{config.family}' family "
                      "is conditioned on class labels; captions are an "
                      "option of flow_matching and edm.")
    self.space_shape = tuple(config.data.image_shape)
    if self.latent:
      self.stage1 = stage1.Stage1(config)
      self.space_shape = self.stage1.latent_shape
      self.trainable = stage1.TRAINABLE
    check(config, self.space_shape)
    self.num_classes = config.model.num_classes
    if self.text:
      if config.model.num_classes:
        raise UserError("--config.model.num_classes: a captioned model is "
                        "conditioned by its captions; set it to 0.")
      base.check_sizes(config, positive=(
          "data.caption_length", "model.text_width", "model.text_depth",
          "model.text_heads"))
      if config.model.text_width % config.model.text_heads:
        raise UserError(f"--config.model.text_width={config.model.text_width}"
                        " must be divisible by model.text_heads="
                        f"{config.model.text_heads}.")
      if tokenizer is None:
        raise UserError(f"--config.data.captions={config.data.captions}: "
                        "a captioned model is built with the data pipeline's "
                        "caption tokenizer (pipeline.make(config).tokenizer).")
      # Class ids sample as their prompts, 'a seven' (sample quality).
      self.num_classes = (config.data.num_classes
                          if hasattr(tokenizer, "class_prompt") else 0)
    self.model_parallel = name(config) == "dit"  # the DiT's heads split
    super().__init__(config, tokenizer)
    self.num_dims = int(np.prod(config.data.image_shape))
    self._decode_fns: dict = {}

  def build_network(self, rngs):
    c = self.config
    context = c.model.text_width if self.text else 0
    net = build(c, rngs, self.space_shape, context)
    if self.text:
      net = text_conditioning.TextConditioned(
          net, text_conditioning.TextEncoder(
              text_conditioning.TextEncoderConfig(
                  vocab_size=self.tokenizer.vocab_size,
                  max_length=c.data.caption_length, width=c.model.text_width,
                  depth=c.model.text_depth, num_heads=c.model.text_heads,
                  dtype=c.train.dtype), rngs=rngs))
    return self.stage1.build(net, rngs) if self.latent else net

  def warm_start(self, state, batch):
    """Latents: the VQ-VAE's weights, and the latents' standard deviation
    measured on the first batch."""
    if not self.latent:
      return None

    def measure(model):
      z = jax.jit(lambda m, image: stage1.encode_latents(m, image))(
          model, batch["image"])
      model.latent_std.set_value(jnp.std(z))
    return stage1.warm_start(self, state, measure)

  def partition_rules(self):
    return partition_rules(self.config, tuple(self.config.mesh.axes))

  def model_input(self, net, image_BHWC: jax.Array) -> jax.Array:
    """uint8 images -> what the model learns: pixels in [-1, 1], or the
    scaled latents."""
    if self.latent:
      return stage1.encode_latents(net, image_BHWC)
    return image_BHWC.astype(jnp.float32) / 127.5 - 1.0

  def to_images(self, net, x: jax.Array) -> jax.Array:
    """The model's space -> images in [0, 1]."""
    if self.latent:
      return stage1.decode_latents(net, x)
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

  def finish(self, params, rest, x, sharding=None) -> jax.Array:
    """A sampler's output -> images in [0, 1] (latents: decoded)."""
    if not self.latent:
      return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)
    if sharding not in self._decode_fns:
      self._decode_fns[sharding] = jax.jit(
          lambda params, rest, x: self.to_images(self.network(params, rest),
                                                 x), out_shardings=sharding)
    return self._decode_fns[sharding](params, rest, x)

  def check_scorable(self) -> None:
    """Refuses --mode=score where the likelihood is not of the pixels (a
    latent model) or needs a caption."""
    if self.latent or self.text:
      raise UserError(
          "--mode=score needs a likelihood of the pixels; this "
          f"{'latent' if self.latent else 'caption-conditioned'} model has "
          "none (score its VQ-VAE or an image-space model instead).")

  def condition(self, batch, key: jax.Array | None, training: bool):
    """The condition of a batch (class ids, caption ids or None), replaced
    by the null one at `model.label_dropout` in training."""
    rate = self.config.model.label_dropout
    if self.text:
      y = batch["caption"].astype(jnp.int32)
      if training and rate > 0:
        drop = jax.random.bernoulli(key, rate, y.shape[:1])
        y = jnp.where(drop[:, None], self.null_condition(y), y)
      return y
    return training_labels(batch, self.num_classes, rate, key, training)

  def null_condition(self, y):
    """The unconditional input of guidance: the null class, the empty
    caption (BOS alone), or None for an unconditional model."""
    if y is None:
      return None
    if self.text:
      return jnp.full_like(y, self.tokenizer.pad_id).at[:, 0].set(
          self.tokenizer.bos_id)
    return jnp.full_like(y, self.num_classes) if self.num_classes else None

  def prompt_ids(self, prompts) -> np.ndarray:
    """Caption strings -> byte ids [N, data.caption_length]."""
    return self.tokenizer.encode_batch(prompts)


def name(config) -> str:
  return config.model.get("network", "unet")


def check(config, shape=None) -> None:
  """Refuses, in one line, sizes the chosen network cannot use on arrays of
  `shape` (default: the images)."""
  m = config.model
  network = name(config)
  if network not in NETWORKS:
    raise UserError(f"--config.model.network: '{network}' is not one of "
                    f"{', '.join(NETWORKS)}.")
  h, w, _ = base.check_images(config)
  if shape is not None:
    h, w, _ = shape
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


def build(config, rngs: nnx.Rngs, shape=None, context_dim: int = 0
          ) -> nnx.Module:
  """The configured network with fresh weights, on arrays of `shape`
  (default: the images); `context_dim > 0`: with cross-attention to a
  context of that width."""
  m = config.model
  common = dict(image_shape=tuple(shape or config.data.image_shape),
                patch_size=m.patch_size, num_classes=m.num_classes,
                context_dim=context_dim, dtype=config.train.dtype)
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


def guided(net, x_BHWC, t_B, y_B, scale: float, null_B):
  """The network's output with classifier-free guidance at `scale` (one
  batched call for the conditional and unconditional halves); `null_B`:
  the unconditional input (None: an unconditional model)."""
  if null_B is None or scale == 1.0:
    return net(x_BHWC, t_B, y_B)
  null = null_B
  out = net(jnp.concatenate([x_BHWC, x_BHWC]), jnp.concatenate([t_B, t_B]),
            jnp.concatenate([y_B, null]))
  out_c, out_u = jnp.split(out, 2)
  return out_u + scale * (out_c - out_u)
