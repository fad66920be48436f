"""What `--mode=score` reads: images (an .npz, a folder or one image file)
or texts (.txt, one per line; .jsonl, one JSON string per line).

Rows that cannot be read (a file that is not an image, an empty line, bad
JSON) are kept out and reported with their index; a whole input that
cannot be read (missing, empty, the wrong shape or type) is one error.
"""

import dataclasses
import json
import pathlib

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from gen_jax.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff",
                  ".webp", ".pgm", ".ppm")
TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclasses.dataclass
class Inputs:
  """Readable rows of an input, in order."""
  examples: np.ndarray | list[str]  # uint8 [N, H, W, C], or N strings
  index: np.ndarray  # int [N]: each row's index in the input
  names: list[str]  # each row's file name (a folder) or ''
  bad: list[tuple[int, str]]  # (index, why) of the rows left out
  notes: dict[int, str]  # index -> how the row was converted (resized, ...)


def read(path: str, image_shape: tuple[int, ...] | None) -> Inputs:
  """The rows of `path`: images of `image_shape` [H, W, C], or texts when
  `image_shape` is None (a language model)."""
  if not path:
    raise UserError("--mode=score needs --input=PATH: an .npz of uint8 "
                    "images, a folder of images, or a .txt/.jsonl of texts.")
  p = pathlib.Path(path)
  if not p.exists():
    raise UserError(f"--input={path}: no such file or folder.")
  is_text = p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
  if image_shape is None:
    if not is_text:
      raise UserError(f"--input={path}: this language model scores texts: a "
                      ".txt file (one example per line) or .jsonl (one JSON "
                      "string per line).")
    return _read_texts(p)
  if is_text:
    raise UserError(f"--input={path}: this model scores images of shape "
                    f"{tuple(image_shape)}: give an .npz or image files.")
  if p.is_file() and p.suffix.lower() == ".npz":
    return _read_npz(p, tuple(image_shape))
  files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
  if not files:
    raise UserError(f"--input={path}: the folder is empty; it should hold "
                    f"image files ({', '.join(IMAGE_SUFFIXES)}).")
  return _read_image_files(path, files, tuple(image_shape))


def _read_npz(p: pathlib.Path, shape: tuple[int, int, int]) -> Inputs:
  try:
    with np.load(p, allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
  except (OSError, ValueError) as e:
    raise UserError(f"--input={p}: not a readable .npz ({e}).") from None
  if "images" in arrays:
    images = arrays["images"]
  elif len(arrays) == 1:
    images = next(iter(arrays.values()))
  else:
    raise UserError(f"--input={p}: holds {', '.join(arrays) or 'nothing'}; "
                    "name the images 'images' (or store one array).")
  if images.dtype != np.uint8:
    raise UserError(f"--input={p}: images are {images.dtype}; give uint8 "
                    "pixels 0..255 (e.g. np.round(x * 255).astype(np.uint8)"
                    " for floats in [0, 1]).")
  if images.ndim == 3 and shape[2] == 1:
    images = images[..., None]
  if images.ndim != 4 or images.shape[1:] != shape:
    raise UserError(f"--input={p}: images of shape {images.shape[1:]} (array "
                    f"{images.shape}); this model reads [N, {shape[0]}, "
                    f"{shape[1]}, {shape[2]}].")
  if not len(images):
    raise UserError(f"--input={p}: holds no images.")
  return Inputs(images, np.arange(len(images)), [""] * len(images), [], {})


def _read_image_files(path: str, files: list[pathlib.Path],
                      shape: tuple[int, int, int]) -> Inputs:
  h, w, c = shape
  if c not in (1, 3):
    raise UserError(f"--input={path}: image files become 1 (grey) or 3 "
                    f"(RGB) channels; this model reads {c}.")
  images, index, names, bad, notes = [], [], [], [], {}
  for i, f in enumerate(files):
    try:
      with Image.open(f) as img:
        img.load()
        size = img.size
        img = img.convert("L" if c == 1 else "RGB")
        if size != (w, h):
          img = img.resize((w, h), Image.BILINEAR)
          notes[i] = f"resized from {size[0]}x{size[1]}"
        array = np.asarray(img, np.uint8).reshape(h, w, c)
    except (UnidentifiedImageError, OSError, ValueError) as e:
      bad.append((i, f"{f.name}: not a readable image ({type(e).__name__})"))
      continue
    images.append(array)
    index.append(i)
    names.append(f.name)
  if not images:
    raise UserError(f"--input={path}: none of its {len(files)} files is a "
                    f"readable image (first: {bad[0][1]}).")
  return Inputs(np.stack(images), np.asarray(index), names, bad, notes)


def _read_texts(p: pathlib.Path) -> Inputs:
  try:
    lines = p.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"--input={p}: not a readable UTF-8 text file "
                    f"({type(e).__name__}).") from None
  texts, index, bad = [], [], []
  jsonl = p.suffix.lower() == ".jsonl"
  for i, line in enumerate(lines):
    if jsonl:
      try:
        line = json.loads(line)
      except json.JSONDecodeError as e:
        bad.append((i, f"line {i + 1}: not JSON ({e.msg})"))
        continue
      if isinstance(line, dict):
        line = line.get("text")
      if not isinstance(line, str):
        bad.append((i, f"line {i + 1}: not a string or {{\"text\": ...}}"))
        continue
    if not line:
      bad.append((i, f"line {i + 1}: empty"))
      continue
    texts.append(line)
    index.append(i)
  if not texts:
    raise UserError(f"--input={p}: no text to score ({len(lines)} lines, "
                    "none usable).")
  return Inputs(texts, np.asarray(index), [""] * len(texts), bad, {})
