"""The FID Inception-v3 feature extractor and the Inception Score.

The network is the one in TensorFlow's 2015-12-05 Inception graph, which the
FID and IS papers used and pytorch-fid / torch-fidelity ship converted as
`pt_inception-2015-12-05-6726825d.pth`. It differs from torchvision's
Inception-v3: the 3x3 average pools of the A, C and first E blocks ignore the
zero padding, the last E block max-pools in its pool branch, batch norm uses
eps 1e-3, and the classifier has 1008 classes.

Inputs are prepared as torch-fidelity's `FeatureExtractorInceptionV3` does:
uint8 pixels, resized to 299x299 with TensorFlow 1.x's bilinear resize
(half-open sample grid `i * in / out`, no half-pixel offset, no antialiasing),
then mapped to [-1, 1) by (x - 128) / 128.
"""

import os

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from gen_jax.errors import UserError
from gen_jax.importers import torch_files

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
               f"fid_weights/{WEIGHTS_FILE}")
INPUT_SIZE = 299
NUM_CLASSES = 1008
_BN_EPS = 1e-3


class _ConvBN(nnx.Module):
  """Bias-free convolution, inference batch norm (eps 1e-3), ReLU."""

  def __init__(self, in_channels: int, out_channels: int,
               kernel: int | tuple[int, int], stride: int = 1,
               padding: int | tuple[int, int] = 0):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    self.padding = (padding, padding) if isinstance(padding, int) else padding
    self.stride = stride
    self.kernel_HWIO = nnx.Param(
        np.zeros((kh, kw, in_channels, out_channels), np.float32))
    self.bn_scale = nnx.Param(np.ones((out_channels,), np.float32))
    self.bn_bias = nnx.Param(np.zeros((out_channels,), np.float32))
    self.bn_mean = nnx.BatchStat(np.zeros((out_channels,), np.float32))
    self.bn_var = nnx.BatchStat(np.ones((out_channels,), np.float32))

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    ph, pw = self.padding
    y_NHWC = lax.conv_general_dilated(
        x_NHWC, self.kernel_HWIO[...], (self.stride, self.stride),
        ((ph, ph), (pw, pw)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST)
    mult_C = self.bn_scale[...] / jnp.sqrt(self.bn_var[...] + _BN_EPS)
    shift_C = self.bn_bias[...] - self.bn_mean[...] * mult_C
    return jax.nn.relu(y_NHWC * mult_C[None, None, None, :] +
                       shift_C[None, None, None, :])


def _max_pool_3x3(x_NHWC: jax.Array, stride: int, pad: int) -> jax.Array:
  return lax.reduce_window(
      x_NHWC, np.array(-np.inf, x_NHWC.dtype), lax.max, (1, 3, 3, 1),
      (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_3x3_excluding_pad(x_NHWC: jax.Array) -> jax.Array:
  """3x3 stride-1 average over the in-bounds pixels only (TF 'SAME' pooling)."""
  _, h, w, _ = x_NHWC.shape
  sums_NHWC = lax.reduce_window(
      x_NHWC, np.array(0, x_NHWC.dtype), lax.add, (1, 3, 3, 1), (1, 1, 1, 1),
      ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows_H = 3 - (np.arange(h) == 0) - (np.arange(h) == h - 1)
  cols_W = 3 - (np.arange(w) == 0) - (np.arange(w) == w - 1)
  counts_11HW = np.outer(rows_H, cols_W).astype(np.float32)[None, :, :, None]
  return sums_NHWC / counts_11HW


class _InceptionA(nnx.Module):
  """35x35 block: 1x1, 5x5, double 3x3 and average-pool branches."""

  def __init__(self, in_channels: int, pool_features: int):
    self.branch1x1 = _ConvBN(in_channels, 64, 1)
    self.branch5x5_1 = _ConvBN(in_channels, 48, 1)
    self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = _ConvBN(in_channels, 64, 1)
    self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
    self.branch_pool = _ConvBN(in_channels, pool_features, 1)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    b5 = self.branch5x5_2(self.branch5x5_1(x_NHWC))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x_NHWC)))
    pool = self.branch_pool(_avg_pool_3x3_excluding_pad(x_NHWC))
    return jnp.concatenate([self.branch1x1(x_NHWC), b5, b3, pool], axis=-1)


class _InceptionB(nnx.Module):
  """35x35 -> 17x17 reduction."""

  def __init__(self, in_channels: int):
    self.branch3x3 = _ConvBN(in_channels, 384, 3, stride=2)
    self.branch3x3dbl_1 = _ConvBN(in_channels, 64, 1)
    self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x_NHWC)))
    return jnp.concatenate(
        [self.branch3x3(x_NHWC), b3, _max_pool_3x3(x_NHWC, 2, 0)], axis=-1)


