"""Devices and the mesh: which devices a run uses and how its arrays are laid out on them.

The mesh has two axes:
  replica  the vectorised runs of an ablation group (`train.train_group`); size 1 unless
           `accelerator.replica_parallelism` asks to spread replicas over devices;
  data     the global batch, and the blocks of the training set (`elbo_jax.batching`), are split
           along it.
Parameters and optimiser state are replicated over `data`. The config names the GLOBAL batch
size; every random draw is per example, so the numbers do not depend on the number of devices.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from elbo_jax.registry import ConfigError

PLATFORMS = ("auto", "cpu", "gpu", "tpu")


def select_devices(platform: str) -> list:
  """The devices of `accelerator.platform` over all processes; 'auto' takes JAX's default."""
  if platform not in PLATFORMS:
    raise ConfigError(f"accelerator.platform={platform!r} is not known; allowed values: "
                      f"{', '.join(PLATFORMS)}")
  if platform == "auto":
    return jax.devices()
  try:
    return jax.devices(platform)
  except RuntimeError:
    present = sorted({d.platform for d in jax.devices()})
    raise ConfigError(f"accelerator.platform={platform!r} is not present on this machine; "
                      f"present: {', '.join(present)}") from None


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
