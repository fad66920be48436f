"""Out-of-distribution (OOD) test sets, built offline from what the machine has.

For an anomaly-detection benchmark on models trained on MNIST digits (uint8
[N, 28, 28, 1], white digit in a ~20x20 box centred in 28x28) and on Python
source text. Every set is deterministic for a seed (and, for 'glyphs' and
'other_code', for the fonts and files the machine has).

Image sets (`image_set`), uint8 [num, H, W, C] with the shape of `in_dist`:
  'digits_8x8':    scikit-learn's bundled 8x8 digits (1,797, no download),
                   0..16 scaled to 0..255, upsampled (bilinear) to 20x20 and
                   centred in 28x28 like MNIST;
  'glyphs':        letters and symbols from every TrueType/OpenType font found
                   (system fonts, plus matplotlib's bundled DejaVu fonts),
                   white on black, scaled to fit 20x20 and centred by bounding
                   box;
  'noisy':         in-distribution images + Gaussian noise (std 0.25 * 255),
                   clipped;
  'inverted':      255 - in-distribution images;
  'uniform_noise': independent uniform 0..255 pixels;
  'constant':      one uniform 0..255 value per image.
'digits_8x8' and 'glyphs' are 28x28x1 only; the others take any shape.

Text sets (`text_set`), `num` strings of at most `length` characters, cut at
line boundaries where possible:
  'prose':      English help texts of the standard library (pydoc_data);
  'other_code': C headers, shell and Perl sources found on the machine;
  'shuffled':   in-distribution chunks with their lines (one-line chunks:
                their words) shuffled: same characters, broken structure.

A set draws its items without replacement when it has at least `num` of
them, else with replacement.
"""

import functools
import glob
import importlib.util
import os
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gen_jax.errors import UserError

IMAGE_SETS: tuple[str, ...] = ("digits_8x8", "glyphs", "noisy", "inverted",
                               "uniform_noise", "constant")
TEXT_SETS: tuple[str, ...] = ("prose", "other_code", "shuffled")

_DESCRIPTIONS = {
    "digits_8x8": "scikit-learn 8x8 digits, upsampled to 20x20 in 28x28",
    "glyphs": "letters and symbols rendered from the machine's fonts",
    "noisy": "in-distribution images + Gaussian noise (std 0.25 * 255)",
    "inverted": "in-distribution images inverted (255 - x)",
    "uniform_noise": "uniform random pixels in 0..255",
    "constant": "images of one uniform random value each",
    "prose": "English prose from the Python help texts (pydoc_data)",
    "other_code": "C headers, shell and Perl sources from the machine",
    "shuffled": "in-distribution text with its lines shuffled",
}

MNIST_SHAPE = (28, 28, 1)
BOX = 20  # Side of the box a digit or glyph is scaled into, as in MNIST.
NOISE_STD = 0.25 * 255
GLYPH_CHARS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
               "#$%&@?!+*=<>{}[]()/\\")
_RENDER_SIZE = 48  # Font size glyphs are drawn at before scaling to BOX.
_NOT_A_CHAR = "\U0010fffd"  # Unassigned: draws a font's missing-glyph shape.
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
MAX_CODE_FILES = 300  # Files read for 'other_code', over all languages.
MAX_FILE_BYTES = 64 * 1024  # Read of each file.
_MAX_SCRIPT_HEADS = 600  # /usr/bin files whose first line is read.


def _check_name(name: str, valid: tuple[str, ...], kind: str) -> None:
  if name not in valid:
    raise UserError(f"Unknown {kind} OOD set {name!r}; valid: "
                    f"{', '.join(valid)}.")


def _check_num(num: int) -> None:
  if num < 1:
    raise UserError(f"An OOD set needs num >= 1, got {num}.")


def _pick(rng: np.random.Generator, pool: int, num: int) -> np.ndarray:
  """`num` indices into `pool` items, without replacement when possible."""
  return rng.choice(pool, num, replace=num > pool)


def describe(name: str) -> str:
  """One-line description of the set `name`, for tables."""
  _check_name(name, IMAGE_SETS + TEXT_SETS, "image or text")
  return _DESCRIPTIONS[name]


# ---------------------------------------------------------------- images


