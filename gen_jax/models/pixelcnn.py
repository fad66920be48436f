"""PixelCNN networks: masked convolutions, the plain PixelCNN and the Gated
PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with
PixelCNN Decoders").

Order. An image [H, W, C] is generated sub-pixel by sub-pixel in raster order
with the channel fastest: position p = (i * W + j) * C + c (R, then G, then B
of a pixel before the next pixel). The network maps the whole image to, at
every sub-pixel, the logits of its conditional p(x_p | x_<p).

Channel groups. Every feature map's F features are split into C groups,
feature f in group f % C; group c carries information for predicting channel
c. At the centre tap of a kernel (the pixel being predicted), a mask of type
'A' connects input group g to output group g' only when g < g' (the first
layer: channel c sees the channels before it, never itself); type 'B' also
when g == g' (later layers: a feature may use what its own group computed
before). Taps at earlier pixels are unmasked; taps at later pixels are zero.
With C = 1, 'A' drops the centre tap and 'B' keeps it.

Gated PixelCNN. A vertical stack sees the rows above: its convolution has a
(k//2 + 1) x k kernel covering rows i - k//2 .. i (its features at row i do
depend on row i), and it feeds the horizontal stack only after a shift down
by one row, so the horizontal stack at row i receives rows < i. The
horizontal stack sees the pixels to the left in the current row through a
1 x (k//2 + 1) kernel whose last tap is the centre (masked 'A' in the first
layer, 'B' after). Both stacks compute 2F features, gated as
tanh(a) * sigmoid(b); a 1x1 convolution links the vertical pre-activations
to the horizontal ones; the horizontal stack is residual after the first
layer; a class embedding is added inside each gate. The vertical stack's
receptive field is a full rectangle of rows above (k//2 more rows and columns
either side per layer), so there is no blind spot (the plain PixelCNN's
stacked 3x3 masks never see pixels up and to the right).

Every convolution goes through `gen_jax.models.conv.conv2d` (1x1 layers as
matmuls on CPU).
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.models import conv as conv_lib
from gen_jax.models import initializers


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig:
  image_shape: tuple[int, int, int] = (28, 28, 1)
  arch: str = "gated"  # 'gated' | 'plain' (masked convolutions; blind spot)
  channels: int = 64  # F, features per stack (a multiple of C)
  num_layers: int = 10  # gated layers (plain: masked 'B' layers after 'A')
  first_kernel: int = 7  # k of the first layer (odd)
  kernel: int = 3  # k of the other layers (odd)
  head_channels: int = 128  # the 1x1 output head's hidden width (multiple of C)
  outputs_per_subpixel: int = 256  # 256 logits, or 1 Bernoulli logit
  num_classes: int = 0  # > 0: class-conditional (an embedding in each gate)
  dtype: str = "float32"  # compute dtype; parameters stay float32


def channel_groups(features: int, num_groups: int) -> np.ndarray:
  """The group (channel it serves) of each of `features` features: f % C."""
  return np.arange(features) % num_groups


def centre_mask(in_features: int, out_features: int, num_groups: int,
                mask_type: str) -> np.ndarray:
  """[I, O] 0/1 connections at the centre tap: 'A' g_in < g_out, 'B' <=."""
  g_in = channel_groups(in_features, num_groups)[:, None]
  g_out = channel_groups(out_features, num_groups)[None, :]
  allowed = g_in < g_out if mask_type == "A" else g_in <= g_out
  return allowed.astype(np.float32)


def kernel_mask(kernel_shape: tuple[int, int, int, int],
                anchor: tuple[int, int], num_groups: int,
                mask_type: str | None) -> np.ndarray:
  """[kh, kw, I, O] mask of a kernel whose tap `anchor` reads the output's
  own pixel: earlier taps in raster order 1, the anchor `centre_mask`,
  later taps 0. `mask_type=None`: all ones (the vertical stack)."""
  kh, kw, i, o = kernel_shape
  mask = np.ones(kernel_shape, np.float32)
  if mask_type is None:
    return mask
  for a in range(kh):
    for b in range(kw):
      offset = (a - anchor[0], b - anchor[1])
      if offset == (0, 0):
        mask[a, b] = centre_mask(i, o, num_groups, mask_type)
      elif offset > (0, 0):  # lexicographic: a later pixel
        mask[a, b] = 0.0
  return mask


def down_shift(x_BHWC: jax.Array) -> jax.Array:
  """Row i gets row i - 1; row 0 gets zeros."""
  return jnp.pad(x_BHWC[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


def gate(x_BHW2F: jax.Array) -> jax.Array:
  """tanh(a) * sigmoid(b) of the two halves of the features."""
  a, b = jnp.split(x_BHW2F, 2, axis=-1)
  return jnp.tanh(a) * jax.nn.sigmoid(b)


class MaskedConv(nnx.Module):
  """A stride-1 2-D convolution with a fixed mask on its kernel.

  The output at (y, x) reads the input at (y + a - anchor[0], x + b -
  anchor[1]) through tap (a, b), zero outside the image.
  """

  def __init__(self, in_features: int, out_features: int,
               kernel_size: tuple[int, int] = (1, 1),
               anchor: tuple[int, int] = (0, 0), *,
               mask_type: str | None = None, num_groups: int = 1,
               dtype: str = "float32", rngs: nnx.Rngs):
    self.kernel_size = tuple(kernel_size)
    self.anchor = tuple(anchor)
    self.mask_type = mask_type
    self.num_groups = num_groups
    self.dtype = jnp.dtype(dtype)
    self.shape = (*self.kernel_size, in_features, out_features)
    # Masked taps start at exactly zero (and stay there: zero gradient).
    self.kernel = nnx.Param(initializers.conv_kernel_init(
        rngs.params(), self.shape) * self.mask())
    self.bias = nnx.Param(jnp.zeros((out_features,)))

  def mask(self) -> np.ndarray:
    return kernel_mask(self.shape, self.anchor, self.num_groups,
                       self.mask_type)

  def __call__(self, x_BHWI: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    ay, ax = self.anchor
    x = x_BHWI.astype(self.dtype)
    kernel = (self.kernel[...] * self.mask()).astype(self.dtype)
    y = conv_lib.conv2d(x, kernel,
                        padding=((ay, kh - 1 - ay), (ax, kw - 1 - ax)))
    bias = self.bias[...].astype(self.dtype)
    return y + bias.reshape((1,) * (y.ndim - 1) + (-1,))


class ClassBias(nnx.Module):
  """A learned [K, F] table: the bias a label adds to every position."""

  def __init__(self, num_classes: int, features: int, *, rngs: nnx.Rngs):
    del rngs
    self.table = nnx.Param(jnp.zeros((num_classes, features)))

  def __call__(self, y_B: jax.Array, dtype) -> jax.Array:
    return self.table[...][y_B].astype(dtype)[:, None, None, :]  # [B,1,1,F]


class GatedLayer(nnx.Module):
  """One layer of both stacks: (v, h) -> (v', h')."""

  def __init__(self, in_features: int, features: int, kernel: int,
               first: bool, cfg: PixelCNNConfig, *, rngs: nnx.Rngs):
    groups = cfg.image_shape[-1]
    common = dict(num_groups=groups, dtype=cfg.dtype, rngs=rngs)
    k = kernel
    self.v_conv = MaskedConv(in_features, 2 * features, (k // 2 + 1, k),
                             (k // 2, k // 2), **common)
    self.h_conv = MaskedConv(in_features, 2 * features, (1, k // 2 + 1),
                             (0, k // 2), mask_type="A" if first else "B",
                             **common)
    self.v_to_h = MaskedConv(2 * features, 2 * features, **common)
    self.h_out = MaskedConv(features, features, mask_type="B", **common)
    self.residual = not first
    if cfg.num_classes:
      self.v_bias = ClassBias(cfg.num_classes, 2 * features, rngs=rngs)
      self.h_bias = ClassBias(cfg.num_classes, 2 * features, rngs=rngs)
    else:
      self.v_bias = self.h_bias = None

  def __call__(self, v_BHWF, h_BHWF, y_B=None):
    v_pre = self.v_conv(v_BHWF)
    # The link reads the vertical pre-activations before the class bias.
    h_pre = self.h_conv(h_BHWF) + self.v_to_h(down_shift(v_pre))
    return (self.vertical_out(v_pre, y_B),
            self.horizontal_out(h_pre, h_BHWF, y_B))

  def vertical_out(self, v_pre, y_B=None):
    """v' from the vertical pre-activations: gate(v_pre + class bias)."""
    if self.v_bias is not None:
      v_pre = v_pre + self.v_bias(y_B, v_pre.dtype)
    return gate(v_pre)

  def horizontal_out(self, h_pre, h_BHWF, y_B=None):
    """h' from the horizontal pre-activations (h_conv(h) + the link) and the
    layer's input h: the class bias, the gate, the 1x1 layer, the residual."""
    if self.h_bias is not None:
      h_pre = h_pre + self.h_bias(y_B, h_pre.dtype)
    h = self.h_out(gate(h_pre))
    if self.residual:
      h = h + h_BHWF.astype(h.dtype)
    return h


