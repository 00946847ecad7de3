"""elbo_jax: per-example ELBO / IWAE objectives and VAE experiments in JAX and Flax.

  import elbo_jax as ej
  vae = ej.VAE(encoder, decoder, likelihood, prior, posterior)
  per_example = ej.elbo(vae)                       # f(params, x, key) -> named terms
  batched = ej.batched(per_example)                # f(params, xs, keys, beta), vmapped and jitted
"""

from elbo_jax import distributions, likelihoods, models, posteriors, priors
from elbo_jax.evaluation import importance_log_likelihood
from elbo_jax.objectives import (
    batched,
    beta_elbo,
    ciwae,
    elbo,
    iwae,
    kl_weight,
    miwae,
    piwae,
    reduce_loss,
)
from elbo_jax.registry import ConfigError
from elbo_jax.vae import VAE
from elbo_jax.version import __version__

__all__ = [
    "VAE", "ConfigError", "batched", "beta_elbo", "ciwae", "distributions", "elbo",
    "importance_log_likelihood", "iwae", "kl_weight", "likelihoods", "miwae", "models", "piwae",
    "posteriors", "priors", "reduce_loss", "__version__",
]