def _centre(glyph: np.ndarray) -> np.ndarray:
  """Pastes a uint8 [h, w] (h, w <= BOX) centred into a black 28x28x1."""
  h, w = glyph.shape
  out = np.zeros(MNIST_SHAPE, np.uint8)
  top, left = (MNIST_SHAPE[0] - h) // 2, (MNIST_SHAPE[1] - w) // 2
  out[top:top + h, left:left + w, 0] = glyph
  return out


@functools.lru_cache(maxsize=1)
def _digits_8x8() -> np.ndarray:
  """The 1,797 scikit-learn digits as uint8 [1797, 28, 28, 1]."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  small = np.round(load_digits().images * (255 / 16)).astype(np.uint8)
  big = [np.asarray(Image.fromarray(d).resize(
      (BOX, BOX), Image.Resampling.BILINEAR)) for d in small]
  return np.stack([_centre(d) for d in big])


def font_paths() -> list[str]:
  """TrueType/OpenType fonts on the machine, sorted, then matplotlib's DejaVu
  fonts whose file names are not among them."""
  found = set()
  for root in FONT_DIRS:
    for ext in ("ttf", "otf", "TTF", "OTF"):
      found.update(glob.glob(os.path.join(root, "**", f"*.{ext}"),
                             recursive=True))
  paths = sorted(p for p in found if os.path.isfile(p))
  spec = importlib.util.find_spec("matplotlib")
  if spec is not None and spec.submodule_search_locations:
    mpl = os.path.join(spec.submodule_search_locations[0], "mpl-data", "fonts",
                       "ttf")
    names = {os.path.basename(p) for p in paths}
    paths += sorted(p for p in glob.glob(os.path.join(mpl, "DejaVu*.ttf"))
                    if os.path.basename(p) not in names)
  return paths


@functools.lru_cache(maxsize=None)
def _font(path: str):
  """The font at `path`, or None when PIL cannot load it."""
  try:
    return ImageFont.truetype(path, _RENDER_SIZE)
  except (OSError, ValueError):
    return None


def _draw(font, char: str) -> np.ndarray | None:
  """`char` drawn white on black, cropped to its ink; None if no ink."""
  left, top, right, bottom = font.getbbox(char)
  image = Image.new("L", (right - left + 4, bottom - top + 4), 0)
  ImageDraw.Draw(image).text((2 - left, 2 - top), char, fill=255, font=font)
  box = image.getbbox()
  return None if box is None else np.asarray(image.crop(box))


@functools.lru_cache(maxsize=None)
def _glyph(path: str, char: str) -> np.ndarray | None:
  """`char` in the font at `path` as a 28x28x1 image; None when the font does
  not load, lacks the character (draws its missing-glyph shape) or draws no
  ink."""
  font = _font(path)
  if font is None:
    return None
  try:
    ink = _draw(font, char)
    missing = _draw(font, _NOT_A_CHAR)
  except (OSError, ValueError):
    return None
  if ink is None or (missing is not None and ink.shape == missing.shape and
                     np.array_equal(ink, missing)):
    return None
  h, w = ink.shape
  scale = BOX / max(h, w)
  size = (max(1, min(BOX, round(w * scale))), max(1, min(BOX, round(h * scale))))
  scaled = np.asarray(Image.fromarray(ink).resize(
      size, Image.Resampling.LANCZOS))
  return _centre(scaled) if scaled.any() else None


def _glyphs(num: int, rng: np.random.Generator) -> np.ndarray:
  paths = font_paths()
  if not paths:
    raise UserError(f"No TrueType/OpenType font found (looked in "
                    f"{', '.join(FONT_DIRS)} and matplotlib); install one, "
                    f"e.g. fonts-dejavu-core.")
  pool = [(p, c) for p in paths for c in GLYPH_CHARS]
  out = []
  for i in rng.permutation(len(pool)):
    glyph = _glyph(*pool[i])
    if glyph is not None:
      out.append(glyph)
      if len(out) == num:
        break
  if not out:
    raise UserError(f"None of the {len(paths)} fonts found renders a letter; "
                    f"install one, e.g. fonts-dejavu-core.")
  if len(out) < num:  # Every glyph is in `out`: draw the rest again.
    out += [out[i] for i in rng.integers(0, len(out), num - len(out))]
  return np.stack(out)


def image_set(name: str, in_dist: np.ndarray, num: int,
              seed: int) -> np.ndarray:
  """An OOD image set shaped like `in_dist`.

  Args:
    name: one of IMAGE_SETS.
    in_dist: uint8 [N, H, W, C] in-distribution images; 'noisy' and
      'inverted' transform its rows, the others take only its shape.
    num: number of images.
    seed: seed of numpy.random.default_rng.

  Returns:
    uint8 [num, H, W, C].
  """
  _check_name(name, IMAGE_SETS, "image")
  _check_num(num)
  in_dist = np.asarray(in_dist)
  if in_dist.ndim != 4 or in_dist.dtype != np.uint8:
    raise UserError(f"OOD image sets need uint8 in_dist images [N, H, W, C], "
                    f"got {in_dist.dtype} {in_dist.shape}.")
  shape = in_dist.shape[1:]
  if name in ("digits_8x8", "glyphs") and shape != MNIST_SHAPE:
    raise UserError(f"The OOD set {name!r} is made for 28x28x1 images; got "
                    f"{'x'.join(map(str, shape))} (valid for any shape: "
                    f"noisy, inverted, uniform_noise, constant).")
  if name in ("noisy", "inverted") and not len(in_dist):
    raise UserError(f"The OOD set {name!r} needs at least one in_dist image.")
  rng = np.random.default_rng(seed)
  if name == "digits_8x8":
    digits = _digits_8x8()
    return digits[_pick(rng, len(digits), num)]
  if name == "glyphs":
    return _glyphs(num, rng)
  if name == "noisy":
    images = in_dist[_pick(rng, len(in_dist), num)].astype(np.float64)
    noisy = images + NOISE_STD * rng.standard_normal(images.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
  if name == "inverted":
    return 255 - in_dist[_pick(rng, len(in_dist), num)]
  if name == "uniform_noise":
    return rng.integers(0, 256, (num, *shape), dtype=np.uint8)
  values = rng.integers(0, 256, num, dtype=np.uint8)  # 'constant'
  return np.broadcast_to(values[:, None, None, None], (num, *shape)).copy()


# ---------------------------------------------------------------- text


def _chunks(text: str, length: int) -> list[str]:
  """`text` cut into pieces of at most `length` characters, at line ends
  where possible, else at a space, else anywhere; blank pieces dropped."""
  chunks, current = [], ""
  for line in text.splitlines(keepends=True):
    while len(line) > length:
      if current:
        chunks.append(current)
        current = ""
      cut = line.rfind(" ", 0, length) + 1 or length
      chunks.append(line[:cut])
      line = line[cut:]
    if len(current) + len(line) > length:
      chunks.append(current)
      current = ""
    current += line
  chunks.append(current)
  return [c for c in chunks if c.strip()]


def _pool(texts: list[str], length: int) -> list[str]:
  """The chunks of `texts` of at least length / 2 characters (all chunks if
  none is that long)."""
  chunks = [c for t in texts for c in _chunks(t, length)]
  long = [c for c in chunks if 2 * len(c) >= length]
  return long or chunks


def _prose() -> list[str]:
  try:
    from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError("The 'prose' OOD set needs the standard library's "
                    "pydoc_data, which this Python lacks.") from e
  return [topics[k] for k in sorted(topics)]


def _decode(data: bytes, truncated: bool) -> str | None:
  """UTF-8 text of a source file, None for binary or undecodable data."""
  if b"\0" in data:
    return None
  # A read cut short may end inside a multi-byte character.
  for end in range(len(data), len(data) - (4 if truncated else 1), -1):
    try:
      return data[:end].decode("utf-8")
    except UnicodeDecodeError:
      continue
  return None


def _read(path: str, limit: int = MAX_FILE_BYTES) -> str | None:
  try:
    with open(path, "rb") as f:
      data = f.read(limit + 1)
  except OSError:
    return None
  return _decode(data[:limit], len(data) > limit)


def _interpreter(path: str) -> str | None:
  """'shell' or 'perl' for a script with such a '#!' line, else None."""
  try:
    with open(path, "rb") as f:
      head = f.read(128)
  except OSError:
    return None
  if not head.startswith(b"#!"):
    return None
  words = head[2:].split(b"\n")[0].decode("latin-1").split()
  if words and os.path.basename(words[0]) == "env":
    words = words[1:]
  program = os.path.basename(words[0]) if words else ""
  if re.fullmatch(r"(ba|da|k|z)?sh", program):
    return "shell"
  return "perl" if program.startswith("perl") else None


def _files(patterns: list[str]) -> list[str]:
  """Files matching `patterns`, outside Perl's Unicode data tables."""
  paths = {os.path.realpath(p) for pattern in patterns
           for p in glob.glob(pattern, recursive=True)}
  return sorted(p for p in paths
                if os.path.isfile(p) and "/unicore/" not in p)


