"""elbo_jax.xla: the compiler options change speed, never numbers; unknown options are dropped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elbo_jax import xla


def test_options_this_jaxlib_does_not_know_are_dropped(monkeypatch):
  known = dict(xla.CPU_COMPILER_OPTIONS)
  monkeypatch.setattr(xla, "CPU_COMPILER_OPTIONS", {**known, "xla_cpu_no_such_option": ""})
  xla.compiler_options.cache_clear()
  try:
    accepted = xla.compiler_options()
  finally:
    xla.compiler_options.cache_clear()
  assert "xla_cpu_no_such_option" not in accepted
  assert accepted.items() <= known.items()


def test_fast_jit_computes_what_plain_jit_computes():
  def decoder_log_prob(w, z, x):  # a matmul feeding an elementwise reduction, as in evaluation
    logits = jnp.tanh(z @ w[0]) @ w[1]
    return (x * logits - jax.nn.softplus(logits)).sum(-1)

  keys = jax.random.split(jax.random.key(0), 4)
  w = (jax.random.normal(keys[0], (8, 32)), jax.random.normal(keys[1], (32, 64)))
  z = jax.random.normal(keys[2], (500, 8))
  x = jax.random.bernoulli(keys[3], 0.3, (64,)).astype(jnp.float32)
  fast = xla.jit(decoder_log_prob)(w, z, x)
  plain = jax.jit(decoder_log_prob)(w, z, x)
  np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-4)


def _draws(key):
  return {
      "normal [7, 5]": jax.random.normal(key, (7, 5)),
      "normal [3], odd": jax.random.normal(key, (3,)),
      "normal bfloat16": jax.random.normal(key, (9,), jnp.bfloat16),
      "bernoulli [100, 785]": jax.random.bernoulli(key, jnp.linspace(0, 1, 785), (100, 785)),
      "split (2, 5)": jax.random.key_data(jax.random.split(key, (2, 5))),
      "fold_in": jax.random.key_data(jax.random.fold_in(key, 123456)),
      "uint8 bits": jax.random.bits(key, (13,), jnp.uint8),
      "uint16 bits": jax.random.bits(key, (13,), jnp.uint16),
      "vmapped": jax.vmap(lambda k: jax.random.normal(k, (4, 3)))(jax.random.split(key, 6)),
  }


@pytest.mark.slow  # 6 s
def test_the_unrolled_threefry_draws_the_bits_of_jaxs_non_partitionable_threefry():
  def reference(key):
    with jax.threefry_partitionable(False):
      return _draws(key)

  key = jax.random.key(42)
  want = jax.jit(reference)(key)
  for got in (_draws(xla.fast_key(key)), jax.jit(lambda k: _draws(xla.fast_key(k)))(key),
              xla.jit(lambda k: _draws(xla.fast_key(k)))(key),
              _draws(xla.fast_key(jax.random.key_data(key)))):  # a raw uint32 key
    for name in want:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_fast_key_leaves_other_implementations_alone():
  key = jax.random.key(0, impl="rbg")
  assert xla.fast_key(key) is key