class _InceptionC(nnx.Module):
  """17x17 block with factorized 7x7 convolutions."""

  def __init__(self, in_channels: int, channels_7x7: int):
    c7 = channels_7x7
    self.branch1x1 = _ConvBN(in_channels, 192, 1)
    self.branch7x7_1 = _ConvBN(in_channels, c7, 1)
    self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = _ConvBN(in_channels, c7, 1)
    self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = _ConvBN(in_channels, 192, 1)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x_NHWC)))
    b7dbl = x_NHWC
    for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2,
                  self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
      b7dbl = layer(b7dbl)
    pool = self.branch_pool(_avg_pool_3x3_excluding_pad(x_NHWC))
    return jnp.concatenate([self.branch1x1(x_NHWC), b7, b7dbl, pool], axis=-1)


class _InceptionD(nnx.Module):
  """17x17 -> 8x8 reduction."""

  def __init__(self, in_channels: int):
    self.branch3x3_1 = _ConvBN(in_channels, 192, 1)
    self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
    self.branch7x7x3_1 = _ConvBN(in_channels, 192, 1)
    self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    b3 = self.branch3x3_2(self.branch3x3_1(x_NHWC))
    b7 = x_NHWC
    for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3,
                  self.branch7x7x3_4):
      b7 = layer(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x_NHWC, 2, 0)], axis=-1)


class _InceptionE(nnx.Module):
  """8x8 block with split 1x3 / 3x1 heads; `max_pool` for the last one."""

  def __init__(self, in_channels: int, max_pool: bool):
    self.max_pool = max_pool
    self.branch1x1 = _ConvBN(in_channels, 320, 1)
    self.branch3x3_1 = _ConvBN(in_channels, 384, 1)
    self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = _ConvBN(in_channels, 448, 1)
    self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = _ConvBN(in_channels, 192, 1)

  def __call__(self, x_NHWC: jax.Array) -> jax.Array:
    b3 = self.branch3x3_1(x_NHWC)
    b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x_NHWC))
    if self.max_pool:
      pooled = _max_pool_3x3(x_NHWC, 1, 1)
    else:
      pooled = _avg_pool_3x3_excluding_pad(x_NHWC)
    return jnp.concatenate([
        self.branch1x1(x_NHWC),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl),
        self.branch_pool(pooled),
    ], axis=-1)


class InceptionV3(nnx.Module):
  """FID Inception-v3 on normalized 299x299 inputs; weights start at zero.

  Attribute names follow the torch state dict, so `Mixed_6b.branch7x7_2`
  holds `Mixed_6b.branch7x7_2.conv.weight` and its `.bn.*` statistics.
  """

  def __init__(self):
    self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
    self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
    self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
    self.Mixed_5b = _InceptionA(192, pool_features=32)
    self.Mixed_5c = _InceptionA(256, pool_features=64)
    self.Mixed_5d = _InceptionA(288, pool_features=64)
    self.Mixed_6a = _InceptionB(288)
    self.Mixed_6b = _InceptionC(768, channels_7x7=128)
    self.Mixed_6c = _InceptionC(768, channels_7x7=160)
    self.Mixed_6d = _InceptionC(768, channels_7x7=160)
    self.Mixed_6e = _InceptionC(768, channels_7x7=192)
    self.Mixed_7a = _InceptionD(768)
    self.Mixed_7b = _InceptionE(1280, max_pool=False)
    self.Mixed_7c = _InceptionE(2048, max_pool=True)
    self.fc_kernel = nnx.Param(np.zeros((2048, NUM_CLASSES), np.float32))
    self.fc_bias = nnx.Param(np.zeros((NUM_CLASSES,), np.float32))

  def __call__(self, x_NHWC: jax.Array) -> dict[str, jax.Array]:
    """Maps [N, 299, 299, 3] inputs in [-1, 1) to pool3 and logits."""
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x_NHWC)))
    x = _max_pool_3x3(x, 2, 0)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = _max_pool_3x3(x, 2, 0)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                  self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
                  self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
      x = block(x)
    pool3_NC = jnp.mean(x, axis=(1, 2))
    unbiased_NK = jnp.dot(pool3_NC, self.fc_kernel[...],
                          precision=lax.Precision.HIGHEST)
    return {"features": pool3_NC, "logits_unbiased": unbiased_NK,
            "logits": unbiased_NK + self.fc_bias[...][None, :]}


def _conv_bn_layers(model: InceptionV3) -> dict[str, _ConvBN]:
  return {".".join(map(str, path)): node
          for path, node in nnx.iter_graph(model)
          if isinstance(node, _ConvBN)}