def code_files(rng: np.random.Generator) -> dict[str, list[str]]:
  """Up to MAX_CODE_FILES / 3 seeded paths per language: 'c' (headers under
  /usr/include), 'shell' (/etc and /usr/bin scripts), 'perl' (modules and
  /usr/bin scripts)."""
  found = {
      "c": _files(["/usr/include/**/*.h"]),
      "shell": _files(["/etc/*.sh", "/etc/profile.d/*.sh"]),
      "perl": _files([f"{root}/**/*.{ext}" for ext in ("pm", "pl")
                      for root in ("/usr/share/perl*", "/usr/lib/perl*",
                                   "/usr/lib/*/perl*")]),
  }
  scripts = _files(["/usr/bin/*"])
  for i in np.sort(_pick(rng, len(scripts), min(len(scripts),
                                                _MAX_SCRIPT_HEADS))):
    kind = _interpreter(scripts[i])
    if kind is not None:
      found[kind].append(scripts[i])
  per_language = MAX_CODE_FILES // len(found)
  return {k: [paths[i] for i in np.sort(_pick(
      rng, len(paths), min(len(paths), per_language)))] if paths else []
          for k, paths in found.items()}


def _other_code(rng: np.random.Generator) -> list[str]:
  texts = [t for paths in code_files(rng).values() for p in paths
           if (t := _read(p)) is not None]
  if not texts:
    raise UserError("The 'other_code' OOD set found no readable C header "
                    "(/usr/include), shell or Perl source on this machine.")
  return texts


