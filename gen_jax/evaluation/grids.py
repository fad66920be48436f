"""Sample grids as PNG images."""

import pathlib

import numpy as np
from PIL import Image


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


def save_png(path: str | pathlib.Path, grid_HWC: np.ndarray,
             scale: int = 2) -> None:
  """Saves a [H, W, C] image with values in [0, 1], upscaled `scale` times."""
  array = (np.clip(grid_HWC, 0, 1) * 255).round().astype(np.uint8)
  if array.shape[-1] == 1:
    array = array[..., 0]
  image = Image.fromarray(array)
  if scale > 1:
    image = image.resize((image.width * scale, image.height * scale),
                         Image.NEAREST)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp.png")
  image.save(tmp)
  tmp.replace(path)
