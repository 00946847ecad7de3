"""Checks the exact linear-Gaussian model against scipy, numpy float64 and the ELBO identity."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from elbo_jax import linear_gaussian as lg

SHAPES = [(1, 1), (2, 5), (5, 3)]  # (D, P); (5, 3) has more latents than observations.
# Jitted once here: eager calls compile each op per shape, which dominates the test time on CPU.
log_evidence = jax.jit(lg.log_evidence)
true_posterior = jax.jit(lg.true_posterior)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _model_and_x(seed, D, P):
  key_model, key_z, key_eps = jax.random.split(jax.random.PRNGKey(seed), 3)
  W, b, s = lg.random_model(key_model, D, P)
  x = W @ jax.random.normal(key_z, (D,)) + b + s * jax.random.normal(key_eps, (P,))
  return W, b, s, x


def _random_q(key, D):
  """A random Gaussian q: mean [D] ~ N(0, I), cov [D, D] = A A^T + 0.1 I."""
  key_m, key_a = jax.random.split(key)
  a = jax.random.normal(key_a, (D, D)) / jnp.sqrt(D)
  return jax.random.normal(key_m, (D,)), a @ a.T + 0.1 * jnp.eye(D)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _random_qs(seed, n, D):
  """n random q's from `_random_q`: means [n, D], covs [n, D, D]."""
  return jax.vmap(_random_q, in_axes=(0, None))(jax.random.split(jax.random.PRNGKey(seed), n), D)


@pytest.mark.parametrize("D,P", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_log_evidence_matches_scipy(seed, D, P):
  W, b, s, x = _model_and_x(seed, D, P)
  W64, b64, s64 = np.asarray(W, np.float64), np.asarray(b, np.float64), float(s)
  expected = stats.multivariate_normal(b64, W64 @ W64.T + s64**2 * np.eye(P)).logpdf(
      np.asarray(x, np.float64)
  )
  np.testing.assert_allclose(log_evidence(x, W, b, s), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("D,P", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_posterior_matches_joint_conditioning(seed, D, P):
  W, b, s, x = _model_and_x(seed, D, P)
  W64, b64, x64, s64 = (np.asarray(a, np.float64) for a in (W, b, x, s))
  # [z; x] is jointly Gaussian with Cov(z, x) = W^T and Cov(x) = W W^T + s^2 I; condition on x.
  cov_x = W64 @ W64.T + s64**2 * np.eye(P)
  gain = np.linalg.solve(cov_x, W64).T  # W^T cov_x^{-1}: [D, P]
  expected_mean = gain @ (x64 - b64)
  expected_cov = np.eye(D) - gain @ W64
  mean, cov = true_posterior(x, W, b, s)
  np.testing.assert_allclose(mean, expected_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(cov, expected_cov, rtol=1e-4, atol=1e-5)


@jax.jit
def _identity_terms(x, W, b, s, q_means, q_covs):
  """ELBO [N], KL(q || p(z|x)) [N] and log p(x) for q_means [N, D], q_covs [N, D, D]."""
  post_mean, post_cov = lg.true_posterior(x, W, b, s)
  elbos = jax.vmap(lg.elbo, in_axes=(None,) * 4 + (0, 0))(x, W, b, s, q_means, q_covs)
  kls = jax.vmap(lg.kl_gaussian, in_axes=(0, 0, None, None))(q_means, q_covs, post_mean, post_cov)
  return elbos, kls, lg.log_evidence(x, W, b, s)


@pytest.mark.parametrize("D,P", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evidence_equals_elbo_plus_kl_float64(seed, D, P):
  # q far from the posterior makes ELBO and KL ~ +-500 each, beyond float32's 1e-4 resolution,
  # so the exact identity is checked in float64 and the float32 path in the test below.
  with jax.enable_x64(True):
    W, b, s, x = _model_and_x(seed, D, P)
    q_means, q_covs = _random_qs(100 + seed, 8, D)
    elbos, kls, log_px = _identity_terms(x, W, b, s, q_means, q_covs)
    assert elbos.dtype == jnp.float64
    np.testing.assert_allclose(elbos + kls, log_px, atol=1e-8, rtol=0)
    assert np.all(elbos < log_px)
    assert np.all(kls > 0.0)


@pytest.mark.parametrize("D,P", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evidence_equals_elbo_plus_kl_float32(seed, D, P):
  W, b, s, x = _model_and_x(seed, D, P)
  post_mean, post_cov = true_posterior(x, W, b, s)
  post_tril = jnp.linalg.cholesky(post_cov)
  # Random q's in the posterior's own coordinates: what an encoder would plausibly output.
  white_means, white_covs = _random_qs(100 + seed, 8, D)
  q_means = post_mean + white_means @ post_tril.T
  q_covs = post_tril @ white_covs @ post_tril.T
  elbos, kls, log_px = _identity_terms(x, W, b, s, q_means, q_covs)
  np.testing.assert_allclose(elbos + kls, log_px, atol=1e-4, rtol=0)
  assert np.all(elbos <= log_px)
  assert np.all(kls >= 0.0)


@pytest.mark.parametrize("D,P", SHAPES)
def test_elbo_is_tight_at_true_posterior(D, P):
  W, b, s, x = _model_and_x(3, D, P)
  post_mean, post_cov = true_posterior(x, W, b, s)
  elbos, kls, log_px = _identity_terms(x, W, b, s, post_mean[None], post_cov[None])
  np.testing.assert_allclose(elbos, log_px, atol=1e-4, rtol=0)
  np.testing.assert_allclose(kls, 0.0, atol=1e-5)


def test_kl_gaussian_matches_numpy_formula():
  key1, key2 = jax.random.split(jax.random.PRNGKey(7))
  m1, c1 = _random_q(key1, 3)
  m2, c2 = _random_q(key2, 3)
  m1, c1, m2, c2 = (np.asarray(a, np.float64) for a in (m1, c1, m2, c2))
  diff = m2 - m1
  expected = 0.5 * (
      np.trace(np.linalg.solve(c2, c1)) + diff @ np.linalg.solve(c2, diff) - 3
      + np.linalg.slogdet(c2)[1] - np.linalg.slogdet(c1)[1]
  )
  np.testing.assert_allclose(lg.kl_gaussian(m1, c1, m2, c2), expected, rtol=1e-5)


def test_jit_and_vmap_over_examples():
  W, b, s, _ = _model_and_x(0, 2, 5)
  xs = jax.random.normal(jax.random.PRNGKey(1), (4, 5))
  batched = jax.jit(jax.vmap(lg.log_evidence, in_axes=(0, None, None, None)))(xs, W, b, s)
  single = jnp.stack([lg.log_evidence(x, W, b, s) for x in xs])
  np.testing.assert_allclose(batched, single, rtol=1e-6)
