"""Which data a run reads: prepared TFDS data, or the embedded real subset.

`data.source='auto'` decides fast, never waiting on a download that cannot
happen: prepared TFDS array_record files in the data dir win; otherwise, if
TensorFlow is installed (TFDS needs it to *prepare* MNIST) and the TFDS mirror
answers within two seconds, the full dataset is downloaded and prepared; else
the run falls back, with one log line, to the embedded subset.
"""

import importlib.util
import os
import pathlib
import socket

from absl import logging
import tensorflow_datasets as tfds

from gen_jax.data import embedded
from gen_jax.errors import UserError

# Datasets that have an embedded stand-in for offline machines.
EMBEDDED = {"mnist": embedded}
_MIRROR = ("storage.googleapis.com", 443)


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR",
                        os.path.expanduser("~/tensorflow_datasets"))


def is_prepared(name: str, data_dir: str) -> bool:
  """True if `name` is in `data_dir` as array_record files (what Grain reads),
  not counting those in a directory TFDS had not finished (a killed run's)."""
  root = pathlib.Path(data_dir, name)
  return any(
      not any(part.startswith(embedded.INCOMPLETE)
              for part in path.relative_to(root).parts)
      for pattern in ("*/*.array_record*", "*/*/*.array_record*")
      for path in root.glob(pattern))


def _online(timeout: float = 2.0) -> bool:
  try:
    with socket.create_connection(_MIRROR, timeout=timeout):
      return True
  except OSError:
    return False


def _can_prepare() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _in_tfds(name: str) -> bool:
  """Whether TFDS knows the dataset `name` (e.g. 'mnist', 'mnist:3.*.*')."""
  try:
    tfds.builder_cls(name.split(":")[0].split("/")[0])
  except tfds.core.registered.DatasetNotFoundError:
    return False
  return True


def _prepare_tfds(name: str, data_dir: str) -> None:
  tfds.builder(name, data_dir=data_dir).download_and_prepare(
      file_format="array_record")


def how_to_get(name: str, data_dir: str) -> str:
  return (f"For the full '{name}': pip install tensorflow && tfds build {name} "
          f"--data_dir={data_dir} --file_format=array_record")


def resolve(name: str, source: str, data_dir: str) -> tuple[str, str]:
  """Returns (tfds dataset name, data dir) to read, preparing data if needed.

  Args:
    name: the dataset, e.g. 'mnist'.
    source: 'auto' | 'tfds' | 'embedded'.
    data_dir: TFDS data dir ('' for the default).
  """
  data_dir = data_dir or default_data_dir()
  tfds.disable_progress_bar()
  if source in ("auto", "tfds") and is_prepared(name, data_dir):
    return name, data_dir
  if source != "embedded" and name not in EMBEDDED and not _in_tfds(name):
    raise UserError(f"--config.data.name={name}: TFDS has no such dataset, "
                    f"and none is prepared in {data_dir}.")
  if source == "tfds" or (source == "auto" and name not in EMBEDDED):
    if not _can_prepare():
      raise UserError(
          f"TFDS '{name}' is not prepared in {data_dir}, and preparing it "
          f"needs TensorFlow. {how_to_get(name, data_dir)}")
    if not _online():
      raise UserError(f"TFDS '{name}' is not prepared in {data_dir} and its "
                      f"download mirror is unreachable. "
                      f"{how_to_get(name, data_dir)}")
    _prepare_tfds(name, data_dir)
    return name, data_dir
  if source == "auto" and _can_prepare() and _online():
    try:
      _prepare_tfds(name, data_dir)
      return name, data_dir
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("Preparing TFDS '%s' failed (%s); using embedded data.",
                      name, e)
  if name not in EMBEDDED:
    raise UserError(f"data.source=embedded: no embedded data for '{name}'. "
                    f"Valid: {', '.join(EMBEDDED)}.")
  module = EMBEDDED[name]
  try:
    module.prepare(data_dir)
  except OSError as e:
    raise UserError(f"cannot write the embedded '{name}' into the data dir "
                    f"{data_dir} (--config.data.data_dir or $TFDS_DATA_DIR): "
                    f"{e.strerror or e}.") from e
  if source == "auto":
    logging.warning(
        "TFDS '%s' is not available offline in %s: using the embedded real "
        "subset '%s' (4,000 train / 1,000 test digits). %s",
        name, data_dir, module.NAME, how_to_get(name, data_dir))
  return module.NAME, data_dir
