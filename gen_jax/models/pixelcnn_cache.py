"""Cached sampling for the PixelCNN networks (Ramachandran et al. 2017,
"Fast Generation for Convolutional Autoregressive Models").

Drawing sub-pixel p needs the logits at p only, and the masks make them depend
on earlier positions alone. So instead of running the whole network on the
partial image at every one of the H W C positions, sampling keeps the features
that later positions will read and computes only what is new.

Gated network (`pixelcnn.GatedPixelCNN`). The vertical stack at row r depends
on rows <= r only, and the horizontal stack at row i sees it only through the
vertical pre-activations of row i - 1 (the down-shift). Kept per layer l with
kernel k (P = k // 2):
  - its vertical input, [B, P + H, W, I] (P zero rows on top: the padding);
  - the link v_to_h(v_pre) of the row above the current one, [B, 1, W, 2F];
  - its horizontal input along the current row, [B, 1, P + W, I] (the first
    layer's is the image row itself).
When row i is drawn (`end_row`), each layer's v_conv runs on the P + 1 rows
i - P .. i of its vertical input (the rows its kernel reads at row i), which
gives the layer's v_pre at row i, hence the link of row i + 1 and the next
layer's vertical input at row i. At pixel (i, j) (`pixel`), each h_conv runs
on the P + 1 columns j - P .. j of its horizontal input; with the link at j,
the gate, the 1x1 layer and the residual this is the layer's h at (i, j),
written into the next layer's row; the output head then gives the logits.
Cost: per pixel, the horizontal stack and the head at one pixel (plus
h_conv's P unused output columns), and per row the vertical stack and the
links over one row (plus v_conv's P unused output rows): O(layers x taps x
features^2) per pixel, independent of the image size.

Plain network (`pixelcnn.PixelCNN`). Every layer's output at (i, j) depends
on the layer below at rows i - P .. i only, so each layer's input is kept
whole ([B, P + H, W + 2P, F], zero borders), and at pixel (i, j) each masked
k x k convolution runs on the (P + 1) x k window of rows i - P .. i, columns
j - P .. j + P (the row-i taps right of j read stale values: their weights
are masked to zero).

Channels. A pixel's C sub-pixels are drawn in order; `pixel` is called once
per sub-pixel, with the image row as drawn so far, and overwrites the pixel's
stored features each time. The centre-tap masks make channel c's logits (and
every feature of group c) depend only on channels < c, so the features left
after the last call are the pixel's final ones. The image itself is read
from the row passed in (and, once a row is complete, from `end_row`'s row),
never from a copy stored before the pixel's last channel was drawn.

Every piece is computed by the network's own modules (its masked
convolutions, gates, class biases and head) on a slab holding exactly the
taps the kernel reads at the output position, zero outside the image as the
convolution's padding: the logits equal the full network's at that position
up to float rounding, in the network's compute dtype.

A cache serves one compiled call that samples rows top .. bottom - 1: `start`
builds it from the partial image (rows < top final) with one pass of the
network (the gated network's vertical stack only); then per row i, `pixel`
for every sub-pixel of the row in order, and `end_row` once the row is drawn.
"""

import jax
from jax import lax
import jax.numpy as jnp

from gen_jax.models import pixelcnn

State = dict[str, tuple[jax.Array, ...]]


def _pad(x_BHWC: jax.Array, top: int = 0, left: int = 0, right: int = 0
         ) -> jax.Array:
  """x with zero rows above it and zero columns either side."""
  return jnp.pad(x_BHWC, ((0, 0), (top, 0), (left, right), (0, 0)))


