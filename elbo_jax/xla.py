"""How elbo_jax's programs are compiled and draw random bits, chosen for speed on XLA:CPU.

- `fast_random_bits()`: the per-example objectives, the evaluation and dynamic binarisation draw
  their random numbers under threefry's non-partitionable lowering
  (`jax.threefry_partitionable(False)`). On XLA:CPU it draws a [100, 784] batch of bits several
  times faster than JAX's partitionable default, which had made dynamic binarisation alone a sixth
  of a training step. The two lowerings give different (equally random) numbers; because the
  setting is entered inside those functions, they draw the same numbers eagerly, under a user's own
  `jax.jit`, and under `jit` below. The partitioner cannot split a non-partitionable draw across
  devices, so elbo_jax draws per example (keys split over the batch, then vmapped) and a batch
  sharded over devices still draws its bits locally.
- `jit`: `jax.jit` with XLA's YNNPACK library fusions off on CPU
  (`xla_cpu_experimental_ynn_fusion_type=''`). With them on, XLA can fuse the decoder's matmuls
  and the likelihood's reduction into one YNNPACK graph, which ran the K=5000 evaluation up to 5x
  slower; with the code as it is now, the evaluation is about 1.3x faster without them and the
  training step is no different. The option is experimental; a jaxlib that does not know it
  compiles without it.

`python -m scripts.bench` measures both against JAX's defaults in the same process.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp

CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


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


def fast_random_bits():
  """Context in which traced random draws use threefry's non-partitionable lowering."""
  lowering = getattr(jax, "threefry_partitionable", None)
  return contextlib.nullcontext() if lowering is None else lowering(False)


def jit(fn, *, fast: bool = True, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)`, with `fast` under the compiler options above."""
  options = compiler_options() if fast else None
  return jax.jit(fn, compiler_options=options, **jit_kwargs)
