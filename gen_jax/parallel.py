"""Devices, meshes and shardings; multi-host start-up.

One `Mesh` over all devices (all on the 'data' axis by default). Batches are
sharded on 'data', parameters replicated unless a family's partition rules say
otherwise; a run on one CPU, a GPU box, a TPU VM or a pod is the same code.
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


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice into one global array per key."""
  sharding = batch_sharding(mesh)
  n = int(np.prod([mesh.shape[a] for a in batch_axes(mesh)]))
  for k, v in local.items():
    if (v.shape[0] * jax.process_count()) % n:
      raise UserError(f"A global batch of {v.shape[0] * jax.process_count()} "
                      f"does not split over {n} devices; choose a multiple.")
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local.items()}


def state_shardings(abstract_state: PyTree, mesh: Mesh,
                    rules: tuple[tuple[str, P], ...] = ()) -> PyTree:
  """NamedShardings for a state: the first rule whose regex matches a leaf's
  path gives its PartitionSpec; everything else is replicated."""
  def spec(path, leaf):
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
    for pattern, pspec in rules:
      if re.search(pattern, name) and len(pspec) <= getattr(leaf, "ndim", 0):
        return NamedSharding(mesh, pspec)
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(spec, abstract_state)


def to_host(tree: PyTree) -> PyTree:
  """Fetches a (possibly sharded, multi-host) pytree to numpy on every process."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)