class GatedCache:
  """The cache of a `GatedPixelCNN` (vertical rows, links, horizontal rows)."""

  def __init__(self, model: pixelcnn.GatedPixelCNN):
    cfg = model.cfg
    self.model = model
    self.dtype = jnp.dtype(cfg.dtype)
    self.pads = [cfg.first_kernel // 2] + [cfg.kernel // 2] * (
        cfg.num_layers - 1)

  def start(self, x_BHWC: jax.Array, top: jax.Array, y_B=None) -> State:
    """The cache at the start of row `top`, from the network input x (rows <
    top final; the rest is overwritten before it is read)."""
    v = x_BHWC.astype(self.dtype)
    b, _, w, _ = x_BHWC.shape
    v_in, links, h_in = [], [], []
    for l, (layer, p) in enumerate(zip(self.model.layers, self.pads)):
      v_in.append(_pad(v, top=p))
      if l:  # the first layer's horizontal input is the image row
        h_in.append(jnp.zeros((b, 1, p + w, v.shape[-1]), self.dtype))
      v_pre = layer.v_conv(v)
      above = lax.dynamic_slice_in_dim(pixelcnn.down_shift(v_pre), top, 1,
                                       axis=1)
      links.append(layer.v_to_h(above))
      v = layer.vertical_out(v_pre, y_B)
    return {"v": tuple(v_in), "link": tuple(links), "h": tuple(h_in)}

  def end_row(self, state: State, i: jax.Array, x_BWC: jax.Array,
              y_B=None) -> State:
    """After row i is drawn (x_BWC: its network input): the vertical stack
    at row i, and the links of row i + 1."""
    v_in, links = list(state["v"]), []
    v = x_BWC[:, None].astype(self.dtype)  # [B, 1, W, C]
    for l, (layer, p) in enumerate(zip(self.model.layers, self.pads)):
      v_in[l] = lax.dynamic_update_slice_in_dim(v_in[l], v, i + p, axis=1)
      rows = lax.dynamic_slice_in_dim(v_in[l], i, p + 1, axis=1)  # i-p .. i
      v_pre = layer.v_conv(rows)[:, -1:]  # [B, 1, W, 2F]: row i
      links.append(layer.v_to_h(v_pre))
      v = layer.vertical_out(v_pre, y_B)
    return {**state, "v": tuple(v_in), "link": tuple(links)}

  def pixel(self, state: State, i: jax.Array, j: jax.Array,
            x_BWC: jax.Array, y_B=None) -> tuple[jax.Array, State]:
    """The logits [B, C(, L)] at pixel (i, j), x_BWC the network input of
    row i as drawn so far."""
    del i  # the links are row i's
    row = _pad(x_BWC[:, None].astype(self.dtype), left=self.pads[0])
    h_in, h = [row, *state["h"]], None  # h_in[l]: [B, 1, P + W, I]
    for l, (layer, p) in enumerate(zip(self.model.layers, self.pads)):
      if l:
        h_in[l] = lax.dynamic_update_slice_in_dim(h_in[l], h, j + p, axis=2)
      cols = lax.dynamic_slice_in_dim(h_in[l], j, p + 1, axis=2)  # j-p .. j
      h_pre = layer.h_conv(cols)[:, :, -1:] + lax.dynamic_slice_in_dim(
          state["link"][l], j, 1, axis=2)
      h = layer.horizontal_out(h_pre, cols[:, :, -1:], y_B)  # [B, 1, 1, F]
    return self.model.head(h)[:, 0, 0], {**state, "h": tuple(h_in[1:])}


class PlainCache:
  """The cache of a plain `PixelCNN`: every layer's input, whole."""

  def __init__(self, model: pixelcnn.PixelCNN):
    cfg = model.cfg
    self.model = model
    self.dtype = jnp.dtype(cfg.dtype)
    self.pads = [cfg.first_kernel // 2] + [cfg.kernel // 2] * cfg.num_layers

  def start(self, x_BHWC: jax.Array, top: jax.Array, y_B=None) -> State:
    """The cache from the network input x (rows < top final; the rest is
    overwritten before it is read)."""
    del top  # one pass of the network gives every layer's input
    m = self.model
    p = self.pads[0]
    maps = [_pad(x_BHWC.astype(self.dtype), p, p, p)]
    h = m.class_bias(0, m.first(x_BHWC), y_B)
    for n, (conv, p) in enumerate(zip(m.convs, self.pads[1:])):
      maps.append(_pad(h, p, p, p))
      h = m.class_bias(n + 1, h + conv(jax.nn.relu(h)), y_B)
    return {"maps": tuple(maps)}

  def _store_row(self, maps, i, x_BWC):
    """maps with row i of the image map replaced by x_BWC."""
    p = self.pads[0]
    row = _pad(x_BWC[:, None].astype(self.dtype), 0, p, p)  # [B, 1, W+2p, C]
    return (lax.dynamic_update_slice_in_dim(maps[0], row, i + p, axis=1),
            *maps[1:])

  def end_row(self, state: State, i: jax.Array, x_BWC: jax.Array,
              y_B=None) -> State:
    """After row i is drawn (x_BWC: its network input): the row, complete."""
    del y_B  # the features were stored by `pixel`
    return {"maps": self._store_row(state["maps"], i, x_BWC)}

  def pixel(self, state: State, i: jax.Array, j: jax.Array,
            x_BWC: jax.Array, y_B=None) -> tuple[jax.Array, State]:
    """The logits [B, C(, L)] at pixel (i, j), x_BWC the network input of
    row i as drawn so far."""
    maps = list(self._store_row(state["maps"], i, x_BWC))

    def window(n):  # rows i-p..i, columns j-p..j+p of map n
      p, (b, *_, f) = self.pads[n], maps[n].shape
      return lax.dynamic_slice(maps[n], (0, i, j, 0), (b, p + 1, 2 * p + 1, f))

    def centre(n, out):  # the output at (i, j) of a window's convolution
      return out[:, -1:, self.pads[n]:self.pads[n] + 1]

    def store(n, h_B11F):  # the features at (i, j) in map n
      p = self.pads[n]
      maps[n] = lax.dynamic_update_slice(maps[n], h_B11F, (0, i + p, j + p, 0))

    m = self.model
    h = m.class_bias(0, centre(0, m.first(window(0))), y_B)
    for n, conv in enumerate(m.convs):
      store(n + 1, h)
      out = conv(jax.nn.relu(window(n + 1)))
      h = m.class_bias(n + 1, h + centre(n + 1, out), y_B)
    return m.head(h)[:, 0, 0], {"maps": tuple(maps)}


def make(model) -> GatedCache | PlainCache:
  """The cache of a network built by `pixelcnn.make`."""
  if isinstance(model, pixelcnn.GatedPixelCNN):
    return GatedCache(model)
  return PlainCache(model)
