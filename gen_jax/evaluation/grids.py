"""Sample grids as PNG images."""

import pathlib

import numpy as np
from PIL import Image
from PIL import ImageDraw

from gen_jax import files


def make_grid(images_NHWC: np.ndarray, ncols: int | None = None,
              pad: int = 2) -> np.ndarray:
  """Tiles N images (values in [0, 1]) into one [H', W', C] image, row-major."""
  images = np.clip(np.asarray(images_NHWC, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))
  grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c),
                 np.float32)
  for i, image in enumerate(images):
    r, col = divmod(i, ncols)
    top, left = pad + r * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = image
  return grid


# Anchors of a dark-to-bright colour map (black, purple, orange, pale yellow).
_HEAT = np.array([[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.80, 0.26, 0.30],
                  [0.99, 0.65, 0.04], [0.99, 1.0, 0.64]], np.float32)


def label_rows(grid_HWC: np.ndarray, labels: list[str], row_height: int,
               pad: int = 2, char_width: int = 6) -> np.ndarray:
  """A grid from `make_grid` with a white margin on the left holding one
  label per row (black text, PIL's built-in font), vertically centred."""
  h, w, c = grid_HWC.shape
  margin = char_width * max(len(t) for t in labels) + 2 * pad
  canvas = Image.new("L", (margin, h), 255)
  draw = ImageDraw.Draw(canvas)
  for i, text in enumerate(labels):
    top = pad + i * (row_height + pad) + row_height // 2 - 5
    draw.text((pad, top), text, fill=0)
  left = np.asarray(canvas, np.float32)[..., None] / 255.0
  return np.concatenate([np.repeat(left, c, axis=-1), grid_HWC], axis=1)


def heatmap(values_HW: np.ndarray) -> np.ndarray:
  """A non-negative field (e.g. a density on a grid) as an [H, W, 3] picture
  in [0, 1], scaled to its maximum, dark = 0."""
  v = np.asarray(values_HW, np.float64)
  v = np.nan_to_num(v / max(np.nanmax(v), 1e-30), nan=0.0)
  t = np.clip(v, 0.0, 1.0) * (len(_HEAT) - 1)
  i = np.minimum(t.astype(int), len(_HEAT) - 2)
  frac = (t - i)[..., None]
  return ((1 - frac) * _HEAT[i] + frac * _HEAT[i + 1]).astype(np.float32)


def save_png(path: str | pathlib.Path, grid_HWC: np.ndarray,
             scale: int = 2) -> None:
  """Saves a [H, W, C] image with values in [0, 1], upscaled `scale` times
  (atomically)."""
  array = (np.clip(grid_HWC, 0, 1) * 255).round().astype(np.uint8)
  if array.shape[-1] == 1:
    array = array[..., 0]
  image = Image.fromarray(array)
  if scale > 1:
    image = image.resize((image.width * scale, image.height * scale),
                         Image.NEAREST)
  with files.atomic_open(path, "wb") as f:
    image.save(f, format="PNG")


def scatter_image(points_N2: np.ndarray, reference_M2: np.ndarray | None = None,
                  size: int = 256, margin: float = 0.1) -> np.ndarray:
  """A scatter plot of 2-D points as an [size, size, 3] image in [0, 1]:
  `points` in blue over `reference` points (the data) in orange, on a white
  square that spans both (equal axes, y up)."""
  points = np.asarray(points_N2, np.float64)
  both = points if reference_M2 is None else np.concatenate(
      [points, np.asarray(reference_M2, np.float64)])
  lo, hi = both.min(0), both.max(0)
  centre, half = (lo + hi) / 2, np.max(hi - lo) / 2 * (1 + margin) + 1e-9
  image = np.ones((size, size, 3), np.float32)

  def draw(xy, colour, radius):
    px = ((xy - centre) / half * 0.5 + 0.5) * (size - 1)
    cols, rows = np.round(px[:, 0]).astype(int), np.round(
        (size - 1) - px[:, 1]).astype(int)
    for dr in range(-radius, radius + 1):
      for dc in range(-radius, radius + 1):
        r, c = rows + dr, cols + dc
        ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        image[r[ok], c[ok]] = colour

  if reference_M2 is not None:
    draw(np.asarray(reference_M2, np.float64), (1.0, 0.6, 0.1), 1)
  draw(points, (0.1, 0.3, 0.9), 0)
  return image
