"""Rainforth et al. 2018's Gaussian toy ("Tighter variational bounds are not necessarily better",
section 4), where the asymptotics of IWAE's gradient signal-to-noise ratio hold exactly:

  p(z) = N(mu, I_D),  p(x | z) = N(z, I_D),  q(z | x) = N(A x + b, (2/3) I_D),  D = 20,

with N = 1024 data points x_n drawn with mu* ~ N(0, I). The optimum is mu = mean(x) (then
p(x) = N(mu, 2 I)) and A = I / 2, b = mu / 2 (q's mean is then the posterior mean
(x + mu) / 2; q's variance 2/3 stays wrong on purpose, so the weights vary). The SNR is that of
one data point's IWAE_K gradient (`per_point`), at the optimum plus N(0, noise^2) perturbations.
The papers: the reparameterised inference gradient's SNR falls like K^-1/2, the generative one's
rises like K^+1/2 (Rainforth et al.), DReG's inference SNR rises (Tucker et al. 2019).

Everything is jax.numpy; the estimators are `objectives.importance_surrogate`, the ones IWAE trains
with, applied to `Model`, which has the VAE's methods without being a Flax module.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from elbo_jax import distributions, objectives

Q_VARIANCE = 2.0 / 3.0


class Model(NamedTuple):
  """The toy's parameters with the methods `objectives.importance_surrogate` calls.

  A: [D, D], b: [D] (the inference network), mu: [D] (the generative one).
  """

  A: jax.Array
  b: jax.Array
  mu: jax.Array
  has_posterior_density = True  # q is Gaussian: STL and DReG may evaluate it at any z

  def encode(self, x):
    return {"mean": self.A @ x + self.b}

  def sample_posterior(self, q, key, num_samples: int):
    eps = jax.random.normal(key, (num_samples, q["mean"].shape[-1]), q["mean"].dtype)
    z = q["mean"] + math.sqrt(Q_VARIANCE) * eps
    return z, self.posterior_log_prob(z, q)

  def posterior_log_prob(self, z, q):
    return distributions.diag_normal_log_prob(z, q["mean"], 0.5 * math.log(Q_VARIANCE))

  def prior_log_prob(self, z):
    return distributions.diag_normal_log_prob(z, self.mu, 0.0)

  def likelihood_log_prob(self, z, x):
    return distributions.diag_normal_log_prob(x, z, 0.0)


def make_data(key, num_data: int = 1024, dim: int = 20, dtype=jnp.float32):
  """x: [num_data, dim] from mu* ~ N(0, I), z ~ N(mu*, I), x ~ N(z, I)."""
  key_mu, key_z, key_x = jax.random.split(key, 3)
  mu = jax.random.normal(key_mu, (dim,), dtype)
  z = mu + jax.random.normal(key_z, (num_data, dim), dtype)
  return z + jax.random.normal(key_x, (num_data, dim), dtype)


def optimum(x) -> Model:
  """The maximum-likelihood mu and the inference parameters whose q has the posterior's mean."""
  mu = x.mean(0)
  return Model(A=0.5 * jnp.eye(x.shape[-1], dtype=x.dtype), b=0.5 * mu, mu=mu)


def perturb(model: Model, key, noise: float) -> Model:
  """Every parameter plus independent N(0, noise^2)."""
  keys = jax.random.split(key, len(model))
  return Model(*(p + noise * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(model, keys)))


def per_point(params: Model, x):
  """Each of the B points x: [B, D] with its own copy of the parameters (leaves [B, ...]), and the
  rows [B, D + 1] (x, then the point's index) that `per_example` reads.

  The gradient of the batch-mean loss then holds every point's own gradient (times 1/B), so
  `snr.gradient_snr`'s per-parameter SNR is that of ONE data point's gradient, the quantity whose
  rates the papers derive, for every (point, parameter); a batch-mean gradient would instead mix
  in how the points' gradients cancel at the optimum.
  """
  count = x.shape[0]
  copies = Model(*(jnp.broadcast_to(p, (count, *p.shape)) for p in params))
  return copies, jnp.concatenate([x, jnp.arange(count, dtype=x.dtype)[:, None]], axis=1)


def per_example(num_samples: int, estimator: str):
  """f(params, row, key) -> {"loss"}: minus `estimator`'s IWAE(K) surrogate at the point of one
  row of `per_point`, with that point's copy of the parameters; for `snr.gradient_snr`."""
  def f(params, row, key):
    index = row[-1].astype(jnp.int32)
    model = Model(*(p[index] for p in params))
    return {"loss": -objectives.importance_surrogate(model, row[:-1], key, num_samples,
                                                     estimator)}

  return f


def split(params: Model):
  """(inference, generative) = ((A, b), mu), for `snr.gradient_snr`'s split_fn."""
  return (params.A, params.b), params.mu


def fit_slope(num_samples, values) -> float:
  """The least-squares slope of log(values) against log(K); nan unless two positive values."""
  k, v = np.asarray(num_samples, float), np.asarray(values, float)
  keep = np.isfinite(v) & (v > 0)
  if keep.sum() < 2:
    return math.nan
  return float(np.polyfit(np.log(k[keep]), np.log(v[keep]), 1)[0])
