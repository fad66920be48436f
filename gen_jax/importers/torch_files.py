"""Reads PyTorch `.pth` state dicts as numpy arrays, without importing torch.

Two on-disk layouts are understood:

* the zip archive `torch.save` writes since PyTorch 1.6: `<dir>/data.pkl` is a
  pickle whose persistent ids name raw storages stored as `<dir>/data/<key>`;
* the older single-stream layout (`_use_new_zipfile_serialization=False`): a
  magic number, a protocol version, system info, the main pickle, the list of
  storage keys, then each storage as an int64 element count and raw bytes.

The unpickler is restricted: it rebuilds `OrderedDict`s, plain tensors and
parameters and refuses every other global, so loading a file runs no code.
"""

import collections
import dataclasses
import io
import pickle
import zipfile
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "ComplexDoubleStorage": np.dtype(np.complex128),
    "ComplexFloatStorage": np.dtype(np.complex64),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class TorchFileError(ValueError):
  """The file is not a state dict this reader can rebuild."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str
  dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _StorageRef:
  """A storage known by key; its bytes may arrive after the pickle."""
  key: str
  dtype: np.dtype
  numel: int
  offset: int = 0


@dataclasses.dataclass(frozen=True)
class _PendingTensor:
  storage: _StorageRef
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _StorageRef):
    raise TorchFileError(f"tensor rebuilt from {type(storage).__name__}, "
                         "expected a storage")
  return _PendingTensor(storage, int(storage_offset), tuple(map(int, size)),
                        tuple(map(int, stride)))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
  del requires_grad, backward_hooks
  return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Rebuilds tensors as `_PendingTensor`s; refuses any other global."""

  def __init__(self, file: BinaryIO, legacy: bool):
    super().__init__(file, encoding="utf-8")
    self._legacy = legacy
    self.storages: dict[str, _StorageRef] = {}

  def find_class(self, module: str, name: str) -> Any:
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name, _STORAGE_DTYPES[name])
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    raise TorchFileError(f"unsupported object {module}.{name} in the pickle "
                         "(only state dicts of plain tensors can be read)")

  def persistent_load(self, pid: Any) -> Any:
    if not isinstance(pid, tuple) or not pid:
      raise TorchFileError(f"unsupported persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage":
      raise TorchFileError(f"unsupported persistent id kind {kind!r}")
    if self._legacy:
      storage_type, key, _, numel, view = pid[1:]
    else:
      (storage_type, key, _, numel), view = pid[1:], None
    if not isinstance(storage_type, _StorageType):
      raise TorchFileError(f"unsupported storage type {storage_type!r}")
    key = str(key)
    ref = self.storages.setdefault(
        key, _StorageRef(key, storage_type.dtype, int(numel)))
    if view is not None:
      _, view_offset, view_numel = view
      if view_offset + view_numel > ref.numel:
        raise TorchFileError(f"storage view outside storage {key}")
      return _StorageRef(key, ref.dtype, int(view_numel),
                         ref.offset + int(view_offset))
    return ref


def _materialize(pending: _PendingTensor,
                 buffers: dict[str, np.ndarray]) -> np.ndarray:
  """Copies a strided view of a storage buffer into a fresh array."""
  ref = pending.storage
  flat = buffers[ref.key][ref.offset:ref.offset + ref.numel]
  if any(s < 0 for s in pending.stride) or pending.offset < 0:
    raise TorchFileError("negative strides or offsets are not supported")
  if 0 in pending.shape:
    return np.zeros(pending.shape, flat.dtype)
  last = pending.offset + sum(
      (n - 1) * s for n, s in zip(pending.shape, pending.stride))
  if last >= flat.size:
    raise TorchFileError(f"tensor of shape {pending.shape} reaches past the "
                         f"end of storage {ref.key} ({flat.size} elements)")
  view = np.lib.stride_tricks.as_strided(
      flat[pending.offset:], shape=pending.shape,
      strides=tuple(s * flat.itemsize for s in pending.stride), writeable=False)
  return np.array(view, copy=True)


def _resolve(obj: Any, buffers: dict[str, np.ndarray]) -> Any:
  if isinstance(obj, _PendingTensor):
    return _materialize(obj, buffers)
  if isinstance(obj, dict):
    return type(obj)((k, _resolve(v, buffers)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, buffers) for v in obj)
  if isinstance(obj, _StorageRef):
    raise TorchFileError("bare storages outside tensors are not supported")
  return obj


def _buffer(raw: bytes, dtype: np.dtype, numel: int, big_endian: bool,
            key: str) -> np.ndarray:
  if len(raw) != numel * dtype.itemsize:
    raise TorchFileError(f"storage {key} holds {len(raw)} bytes, expected "
                         f"{numel * dtype.itemsize}")
  file_dtype = dtype.newbyteorder(">" if big_endian else "<")
  return np.frombuffer(raw, file_dtype).astype(dtype)


def _load_zip(archive: zipfile.ZipFile) -> Any:
  pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
  if len(pickles) != 1:
    raise TorchFileError("zip archive without exactly one */data.pkl record "
                         "(a TorchScript file or not a torch.save file?)")
  prefix = pickles[0][:-len("data.pkl")]
  big_endian = False
  if prefix + "byteorder" in archive.namelist():
    big_endian = archive.read(prefix + "byteorder").strip() == b"big"
  unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), legacy=False)
  result = unpickler.load()
  buffers = {}
  for key, ref in unpickler.storages.items():
    try:
      raw = archive.read(f"{prefix}data/{key}")
    except KeyError:
      raise TorchFileError(f"storage record data/{key} is missing") from None
    buffers[key] = _buffer(raw, ref.dtype, ref.numel, big_endian, key)
  return _resolve(result, buffers)


