"""The linear-Gaussian latent model, where evidence, posterior and ELBO are all exact.

  p(z) = N(0, I_D),   p(x | z) = N(W z + b, s^2 I_P),   W: [P, D], b: [P], s > 0 a scalar.

It is the ground truth for checking objectives: log p(x) = ELBO(q) + KL(q || p(z|x)) holds to
rounding error for every Gaussian q, so estimators and fitted encoders can be compared against it.
All functions are pure jax.numpy for ONE example x: [P]; `jax.vmap` them for batches. Covariances
are factored with Cholesky and applied through triangular solves; nothing is explicitly inverted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_factor, cho_solve, solve_triangular

from elbo_jax import distributions


def log_evidence(x, W, b, s):
  """log p(x) = log N(x; b, W W^T + s^2 I).

  x: [P], W: [P, D], b: [P], s: scalar. Returns a scalar.
  """
  cov = W @ W.T + jnp.square(s) * jnp.eye(x.shape[-1], dtype=W.dtype)
  return distributions.tril_normal_log_prob(x, b, jnp.linalg.cholesky(cov))


def true_posterior(x, W, b, s):
  """Exact p(z | x) = N(mean, cov).

  x: [P], W: [P, D], b: [P], s: scalar. Returns mean: [D], cov: [D, D].
  """
  # Precision is (s^2 I + W^T W) / s^2; factoring the bracket keeps its condition number bounded
  # by 1 + |W|^2 / s^2 and never forms 1 / s^2, which matters when the noise is small.
  d = W.shape[-1]
  factor = cho_factor(jnp.square(s) * jnp.eye(d, dtype=W.dtype) + W.T @ W, lower=True)
  mean = cho_solve(factor, W.T @ (x - b))
  cov = jnp.square(s) * cho_solve(factor, jnp.eye(d, dtype=W.dtype))
  # The solve is symmetric only up to rounding; callers take a Cholesky of cov.
  return mean, 0.5 * (cov + cov.T)


def elbo(x, W, b, s, q_mean, q_cov):
  """E_q[log p(x | z)] - KL(q || p(z)) for q = N(q_mean, q_cov), in closed form.

  x: [P], W: [P, D], b: [P], s: scalar, q_mean: [D], q_cov: [D, D]. Returns a scalar.
  """
  p = x.shape[-1]
  q_tril = jnp.linalg.cholesky(q_cov)
  residual = x - W @ q_mean - b
  # E_q |x - W z - b|^2 = |residual|^2 + tr(W S W^T), and tr(W L L^T W^T) = |W L|_F^2.
  sq_error = jnp.sum(jnp.square(residual)) + jnp.sum(jnp.square(W @ q_tril))
  expected_log_lik = -0.5 * (p * (distributions.LOG_2PI + 2.0 * jnp.log(s)) + sq_error / s**2)
  zeros = jnp.zeros_like(q_mean)
  kl_prior = distributions.kl_tril_normal_diag_normal(q_mean, q_tril, zeros, zeros)
  return expected_log_lik - kl_prior


def kl_gaussian(mean1, cov1, mean2, cov2):
  """KL(N(mean1, cov1) || N(mean2, cov2)) for full covariances.

  mean1, mean2: [D], cov1, cov2: [D, D]. Returns a scalar.
  """
  tril1 = jnp.linalg.cholesky(cov1)
  tril2 = jnp.linalg.cholesky(cov2)
  # tr(cov2^{-1} cov1) = |L2^{-1} L1|_F^2 and the Mahalanobis term is |L2^{-1} (m2 - m1)|^2.
  whitened = solve_triangular(tril2, tril1, lower=True)
  whitened_diff = solve_triangular(tril2, mean2 - mean1, lower=True)
  log_det_ratio = 2.0 * jnp.sum(
      jnp.log(jnp.diagonal(tril2)) - jnp.log(jnp.diagonal(tril1))
  )
  return 0.5 * (
      jnp.sum(jnp.square(whitened)) + jnp.sum(jnp.square(whitened_diff))
      - mean1.shape[-1] + log_det_ratio
  )


def random_model(key, D, P):
  """A random, well-conditioned model for tests and demos.

  Returns W: [P, D] with N(0, 1/D) entries (so W z has unit variance per output), b: [P] ~ N(0, I)
  and a scalar s ~ Uniform(0.3, 1.0), small enough that the posterior differs from the prior.
  """
  key_w, key_b, key_s = jax.random.split(key, 3)
  W = jax.random.normal(key_w, (P, D)) / jnp.sqrt(D)
  b = jax.random.normal(key_b, (P,))
  s = jax.random.uniform(key_s, (), minval=0.3, maxval=1.0)
  return W, b, s
