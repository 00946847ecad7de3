"""Four additions made from outside the library, each in a few lines (docs/extending.md):

  a likelihood with an option   robust_bernoulli, likelihood.epsilon
  an objective                  renyi (Li & Turner 2016), its alpha varying per replica
  an evaluation metric          reconstruction_mse
  an ablation figure            mse_by_cell

Importing this module registers them; `tests/extension/ablation.py` selects them from a config.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from elbo_jax import evaluation, likelihoods, objectives, plots, results
from elbo_jax.ablation_plots import base as figures


@likelihoods.LIKELIHOODS.register("robust_bernoulli")
class RobustBernoulli(likelihoods.Likelihood):
  """A Bernoulli whose probability stays in [epsilon, 1 - epsilon]: p = eps + (1 - 2 eps) sigmoid.
  raw = logits [..., *event_shape]; epsilon = 0 is the Bernoulli."""

  epsilon: float = 0.01
  data_kind = "unit_interval"

  def _probability(self, raw):
    return self.epsilon + (1.0 - 2.0 * self.epsilon) * jax.nn.sigmoid(raw)

  def _log_prob(self, raw, x):
    p = self._flat_event(self._probability(raw))
    x = self._flat_event(x)
    return (x * jnp.log(p) + (1.0 - x) * jnp.log1p(-p)).sum(-1)

  def mean(self, raw):
    return self._probability(raw)

  def sample(self, key, raw):
    return jax.random.bernoulli(key, self._probability(raw)).astype(jnp.float32)


@objectives.register("renyi", traced=("alpha",))
def renyi(model, *, num_samples: int = 5, alpha: float = 0.5):
  """The Rényi (variational Rényi) bound of Li & Turner 2016 with K samples:
  L_alpha = 1 / (1 - alpha) log (1/K) sum_k w_k^(1 - alpha), w_k = p(x, z_k) / q(z_k | x).

  alpha = 0 is IWAE_K; alpha -> 1 the ELBO; it decreases in alpha. `alpha` is traced: replicas of
  one program may each have their own.
  """
  if not 0 <= alpha < 1:
    raise ValueError(f"objective.alpha={alpha!r} must be in [0, 1)")

  def terms_fn(m, x, key, alpha):
    z, log_q = m.sample_posterior(m.encode(x), key, num_samples)  # [K, D], [K]
    log_px_given_z = m.likelihood_log_prob(z, x)
    log_w = log_px_given_z + m.prior_log_prob(z) - log_q
    bound = (jax.nn.logsumexp((1.0 - alpha) * log_w) - math.log(num_samples)) / (1.0 - alpha)
    kl = (log_q - m.prior_log_prob(z)).mean()
    return {"bound": bound, "elbo": log_w.mean(), "log_px_given_z": log_px_given_z.mean(),
            "kl": kl, "loss": -bound, "log_weights": log_w}

  def per_example(params, x, key, beta=1.0, alpha=alpha):
    del beta  # the bound has no KL weight
    return model.apply(params, x, key, alpha, method=terms_fn)

  return per_example


@results.register("reconstruction_mse", label="reconstruction MSE", digits=4)
def reconstruction_mse(test: results.TestSet) -> dict:
  """The mean squared error between each test image and the likelihood's mean at one z ~ q(z|x)."""
  def per_example(params, x, key):
    def error(m, x, key):
      z, _ = m.sample_posterior(m.encode(x), key, 1)
      return jnp.mean((m.likelihood.mean(m.decode(z[0])) - x) ** 2)
    return test.model.apply(params, x, key, method=error)

  errors = evaluation.map_dataset(per_example, test.params, test.x, test.key,
                                  batch_size=test.config.eval.batch_size, mesh=test.mesh)
  return {"reconstruction_mse": float(np.mean(errors))}


@figures.register("mse_by_cell")
def mse_by_cell(ablation, rows, specs, workdir) -> str:
  """Each seed's reconstruction MSE per cell."""
  cells = [c.name for c in figures.cells(specs)]
  fig = Figure(figsize=(4, 3), layout="constrained")
  ax = fig.subplots()
  for i, cell in enumerate(cells):
    values = figures.values(rows, cell, "reconstruction_mse")
    ax.plot(np.full(len(values), i), values, "o")
  ax.set_xticks(range(len(cells)), cells)
  ax.set_ylabel("reconstruction MSE")
  return plots.save_figure(fig, os.path.join(workdir, "mse_by_cell.png"))