def load_torch_state_dict(model: InceptionV3, state_dict: dict[str, np.ndarray],
                          source: str = "state dict") -> None:
  """Copies a torch-fidelity / pytorch-fid state dict into `model`.

  Conv weights go from OIHW to HWIO, the fc weight is transposed, and the
  `bn.num_batches_tracked` counters are ignored.

  Raises:
    UserError: a key is missing or unexpected, or a shape does not match.
  """
  targets = {}
  for prefix, layer in _conv_bn_layers(model).items():
    kh, kw, cin, cout = layer.kernel_HWIO.shape
    targets[f"{prefix}.conv.weight"] = (layer.kernel_HWIO, (cout, cin, kh, kw),
                                        lambda w: w.transpose(2, 3, 1, 0))
    for name, var in (("weight", layer.bn_scale), ("bias", layer.bn_bias),
                      ("running_mean", layer.bn_mean),
                      ("running_var", layer.bn_var)):
      targets[f"{prefix}.bn.{name}"] = (var, var.shape, None)
  targets["fc.weight"] = (model.fc_kernel, (NUM_CLASSES, 2048), np.transpose)
  targets["fc.bias"] = (model.fc_bias, (NUM_CLASSES,), None)
  ignored = {f"{p}.bn.num_batches_tracked" for p in _conv_bn_layers(model)}

  for key in state_dict:
    if key not in targets and key not in ignored:
      raise UserError(f"{source}: unexpected key {key!r}; expected the FID "
                      f"Inception-v3 state dict ({WEIGHTS_FILE})")
  for key, (var, torch_shape, transform) in targets.items():
    if key not in state_dict:
      raise UserError(f"{source}: missing key {key!r}; expected the FID "
                      f"Inception-v3 state dict ({WEIGHTS_FILE})")
    value = np.asarray(state_dict[key])
    if value.shape != tuple(torch_shape):
      raise UserError(f"{source}: key {key!r} has shape {value.shape}, "
                      f"expected {tuple(torch_shape)}")
    value = value.astype(np.float32)
    var.set_value(transform(value) if transform else value)


def _tf1_bilinear_taps(n_in: int, n_out: int):
  """Source rows (low, high) and weights of TF1's align_corners=False resize."""
  coords = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
  low = coords.astype(np.int32)
  high = np.minimum(low + 1, n_in - 1)
  return low, high, coords - low.astype(np.float32)


def resize_bilinear_tf1(x_NHWC: jax.Array, out_h: int, out_w: int) -> jax.Array:
  """TensorFlow 1.x `resize_bilinear` (align_corners=False) in float32."""
  _, h, w, _ = x_NHWC.shape
  y_lo, y_hi, dy = _tf1_bilinear_taps(h, out_h)
  x_lo, x_hi, dx = _tf1_bilinear_taps(w, out_w)
  top, bottom = x_NHWC[:, y_lo], x_NHWC[:, y_hi]
  dx_11W1 = dx[None, None, :, None]
  top_left, bottom_left = top[:, :, x_lo], bottom[:, :, x_lo]
  upper = top_left + (top[:, :, x_hi] - top_left) * dx_11W1
  lower = bottom_left + (bottom[:, :, x_hi] - bottom_left) * dx_11W1
  return upper + (lower - upper) * dy[None, :, None, None]


@jax.jit
def _preprocess(images_NHWC: jax.Array) -> jax.Array:
  """uint8 [N, H, W, 3] -> float32 [N, 299, 299, 3] in [-1, 1)."""
  x = images_NHWC.astype(jnp.float32)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = resize_bilinear_tf1(x, INPUT_SIZE, INPUT_SIZE)
  return (x - 128.0) / 128.0


def to_uint8_rgb(images_NHWC) -> np.ndarray:
  """uint8 as is; floats in [0, 1] -> round(clip(x, 0, 1) * 255); C=1 -> 3."""
  images = np.asarray(images_NHWC)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected images [N, H, W, 1 or 3], got {images.shape}")
  if np.issubdtype(images.dtype, np.floating):
    if not np.all(np.isfinite(images)):
      raise ValueError("images contain NaN or infinity")
    images = np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0)
    images = images.astype(np.uint8)
  elif images.dtype != np.uint8:
    raise ValueError(f"expected uint8 or float images, got {images.dtype}")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


