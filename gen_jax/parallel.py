"""Devices, meshes and shardings; multi-host start-up.

One `Mesh` over all devices (all on the 'data' axis by default). Batches are
sharded over 'data' and 'fsdp'; with an 'fsdp' axis every large state leaf
(parameters, optimizer moments, EMA) is split over it by `fsdp_spec` unless a
family's partition rules say otherwise; a 'model' axis is for families that
split their network (the Transformer's heads and MLP units). A run on one
CPU, a GPU box, a TPU VM or a pod is the same code.
"""

import os
import re
from typing import Any

from absl import logging
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from gen_jax.errors import UserError

PyTree = Any


def initialize_distributed(coordinator_address: str = "",
                           num_processes: int = 0,
                           process_id: int = -1) -> None:
  """Starts the multi-process runtime when there is more than one process.

  With no arguments, `jax.distributed.initialize()` is called only where the
  cluster announces itself (Cloud TPU pods, SLURM, Open MPI, or
  JAX_COORDINATOR_ADDRESS in the environment); a single machine runs as is.
  For processes on one host (tests), pass all three arguments.
  """
  check_process_flags(coordinator_address, num_processes, process_id)
  if coordinator_address:
    # Cross-process collectives for CPU devices; no effect on GPU/TPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes,
                               process_id=process_id)
  elif _cluster_detected():
    jax.distributed.initialize()
  if jax.process_count() > 1:
    logging.info("Process %d of %d; %d local of %d devices.",
                 jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def check_process_flags(coordinator_address: str, num_processes: int,
                        process_id: int) -> None:
  """Refuses main.py's process flags unless all three are given, and
  consistently, or none."""
  if not coordinator_address:
    if num_processes != 0 or process_id != -1:
      raise UserError("--num_processes and --process_id need "
                      "--coordinator_address=HOST:PORT (of process 0).")
    return
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"--coordinator_address={coordinator_address}: expected "
                    "HOST:PORT, e.g. localhost:1234.")
  if num_processes < 1:
    raise UserError(f"--coordinator_address needs --num_processes >= 1, got "
                    f"{num_processes}.")
  if not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id}: must be in 0.."
                    f"{num_processes - 1} (--num_processes={num_processes}).")


def _cluster_detected() -> bool:
  env = os.environ
  return any(k in env for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID",
                                "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")
             ) and int(env.get("SLURM_NTASKS", env.get(
                 "OMPI_COMM_WORLD_SIZE", "2"))) > 1


def make_mesh(config: ml_collections.ConfigDict,
              devices: list[jax.Device] | None = None) -> Mesh:
  """Mesh from `config.mesh` (-1 in the shape takes the remaining devices)."""
  devices = devices if devices is not None else jax.devices()
  shape = list(config.mesh.shape)
  known = int(np.prod([s for s in shape if s != -1]))
  if shape.count(-1) > 1 or len(devices) % known:
    raise UserError(f"--config.mesh.shape={tuple(shape)} does not fit "
                    f"{len(devices)} devices.")
  shape = [len(devices) // known if s == -1 else s for s in shape]
  if int(np.prod(shape)) != len(devices):
    raise UserError(f"--config.mesh.shape={tuple(shape)} does not fit "
                    f"{len(devices)} devices.")
  # Auto axes: shardings of intermediates are left to the compiler, so model
  # code needs no sharding annotations; inputs/outputs are pinned by jit.
  return jax.make_mesh(tuple(shape), tuple(config.mesh.axes), devices=devices,
                       axis_types=(AxisType.Auto,) * len(shape))


def batch_axes(mesh: Mesh) -> tuple[str, ...]:
  """Mesh axes the batch is split over: 'data' and 'fsdp' where present."""
  return tuple(a for a in mesh.axis_names if a in ("data", "fsdp"))


def num_batch_shards(mesh: Mesh) -> int:
  """Devices a batch is split over (the product of the batch axes)."""
  return int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))


