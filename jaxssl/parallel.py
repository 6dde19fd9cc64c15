"""Devices: the mesh, shardings, and process-local to global batches.

One data-parallel mesh axis spans every device of every process. The train state is
replicated and the batch is split along its leading axis, so `jax.jit` partitions the step
and every reduction over the batch (losses, BatchNorm statistics) is global.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxssl.errors import UserError

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
  """Joins a multi-process job when the environment describes one (TPU pods, SLURM, a hand-started one).

  On TPU pods and SLURM, `jax.distributed.initialize()` discovers the coordinator (set
  JAXSSL_MULTIHOST=1). Elsewhere, start one process per host with JAX_COORDINATOR_ADDRESS
  (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID. Without any of these a run
  is a single process and needs no set-up.
  """
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address and os.environ.get("JAXSSL_MULTIHOST") != "1":
    return
  kwargs = {}
  for name, key in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
    if os.environ.get(key):
      try:
        kwargs[name] = int(os.environ[key])
      except ValueError:
        raise UserError(f"{key}={os.environ[key]!r} is not an integer; set it to the {name.replace('_', ' ')}.") from None
  jax.distributed.initialize(address, **kwargs)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes), axis name 'data'."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def rows_sharded(mesh: jax.sharding.Mesh, abstract: Any) -> NamedSharding:
  """Splits a [rows, ...] array's rows over the data axis when they divide evenly, else replicates.

  A queue always divides (K % B == 0 and B % devices == 0); a memory bank whose size is not a
  multiple of the device count stays replicated, which costs memory but not correctness.
  """
  if abstract.ndim and abstract.shape[0] % mesh.shape[DATA_AXIS] == 0:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))
  return NamedSharding(mesh, PartitionSpec())


def fully_sharded(mesh: jax.sharding.Mesh, abstract: Any) -> NamedSharding:
  """Splits an array over the data axis along its largest dimension that divides evenly (FSDP);
  one with no such dimension (a scalar, a bias of odd size) stays replicated.

  `jax.jit` then gathers each weight where the step uses it and reduce-scatters its gradient, so
  parameters and optimizer state take 1/devices of the memory on each device.
  """
  devices = mesh.shape[DATA_AXIS]
  splittable = [axis for axis, size in enumerate(abstract.shape) if size % devices == 0 and size >= devices]
  if devices == 1 or not splittable:
    return replicated(mesh)
  axis = max(splittable, key=lambda a: abstract.shape[a])
  return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))


def check_batch_size(global_batch_size: int) -> int:
  """Returns the per-process batch size, or explains which batch sizes are valid."""
  devices, processes = jax.device_count(), jax.process_count()
  if global_batch_size % devices:
    raise UserError(
        f"config.batch_size={global_batch_size} does not split evenly over {devices} devices; "
        f"set it to a multiple of {devices}."
    )
  return global_batch_size // processes


def to_global(batch: Any, sharding: NamedSharding) -> Any:
  """Assembles each process's slice of the batch into global arrays sharded by `sharding`."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)


def from_replicated_host_array(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds in full (evaluation data):
  each process places only the slices its own devices hold."""
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


# Bytes per element of the HLO element types a collective can carry.
_HLO_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
                      "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_COLLECTIVE = re.compile(r"= (?P<shape>.+?) (?P<kind>all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?P<start>-start)?\(")
_ARRAY = re.compile(r"\b(" + "|".join(_HLO_ELEMENT_BYTES) + r")\[([\d,]*)\]")


def collective_bytes(hlo_text: str) -> dict[str, int]:
  """Bytes each kind of collective produces per call of a compiled module, from its HLO text.

  Counts the result of every all-reduce, all-gather, reduce-scatter, collective-permute and
  all-to-all (an async pair once, at its start; a combined collective's tuple in full), so a
  data-parallel step that reduces its gradients once produces about the gradients' bytes.
  """
  moved: dict[str, int] = {}
  for line in hlo_text.splitlines():
    match = _COLLECTIVE.search(line)
    if not match:
      continue
    arrays = [_HLO_ELEMENT_BYTES[t] * math.prod(int(d) for d in dims.split(",") if d) for t, dims in _ARRAY.findall(match["shape"])]
    if match["start"] and match["kind"] != "all-reduce":
      arrays = arrays[1:2]  # an async start returns (operand, result[, contexts]): count the result
    moved[match["kind"]] = moved.get(match["kind"], 0) + sum(arrays)
  return moved