class InceptionV3Features:
  """pool3 features and logits of the FID Inception-v3, as torch-fidelity.

  Float images in [0, 1] are first put on the uint8 grid (round(x * 255)
  after clipping), so that real images give exactly the features, and hence
  the FID, of the reference implementations, which all read 8-bit pixels.
  """

  name = "inception_v3"
  feature_dim = 2048

  def __init__(self, weights_path: str, batch_size: int = 100):
    """Loads `pt_inception-2015-12-05-6726825d.pth` (no torch needed).

    Raises:
      UserError: the file is missing, unreadable or not these weights.
    """
    hint = (f"supply {WEIGHTS_FILE}, the FID Inception-v3 weights that "
            f"pytorch-fid and torch-fidelity ship ({WEIGHTS_URL})")
    if not os.path.isfile(weights_path):
      raise UserError(f"Inception weights file {weights_path!r} not found: "
                      f"{hint}")
    try:
      state_dict = torch_files.load_state_dict(weights_path)
    except (OSError, torch_files.TorchFileError) as e:
      raise UserError(f"cannot read Inception weights {weights_path!r} ({e}): "
                      f"{hint}") from e
    self._setup(state_dict, batch_size, source=weights_path)

  @classmethod
  def from_state_dict(cls, state_dict: dict[str, np.ndarray],
                      batch_size: int = 100) -> "InceptionV3Features":
    """Builds the extractor from a torch-named dict of numpy arrays."""
    self = cls.__new__(cls)
    self._setup(state_dict, batch_size, source="state dict")
    return self

  def _setup(self, state_dict, batch_size: int, source: str) -> None:
    if batch_size < 1:
      raise UserError(f"batch_size must be positive, got {batch_size}")
    self.batch_size = batch_size
    model = InceptionV3()
    load_torch_state_dict(model, state_dict, source)
    graphdef, state = nnx.split(model)
    self._state = jax.device_put(jax.tree.map(jnp.asarray, state))

    def network(state, x_NHWC):
      return nnx.merge(graphdef, state)(x_NHWC)

    self._network = jax.jit(network)

  def __call__(self, images_NHWC) -> dict[str, np.ndarray]:
    """Runs the network in batches of `batch_size` (the last one padded).

    Args:
      images_NHWC: [N, H, W, C] uint8 in 0..255 or float in [0, 1], C in
        {1, 3}, any H and W.

    Returns:
      'features': [N, 2048] float32 pool3; 'logits': [N, 1008] float32 fc
      outputs; 'logits_unbiased': the same without the fc bias, the input
      torch-fidelity (and the original IS code) feeds to the Inception Score.
    """
    images = to_uint8_rgb(images_NHWC)
    n, bs = images.shape[0], self.batch_size
    chunks = []
    for start in range(0, n, bs):
      batch = images[start:start + bs]
      if len(batch) < bs:
        pad = np.zeros((bs - len(batch),) + batch.shape[1:], np.uint8)
        batch = np.concatenate([batch, pad])
      chunks.append(self._network(self._state, _preprocess(batch)))
    sizes = {"features": self.feature_dim, "logits": NUM_CLASSES,
             "logits_unbiased": NUM_CLASSES}
    return {
        k: (np.concatenate([np.asarray(c[k]) for c in chunks])[:n]
            if chunks else np.zeros((0, d), np.float32))
        for k, d in sizes.items()}


def inception_score(logits_NK: np.ndarray, splits: int = 10, *,
                    shuffle_seed: int | None = 2020) -> tuple[float, float]:
  """Inception Score (mean, std over splits) as torch-fidelity computes it.

  In float64 over all K classes: p = softmax(logits), then per split
  exp(mean_n KL(p_n || mean_split p)); the std is the population std. To
  reproduce torch-fidelity's and the original IS numbers pass the
  'logits_unbiased' output (fc without bias) of `InceptionV3Features`.

  Args:
    logits_NK: [N, K] logits, N >= splits.
    splits: number of contiguous splits (sizes differ by at most one).
    shuffle_seed: rows are first permuted by
      `np.random.RandomState(shuffle_seed).permutation(N)` (torch-fidelity's
      default seed is 2020); None keeps the given order.
  """
  logits = np.asarray(logits_NK, np.float64)
  if logits.ndim != 2:
    raise ValueError(f"expected logits [N, K], got shape {logits.shape}")
  n = logits.shape[0]
  if not 1 <= splits <= n:
    raise ValueError(f"need 1 <= splits <= N, got splits={splits}, N={n}")
  if shuffle_seed is not None:
    logits = logits[np.random.RandomState(shuffle_seed).permutation(n)]
  shifted = logits - logits.max(axis=1, keepdims=True)
  exp = np.exp(shifted)
  total = exp.sum(axis=1, keepdims=True)
  p_NK = exp / total
  log_p_NK = shifted - np.log(total)
  scores = []
  for i in range(splits):
    lo, hi = i * n // splits, (i + 1) * n // splits
    q_1K = p_NK[lo:hi].mean(axis=0, keepdims=True)
    kl_N = np.sum(p_NK[lo:hi] * (log_p_NK[lo:hi] - np.log(q_1K)), axis=1)
    scores.append(np.exp(kl_N.mean()))
  return float(np.mean(scores)), float(np.std(scores))
