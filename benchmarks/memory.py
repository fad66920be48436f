"""Peak memory of one part of a benchmark that runs several in one process.

On Linux the kernel keeps a resident-set high-water mark per process
(VmHWM) that writing 5 to /proc/self/clear_refs resets to the current
resident size; `Peak` resets it on entry and reads it on exit, so each side
of a comparison gets its own peak, even in one process. Elsewhere the
high-water mark cannot be reset: `Peak` then reports the process's peak so
far (getrusage), marked `resettable=False`.

The figure counts everything resident: the Python interpreter, both
frameworks' libraries and whatever the earlier parts left allocated, so
`start` (the resident size on entry) is reported beside the peak; the growth
`peak - start` is what the part itself added. Device memory (a GPU's) is
reported by each framework: `jax_device_peak` and `torch_device_peak`.
"""

import resource
import sys

GIB = 2**30


def _status_bytes(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024  # kB
  except OSError:
    return None
  return None


def _reset_high_water_mark() -> bool:
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _rusage_peak() -> int:
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == "darwin" else peak * 1024  # bytes / kB


class Peak:
  """with Peak() as p: ...; then p.start, p.peak (bytes), p.resettable."""

  def __enter__(self):
    torch = sys.modules.get("torch")  # the peer's device peak, when on CUDA
    if torch is not None and torch.cuda.is_available():
      torch.cuda.reset_peak_memory_stats()
    self.resettable = _reset_high_water_mark()
    self.start = _status_bytes("VmRSS") or 0
    self.peak = 0
    return self

  def __exit__(self, *exc):
    hwm = _status_bytes("VmHWM") if self.resettable else None
    self.peak = hwm if hwm is not None else _rusage_peak()
    return False

  def as_dict(self) -> dict:
    return {"peak_rss_bytes": self.peak, "start_rss_bytes": self.start,
            "peak_rss_resettable": self.resettable}

  def describe(self) -> str:
    text = f"peak RSS {self.peak / GIB:.2f} GiB"
    if self.resettable:
      text += f" (+{(self.peak - self.start) / GIB:.2f} over its start)"
    else:
      text += " (the process's peak so far: no resettable high-water mark)"
    return text


def jax_device_peak() -> int | None:
  """Peak bytes in use on the first JAX device, where it reports them (GPU,
  TPU; None on CPU): the process's peak so far, which JAX cannot reset."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def torch_device_peak() -> int | None:
  """torch.cuda.max_memory_allocated() on a CUDA device (since the last
  `Peak` began), else None."""
  import torch  # pylint: disable=g-import-not-at-top
  if not torch.cuda.is_available():
    return None
  return torch.cuda.max_memory_allocated()
