"""Devices, processes and the mesh: which devices a run uses and how its arrays are laid out.

The mesh has two axes:
  replica  the vectorised runs of an ablation group (`train.train_group`); size 1 unless
           `accelerator.replica_parallelism` asks to spread replicas over devices;
  data     the global batch, and the blocks of the training set (`elbo_jax.batching`), are split
           along it.
Parameters and optimiser state are replicated over `data`. The config names the GLOBAL batch
size; every random draw is per example, so the numbers do not depend on the number of devices.

Several processes (hosts, or local processes on one machine) join with `initialize_distributed`
(`jax.distributed.initialize`, XLA's collectives; gloo on CPU) before anything touches a device.
The mesh then spans every device of every process, process by process, so process p's devices
hold one contiguous range of the global batch and of the training blocks.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from elbo_jax.registry import ConfigError, one_of

PLATFORMS = ("auto", "cpu", "gpu", "tpu")
DISTRIBUTED = ("off", "auto", "explicit")
INITIALIZATION_TIMEOUT_SECONDS = 120


def initialize_distributed(cfg) -> None:
  """Joins this process to a multi-process run as `accelerator` (cfg) says; call it first.

  cfg.distributed: "off" (one process), "auto" (`jax.distributed.initialize()` with no
  arguments: it reads Cloud TPU, SLURM, Open MPI and similar environments), or "explicit"
  (cfg.coordinator_address, cfg.num_processes, cfg.process_id, e.g. two processes on loopback).
  """
  one_of("accelerator.distributed", cfg.distributed, DISTRIBUTED)
  if cfg.distributed == "off":
    return
  if cfg.platform in ("auto", "cpu"):
    # CPU devices of different processes talk over gloo; other backends bring their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if cfg.distributed == "explicit":
    if not cfg.coordinator_address or cfg.num_processes < 1 or not (
        0 <= cfg.process_id < cfg.num_processes):
      raise ConfigError(
          "accelerator.distributed='explicit' needs accelerator.coordinator_address (host:port), "
          "accelerator.num_processes >= 1 and 0 <= accelerator.process_id < num_processes; got "
          f"{cfg.coordinator_address!r}, {cfg.num_processes}, {cfg.process_id}")
    kwargs = dict(coordinator_address=cfg.coordinator_address,
                  num_processes=cfg.num_processes, process_id=cfg.process_id)
  try:
    jax.distributed.initialize(initialization_timeout=INITIALIZATION_TIMEOUT_SECONDS, **kwargs)
  except (RuntimeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"jax.distributed.initialize failed for accelerator.distributed="
                      f"{cfg.distributed!r} ({first}); check the coordinator address and that "
                      "every process was started") from None


def select_devices(platform: str, num_devices: int = 0) -> list:
  """The devices of `accelerator.platform` over all processes, ordered process by process; 'auto'
  takes JAX's default backend. num_devices > 0 takes the first that many, which must divide
  evenly over the processes."""
  one_of("accelerator.platform", platform, PLATFORMS)
  try:
    devices = jax.devices() if platform == "auto" else jax.devices(platform)
  except RuntimeError:
    present = sorted({d.platform for d in jax.devices()})
    raise ConfigError(f"accelerator.platform={platform!r} is not present on this machine; "
                      f"present: {', '.join(present)}") from None
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  if num_devices:
    processes = jax.process_count()
    if num_devices > len(devices) or num_devices % processes:
      raise ConfigError(
          f"accelerator.num_devices={num_devices} but {processes} process(es) hold "
          f"{len(devices)} {devices[0].platform} device(s) "
          f"({', '.join(str(d) for d in devices[:8])}{', ...' if len(devices) > 8 else ''}); "
          "ask for at most that many, a multiple of the number of processes")
    per_process = num_devices // processes
    devices = [d for p in range(processes)
               for d in [d for d in devices if d.process_index == p][:per_process]]
  return devices


def make_mesh(devices: list, replica_parallelism: int = 1) -> Mesh:
  """A [replica_parallelism, len(devices) / replica_parallelism] mesh of ("replica", "data")."""
  if len(devices) % replica_parallelism:
    raise ConfigError(f"accelerator.replica_parallelism={replica_parallelism} must divide the "
                      f"number of devices ({len(devices)})")
  grid = np.asarray(devices, dtype=object).reshape(replica_parallelism, -1)
  return Mesh(grid, ("replica", "data"))


def data_size(mesh: Mesh) -> int:
  return mesh.shape["data"]


def sharding(mesh: Mesh, *spec) -> NamedSharding:
  """NamedSharding(mesh, PartitionSpec(*spec)); no spec replicates over the whole mesh."""
  return NamedSharding(mesh, PartitionSpec(*spec))


def process_range(mesh: Mesh, size: int) -> tuple[int, int]:
  """[start, stop) of an axis of `size` split over the mesh's data axis that this process holds."""
  devices = list(mesh.devices.reshape(-1, mesh.shape["data"])[0])
  mine = [i for i, d in enumerate(devices) if d.process_index == jax.process_index()]
  per_device = size // len(devices)
  return mine[0] * per_device, (mine[-1] + 1) * per_device


def is_primary() -> bool:
  """Whether this process writes the files (configs, metrics, results, figures)."""
  return jax.process_index() == 0


def agree(flag: bool) -> bool:
  """Process 0's `flag`, on every process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def gather(a) -> np.ndarray:
  """The whole of a (possibly sharded, multi-process) array as numpy, on every process."""
  if a.is_fully_addressable:
    return np.asarray(a)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def to_host(tree):
  """Replicated (or single-process) arrays to numpy, on every process."""
  return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array)
                      and not a.is_fully_addressable else np.asarray(a), tree)