def batch_sharding(mesh: Mesh, global_size: int | None = None
                   ) -> NamedSharding:
  """How a batch of `global_size` rows lies: split over the batch axes, or,
  when it does not divide over them on one process, whole on every device
  (`global_batch` says so once)."""
  if global_size is not None and global_size % num_batch_shards(mesh):
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


_WARNED_SIZES: set[tuple[int, int]] = set()


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice into one global array per key.

  A global batch that does not divide over the batch axes (the 100 points of
  a mode-collapse GAN on 8 devices) is given whole to every device on one
  process, with a warning; with several processes it is an error.
  """
  n = num_batch_shards(mesh)
  size = next(iter(local.values())).shape[0] * jax.process_count()
  sharding = batch_sharding(mesh, size)
  if size % n:
    if jax.process_count() > 1:
      raise UserError(f"A global batch of {size} does not split over {n} "
                      "devices; choose a multiple.")
    if (size, n) not in _WARNED_SIZES:
      _WARNED_SIZES.add((size, n))
      logging.warning("A batch of %d does not split over %d devices: every "
                      "device computes all of it. A multiple of %d splits "
                      "the work.", size, n, n)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}


def fsdp_spec(shape: tuple[int, ...], mesh: Mesh, min_size: int = 4096) -> P:
  """The default rule: a leaf split over the 'fsdp' axis along its largest
  dimension divisible by the axis size (ties: the last such dimension);
  replicated without an 'fsdp' axis, below `min_size` elements, or when no
  dimension divides."""
  n = mesh.shape.get("fsdp", 1)
  if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  dims = [d for d, size in enumerate(shape) if size % n == 0]
  if not dims:
    return P()
  best = max(dims, key=lambda d: (shape[d], d))
  return P(*[("fsdp" if d == best else None) for d in range(len(shape))])


def state_shardings(abstract_state: PyTree, mesh: Mesh,
                    rules: tuple[tuple[str, P], ...] = (),
                    fsdp_min_size: int = 4096) -> PyTree:
  """NamedShardings for a state: the first rule whose regex matches a leaf's
  path gives its PartitionSpec; every other leaf follows `fsdp_spec` (leaves
  under `fsdp_min_size` elements replicated: gathering a bias or a norm
  scale costs more than keeping copies of it).

  Rules and the default depend only on a leaf's path and shape, so the
  optimizer moments and the EMA of a parameter lie as the parameter does.
  """
  def spec(path, leaf):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    shape = tuple(getattr(leaf, "shape", ()))
    for pattern, pspec in rules:
      if re.search(pattern, name) and len(pspec) <= len(shape):
        return NamedSharding(mesh, pspec)
    return NamedSharding(mesh, fsdp_spec(shape, mesh, fsdp_min_size))

  return jax.tree_util.tree_map_with_path(spec, abstract_state)


def check_model_axis(mesh: Mesh, model_parallel: bool, family: str) -> None:
  """A 'model' axis of size > 1 needs a family that splits its computation
  over it; anywhere else it would only run the same work twice."""
  if mesh.shape.get("model", 1) > 1 and not model_parallel:
    raise UserError(
        f"--config.mesh.axes: the '{family}' family does not split its "
        f"network over a 'model' axis (size {mesh.shape['model']}); use "
        "'data' and 'fsdp' axes (fsdp shards its parameters).")


def to_host(tree: PyTree) -> PyTree:
  """Fetches a (possibly sharded, multi-host) pytree to numpy on every process."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def put_like(new: PyTree, old: PyTree) -> PyTree:
  """Host arrays `new` laid out like the device arrays `old` (their dtype,
  shape and sharding), e.g. pretrained weights into a fresh train state."""
  def put(n, o):
    n = np.asarray(n, o.dtype)
    return jax.make_array_from_callback(o.shape, o.sharding,
                                        lambda index: n[index])
  return jax.tree.map(put, new, old)
