"""The order in which training examples are visited, laid out so any device or process split works.

The training set of N examples is cut into B contiguous blocks, B = the global batch size: block j
holds rows [floor(j N / B), floor((j + 1) N / B)). Each epoch every block is shuffled on its own
(key `fold_in(fold_in(data_key, epoch), j)`), and batch b takes the b-th example of every block's
order: position j of every batch comes from block j. An epoch has floor(N / B) steps and visits each
example at most once; a block with one row more than that skips a different row each epoch.

Why blocks instead of one permutation of all N: a device (or process) that holds positions
[j0, j1) of the global batch needs only blocks [j0, j1), one contiguous slice of the data. So the
data set is split over devices and processes, every batch is gathered where it lives, and the
batches are the same numbers whether one device or eight hold them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from elbo_jax import xla


def block_bounds(n: int, num_blocks: int) -> np.ndarray:
  """[num_blocks + 1] row offsets: block j is rows bounds[j]:bounds[j + 1]."""
  return np.arange(num_blocks + 1, dtype=np.int64) * n // num_blocks


def to_blocks(x: np.ndarray, bounds: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows of x cut into blocks, padded to steps + 1 rows: ([num_blocks, steps + 1, ...], sizes).

  x: [N, ...]; bounds: [num_blocks + 1] offsets into x (`block_bounds`, or a slice of it shifted
  to start at 0 when x holds only some blocks); steps: floor(N_all / B), the steps per epoch of
  the whole set, so every process pads to the same shape. Padding rows repeat the block's last row
  and are never selected by `epoch_order`. sizes: [num_blocks] int32.
  """
  sizes = np.diff(bounds)
  length = steps + 1
  idx = np.minimum(bounds[:-1, None] + np.arange(length), bounds[1:, None] - 1)
  return x[idx], sizes.astype(np.int32)


def epoch_order(data_key, epoch, sizes, steps: int):
  """Each block's visiting order for one epoch: [num_blocks, steps] row indices within blocks.

  sizes: [num_blocks] rows per block, each `steps` or `steps + 1`.
  """
  epoch_key = jax.random.fold_in(data_key, epoch)
  length = steps + 1  # every block has `steps` or `steps + 1` rows

  def one(block, size):
    u = jax.random.uniform(xla.fast_key(jax.random.fold_in(epoch_key, block)), (length,))
    # Padding rows sort last, so the first `steps` entries are real rows.
    u = jnp.where(jnp.arange(length) < size, u, 2.0)
    return jnp.argsort(u)[:steps].astype(jnp.int32)

  return jax.vmap(one)(jnp.arange(sizes.shape[0]), sizes)


def gather_batch(blocks, order, b):
  """Batch b: blocks [B, M, ...], order [B, steps] -> [B, ...], row order[j, b] of block j."""
  return jax.vmap(lambda block, i: block[i])(blocks, order[:, b])


def block_mean(blocks, sizes):
  """The mean example of the training set: blocks [B, M, ...] (`to_blocks`), sizes [B] -> [...].

  Padding rows are left out, so this is the mean of the N rows exactly. Jitted on a `blocks` array
  sharded over devices and processes, the sum is XLA's reduction across all of them: every
  process gets the mean of the whole set, not of the rows it holds.
  """
  valid = jnp.arange(blocks.shape[1]) < sizes[:, None]  # [B, M]
  valid = valid.reshape(valid.shape + (1,) * (blocks.ndim - 2))
  total = jnp.where(valid, blocks, 0).sum((0, 1), dtype=jnp.float32)
  return total / sizes.sum().astype(jnp.float32)
