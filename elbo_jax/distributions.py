"""Log-densities and KL divergences as small pure functions (no Flax, no state).

Chosen: hand-written jax.numpy. distrax breaks on JAX upgrades through its TFP-on-JAX dependency
and has no autoregressive bijector; TFP's JAX substrate is heavy. These functions are a few lines
each, run inside jit at no cost, and are checked in tests/ against scipy.stats and closed forms.
Conventions: the last axis is the event axis for vectors; leading axes broadcast.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

LOG_2PI = math.log(2.0 * math.pi)


def diag_normal_log_prob(z, mean, log_scale):
  """log N(z; mean, diag(exp(log_scale))^2), summed over the last axis.

  z, mean, log_scale: [..., D] (broadcasting). Returns [...].
  """
  return diag_normal_log_prob_per_dim(z, mean, log_scale).sum(-1)


def diag_normal_log_prob_per_dim(z, mean, log_scale):
  """Per-dimension log N(z_d; mean_d, exp(log_scale_d)^2). Shapes broadcast; returns [..., D]."""
  # (z - mean) * exp(-log_scale) stays finite where exp(log_scale)**2 would overflow.
  u = (z - mean) * jnp.exp(-log_scale)
  return -0.5 * (LOG_2PI + jnp.square(u)) - log_scale


def tril_normal_log_prob(z, mean, scale_tril):
  """log N(z; mean, L L^T) with L lower-triangular, positive diagonal.

  z: [..., D], mean: [D], scale_tril: [D, D]. Returns [...].
  """
  d = mean.shape[-1]
  diff = jnp.reshape(z - mean, (-1, d))
  u = solve_triangular(scale_tril, diff.T, lower=True).T  # L^{-1} (z - mean)
  log_det = jnp.sum(jnp.log(jnp.diagonal(scale_tril)))
  out = -0.5 * (d * LOG_2PI + jnp.sum(jnp.square(u), -1)) - log_det
  return jnp.reshape(out, jnp.broadcast_shapes(z.shape, mean.shape)[:-1])


def kl_diag_normal(mean, log_scale, prior_mean, prior_log_scale):
  """Per-dimension KL(N(mean, s^2) || N(prior_mean, p^2)). Shapes broadcast; returns [..., D]."""
  log_ratio = log_scale - prior_log_scale
  # s^2 / p^2 = exp(2 log_ratio); written via expm1 so it stays accurate when q is close to p.
  return 0.5 * (
      jnp.expm1(2.0 * log_ratio)
      + jnp.square((mean - prior_mean) * jnp.exp(-prior_log_scale))
  ) - log_ratio


def kl_tril_normal_diag_normal(mean, scale_tril, prior_mean, prior_log_scale):
  """KL(N(mean, L L^T) || N(prior_mean, diag(exp(prior_log_scale))^2)).

  mean: [D], scale_tril: [D, D], prior_*: [D]. Returns a scalar.
  """
  inv_p = jnp.exp(-prior_log_scale)
  trace = jnp.sum(jnp.square(scale_tril * inv_p[:, None]))
  maha = jnp.sum(jnp.square((mean - prior_mean) * inv_p))
  log_det_q = 2.0 * jnp.sum(jnp.log(jnp.diagonal(scale_tril)))
  log_det_p = 2.0 * jnp.sum(prior_log_scale)
  return 0.5 * (trace + maha - mean.shape[-1] + log_det_p - log_det_q)
