"""Files written whole or not at all, and the reader of `metrics.jsonl`.

Every file the package writes goes first to a hidden temporary name in the
target's directory and is then renamed onto the target with `os.replace`
(atomic on POSIX). A run killed at any moment (SIGKILL, a full disk, Ctrl-C)
leaves the previous file or the new one, never a part of one. The temporary
name starts with '.' and ends with '.tmp' (not with the target's suffix), so
no pattern that looks for outputs (`samples/*.png`, `eval_step_*.json`,
`checkpoints/[0-9]*`) matches one that a SIGKILL left behind.

`metrics.jsonl` is the one file appended to in place, a line per row; a kill
can cut short only its last line, which `read_jsonl` skips.
"""

import contextlib
import json
import os
import pathlib
import secrets
from typing import IO, Iterator

from gen_jax.errors import UserError

TMP_SUFFIX = ".tmp"


def temp_path(path: str | os.PathLike) -> pathlib.Path:
  """A fresh hidden name next to `path`, unique per process and call."""
  path = pathlib.Path(path)
  return path.with_name(
      f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path to write; renames it onto `path` on success.

  On any exception (KeyboardInterrupt included) the temporary file is removed
  and `path` keeps its previous content. The parent directory is created.
  The temporary name does not end with `path`'s suffix: a writer that picks
  its format from the name (PIL, np.savez, which appends '.npz') must be
  told the format or given a file from `atomic_open`.

  Args:
    path: the file to write.

  Yields:
    The temporary path, in the same directory.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = temp_path(path)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w",
                encoding: str | None = None) -> Iterator[IO]:
  """`open(path, mode)` for writing, atomically: the file is flushed to disk
  (fsync) and renamed onto `path` when the block ends without an exception.

  Args:
    path: the file to write.
    mode: 'w' (text, UTF-8 unless `encoding`) or 'wb'.
    encoding: of a text file.

  Yields:
    The open temporary file.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', "
                     f"not {mode!r}.")
  if mode == "w":
    encoding = encoding or "utf-8"
  with atomic_path(path) as tmp:
    with open(tmp, mode, encoding=encoding) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str,
               encoding: str = "utf-8") -> None:
  """Writes `text` to `path` atomically."""
  with atomic_open(path, "w", encoding=encoding) as f:
    f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_open(path, "wb") as f:
    f.write(data)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The rows of a JSON-lines file such as `metrics.jsonl`, one dict a line.

  Blank lines are skipped, and so is a last line that is not a JSON object:
  a write cut short by a kill. A bad line anywhere else cannot come from a
  kill, so it is an error.

  Raises:
    UserError: a line other than the last is not a JSON object; names the
      file and the line number.
  """
  lines = pathlib.Path(path).read_text(encoding="utf-8",
                                       errors="replace").split("\n")
  numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
  rows = []
  for k, (number, line) in enumerate(numbered):
    try:
      row = json.loads(line)
      if not isinstance(row, dict):
        raise ValueError(f"a JSON {type(row).__name__}, not an object")
    except ValueError as e:
      if k == len(numbered) - 1:
        break  # cut short by a kill mid-write
      reason = (f"{e.msg} at column {e.colno}"
                if isinstance(e, json.JSONDecodeError) else str(e))
      raise UserError(f"{path}, line {number}: not a JSON object ({reason}); "
                      "only the last line may be cut short. Fix or delete the "
                      "line.") from None
    rows.append(row)
  return rows
