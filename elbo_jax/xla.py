"""How elbo_jax's programs are compiled and draw random bits, chosen for speed on XLA:CPU.

- `fast_key(key)`: the per-example objectives, the evaluation, the epoch order and dynamic
  binarisation draw their random numbers from `fast_key(key)`: the same threefry-2x32 key, under
  a PRNG implementation (`THREEFRY_UNROLLED`) that computes exactly the bits of JAX's threefry
  with its non-partitionable algorithm (`jax.threefry_partitionable(False)`), but with the 20
  rounds written out in jax.numpy. JAX lowers threefry on CPU to a rolled 5-iteration while loop,
  whose per-iteration overhead dominated small draws; unrolled, XLA fuses the hash into one
  vectorised loop (`python -m scripts.bench --draws`, 2 cores: a [100, 784] binarisation 1.8x
  faster, a [100, 50] normal draw 3.3x, and 3.1x / 4.2x against the partitionable default). The
  non-partitionable algorithm itself draws a [100, 784] batch several times faster than JAX's
  partitionable default on XLA:CPU; because the choice is made by the key, not by a global
  setting, the numbers are the same eagerly, under a user's own `jax.jit`, and under `jit` below.
  The partitioner cannot split a non-partitionable draw across devices, so elbo_jax draws per
  example (keys split over the batch, then vmapped) and a batch sharded over devices still draws
  its bits locally.
- `jit`: `jax.jit` with two XLA:CPU options (a jaxlib that does not know one compiles without it):
  - YNNPACK library fusions off (`xla_cpu_experimental_ynn_fusion_type=''`). With them on, XLA
    can fuse the decoder's matmuls and the likelihood's reduction into one YNNPACK graph, which
    ran the K=5000 evaluation up to 5x slower; with the code as it is now, the evaluation is
    about 1.3x faster without them and the training step is no different.
  - Region-based analysis in copy insertion (`xla_cpu_copy_insertion_use_region_analysis`).
    Without it, XLA copied Adam's moments (and other loop-carried state) at every step of the
    scanned training chunk before updating them in place; the training chunk is about 10% faster
    without the copies, and computes bitwise the same numbers.

- `groups(a)`: XLA:CPU computes a sum (or product) over at most 32 elements inside the loop that
  produces them, but rewrites a longer reduction into a separate reduce-window pass, slow and
  reading the whole array again. Summing [..., D] as [..., D / 16, 16] first keeps the long part
  small: the Bernoulli log-likelihood of the K=5000 evaluation became several times cheaper.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.extend.random
import jax.numpy as jnp
import numpy as np
from jax import lax

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "",
                        "xla_cpu_copy_insertion_use_region_analysis": True}


@functools.cache
def compiler_options() -> dict:
  """The options of CPU_COMPILER_OPTIONS this jaxlib accepts ({} where it knows none of them)."""
  accepted = {}
  for name, value in CPU_COMPILER_OPTIONS.items():
    try:
      jax.jit(jnp.negative, compiler_options={name: value}).lower(1.0).compile()
    except RuntimeError:  # jaxlib's "No such compile option"
      continue
    accepted[name] = value
  return accepted


# Threefry-2x32 (Salmon et al. 2011) with 20 rounds, as jax._src.random.threefry2x32 computes it.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x, d: int):
  return lax.shift_left(x, np.uint32(d)) | lax.shift_right_logical(x, np.uint32(32 - d))


def _hash(k1, k2, x1, x2):
  """The threefry-2x32 block cipher of counters (x1, x2) under key (k1, k2), unrolled."""
  ks = (k1, k2, k1 ^ k2 ^ _KEY_PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _ROTATIONS[i % 2]:
      x1 = x1 + x2
      x2 = _rotate_left(x2, r) ^ x1
    x1 = x1 + ks[(i + 1) % 3]
    x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
  return x1, x2


def _threefry_2x32(key, count):
  """jax.extend.random.threefry_2x32: key [2], count uint32 [...] -> uint32 [...]."""
  flat = count.ravel()
  odd = flat.shape[0] % 2
  if odd:
    flat = jnp.concatenate([flat, jnp.zeros((1,), jnp.uint32)])
  out = jnp.concatenate(_hash(key[0], key[1], *jnp.split(flat, 2)))
  return (out[:-1] if odd else out).reshape(count.shape)


def _seed(seed):
  """A key [2] from an integer, as JAX's threefry seeds: (high 32 bits, low 32 bits)."""
  seed = jnp.asarray(seed)
  if seed.dtype.itemsize == 8:
    high = lax.shift_right_logical(seed, jnp.asarray(32, seed.dtype))
    seed = seed & np.asarray(0xFFFFFFFF, seed.dtype)
  else:
    high = jnp.zeros_like(seed)
  return jnp.stack([high.astype(jnp.uint32), seed.astype(jnp.uint32)])


def _split(key, shape):
  return _threefry_2x32(key, lax.iota(jnp.uint32, 2 * math.prod(shape))).reshape(*shape, 2)


def _fold_in(key, data):
  return _threefry_2x32(key, _seed(jnp.asarray(data, jnp.uint32)))


def _random_bits(key, bit_width: int, shape):
  size = math.prod(shape)
  num_words = -(-bit_width * size // 32)
  if num_words >= np.iinfo(np.uint32).max:
    raise NotImplementedError(f"THREEFRY_UNROLLED draws fewer than 2^32 words, not {num_words}")
  bits = _threefry_2x32(key, lax.iota(jnp.uint32, num_words))
  dtype = np.dtype(f"uint{bit_width}")
  if bit_width == 64:
    high, low = (b.astype(dtype) for b in jnp.split(bits, 2))
    bits = lax.shift_left(high, dtype.type(32)) | low
  elif bit_width < 32:  # each word holds 32 / bit_width draws, lowest bits first
    shifts = np.uint32(bit_width) * lax.iota(jnp.uint32, 32 // bit_width)
    bits = lax.shift_right_logical(bits[:, None], shifts[None, :]) & np.uint32(np.iinfo(dtype).max)
    bits = bits.reshape(-1).astype(dtype)[:size]
  return bits.reshape(shape)


THREEFRY_UNROLLED = jax.extend.random.define_prng_impl(
    key_shape=(2,), seed=_seed, split=_split, random_bits=_random_bits, fold_in=_fold_in,
    name="threefry2x32_unrolled", tag="fryu")


def fast_key(key):
  """A threefry key (typed or raw uint32 [..., 2]) as the same key of THREEFRY_UNROLLED; keys of
  other implementations are returned unchanged."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if jax.random.key_impl(key) != "threefry2x32":
      return key
    key = jax.random.key_data(key)
  return jax.random.wrap_key_data(key, impl=THREEFRY_UNROLLED)


GROUP_SIZE = 16


def groups(a):
  """a [..., D] -> [..., ceil(D / GROUP_SIZE), GROUP_SIZE], zero-padded (see the module
  docstring)."""
  pad = -a.shape[-1] % GROUP_SIZE
  if pad:
    a = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)])
  return a.reshape(*a.shape[:-1], -1, GROUP_SIZE)


def jit(fn, *, fast: bool = True, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)`, with `fast` under the compiler options above."""
  options = compiler_options() if fast else None
  return jax.jit(fn, compiler_options=options, **jit_kwargs)