def _shuffle(chunk: str, rng: np.random.Generator) -> str:
  """`chunk` with its lines (one line: its words) in a random order that
  differs from the original whenever they are not all equal."""
  sep = "\n" if "\n" in chunk.rstrip("\n") else " "
  parts = chunk.split(sep)
  order = rng.permutation(len(parts))
  if np.array_equal(order, np.arange(len(parts))):
    order = np.roll(order, 1)
  return sep.join(parts[i] for i in order)


def text_set(name: str, in_dist: list[str], num: int, length: int,
             seed: int) -> list[str]:
  """An OOD text set.

  Args:
    name: one of TEXT_SETS.
    in_dist: held-out in-distribution (Python source) examples; only
      'shuffled' reads them.
    num: number of strings.
    length: most characters of a string; strings are cut at line ends, so
      most are between length / 2 and length long.
    seed: seed of numpy.random.default_rng.

  Returns:
    `num` strings.
  """
  _check_name(name, TEXT_SETS, "text")
  _check_num(num)
  if length < 1:
    raise UserError(f"An OOD text set needs length >= 1, got {length}.")
  rng = np.random.default_rng(seed)
  if name == "prose":
    texts = _prose()
  elif name == "other_code":
    texts = _other_code(rng)
  else:
    texts = list(in_dist)
  pool = _pool(texts, length)
  if not pool:
    raise UserError(f"The OOD set {name!r} has no non-blank text to draw "
                    f"from (in_dist has {len(in_dist)} examples).")
  chunks = [pool[i] for i in _pick(rng, len(pool), num)]
  if name == "shuffled":
    chunks = [_shuffle(c, rng) for c in chunks]
  return chunks


def text_chunks(texts: list[str], num: int, length: int, seed: int
                ) -> list[str]:
  """`num` pieces of `texts` drawn as the text sets draw theirs (cut at line
  ends, at most `length` characters): the in-distribution side of a text
  benchmark."""
  _check_num(num)
  pool = _pool(texts, length)
  if not pool:
    raise UserError("No non-blank text to draw in-distribution pieces from.")
  rng = np.random.default_rng(seed)
  return [pool[i] for i in _pick(rng, len(pool), num)]
