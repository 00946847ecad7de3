"""elbo_jax.xla: the compiler options change speed, never numbers; unknown options are dropped."""

import jax
import jax.numpy as jnp
import numpy as np

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


def test_fast_random_bits_draw_the_same_numbers_eagerly_and_jitted():
  def draw(key):
    with xla.fast_random_bits():
      return jax.random.normal(key, (3, 5))

  key = jax.random.key(7)
  np.testing.assert_array_equal(draw(key), xla.jit(draw)(key))
  np.testing.assert_array_equal(draw(key), jax.jit(draw)(key))