class OutputHead(nnx.Module):
  """relu -> 1x1 'B' -> relu -> 1x1 'B' to L logits per sub-pixel."""

  def __init__(self, features: int, cfg: PixelCNNConfig, *, rngs: nnx.Rngs):
    c = cfg.image_shape[-1]
    common = dict(mask_type="B", num_groups=c, dtype=cfg.dtype, rngs=rngs)
    self.hidden = MaskedConv(features, cfg.head_channels, **common)
    # Output o = v * C + c: group o % C = c, the channel its logit is for.
    self.out = MaskedConv(cfg.head_channels, cfg.outputs_per_subpixel * c,
                          **common)
    self.levels = cfg.outputs_per_subpixel

  def __call__(self, h_BHWF: jax.Array) -> jax.Array:
    out = self.out(nnx.relu(self.hidden(nnx.relu(h_BHWF))))
    b, h, w, _ = out.shape
    out = out.astype(jnp.float32).reshape(b, h, w, self.levels, -1)
    out = jnp.moveaxis(out, 3, 4)  # [B, H, W, C, L]
    return out[..., 0] if self.levels == 1 else out


class GatedPixelCNN(nnx.Module):
  """Image in [-1, 1] [B, H, W, C] (+ labels [B]) -> logits [B, H, W, C, L]
  ([B, H, W, C] when L = 1); the logits at p depend on the input at < p."""

  def __init__(self, cfg: PixelCNNConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c, f = cfg.image_shape[-1], cfg.channels
    self.layers = nnx.List([GatedLayer(c, f, cfg.first_kernel, True, cfg,
                                       rngs=rngs)])
    for _ in range(cfg.num_layers - 1):
      self.layers.append(GatedLayer(f, f, cfg.kernel, False, cfg, rngs=rngs))
    self.head = OutputHead(f, cfg, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, y_B: jax.Array | None = None
               ) -> jax.Array:
    v = h = x_BHWC
    for layer in self.layers:
      v, h = layer(v, h, y_B)
    return self.head(h)


class PixelCNN(nnx.Module):
  """The plain PixelCNN (van den Oord et al. 2016a, without its LSTMs): a
  k x k 'A' convolution, then residual 3x3 'B' layers. Causal, but with a
  blind spot above and to the right (kept as the baseline the gated network
  fixes)."""

  def __init__(self, cfg: PixelCNNConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    c, f = cfg.image_shape[-1], cfg.channels
    common = dict(num_groups=c, dtype=cfg.dtype, rngs=rngs)
    k0, k = cfg.first_kernel, cfg.kernel
    self.first = MaskedConv(c, f, (k0, k0), (k0 // 2, k0 // 2),
                            mask_type="A", **common)
    self.convs = nnx.List([
        MaskedConv(f, f, (k, k), (k // 2, k // 2), mask_type="B", **common)
        for _ in range(cfg.num_layers)])
    self.biases = nnx.List([ClassBias(cfg.num_classes, f, rngs=rngs)
                            for _ in range(cfg.num_layers + 1)
                            ] if cfg.num_classes else [])
    self.head = OutputHead(f, cfg, rngs=rngs)

  def __call__(self, x_BHWC: jax.Array, y_B: jax.Array | None = None
               ) -> jax.Array:
    h = self.first(x_BHWC)
    for i, conv in enumerate([None, *self.convs]):
      if conv is not None:
        h = h + conv(nnx.relu(h))
      h = self.class_bias(i, h, y_B)
    return self.head(h)

  def class_bias(self, n: int, h: jax.Array, y_B) -> jax.Array:
    """h plus the class bias after layer n (0: the first); h if
    unconditional."""
    if not self.cfg.num_classes:
      return h
    return h + self.biases[n](y_B, h.dtype)


def make(cfg: PixelCNNConfig, rngs: nnx.Rngs) -> nnx.Module:
  return (GatedPixelCNN if cfg.arch == "gated" else PixelCNN)(cfg, rngs=rngs)


def num_params(model: nnx.Module) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(
      nnx.state(model, nnx.Param)))