def _load_legacy(stream: BinaryIO) -> Any:
  if pickle.load(stream) != _LEGACY_MAGIC:
    raise TorchFileError("neither a zip archive nor a torch.save stream")
  if pickle.load(stream) != _LEGACY_PROTOCOL:
    raise TorchFileError("unsupported torch.save protocol version")
  sys_info = pickle.load(stream)
  big_endian = not sys_info.get("little_endian", True)
  unpickler = _Unpickler(stream, legacy=True)
  result = unpickler.load()
  keys = pickle.load(stream)
  buffers = {}
  for key in map(str, keys):
    ref = unpickler.storages.get(key)
    if ref is None:
      raise TorchFileError(f"storage {key} is listed but never used")
    numel = int.from_bytes(stream.read(8), "big" if big_endian else "little")
    buffers[key] = _buffer(stream.read(numel * ref.dtype.itemsize), ref.dtype,
                           numel, big_endian, key)
  missing = set(unpickler.storages) - set(buffers)
  if missing:
    raise TorchFileError(f"storages {sorted(missing)} have no data")
  return _resolve(result, buffers)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state dict as {name: numpy array}.

  Args:
    path: a `.pth` file written by `torch.save(module.state_dict(), path)`.

  Returns:
    The dict with every tensor copied into a contiguous numpy array of the
    tensor's dtype (bfloat16 as `ml_dtypes.bfloat16`).

  Raises:
    OSError: the file cannot be opened.
    TorchFileError: the file is not a state dict of plain tensors.
  """
  with open(path, "rb") as f:
    try:
      if zipfile.is_zipfile(f):
        f.seek(0)
        with zipfile.ZipFile(f) as archive:
          result = _load_zip(archive)
      else:
        f.seek(0)
        result = _load_legacy(f)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError,
            TypeError, KeyError, IndexError, AttributeError,
            OverflowError) as e:
      if isinstance(e, TorchFileError):
        raise
      raise TorchFileError(f"corrupt or unsupported file: {e}") from e
  if not isinstance(result, dict) or not all(
      isinstance(k, str) and isinstance(v, np.ndarray)
      for k, v in result.items()):
    raise TorchFileError("the file does not hold a flat dict of tensors")
  return dict(result)
