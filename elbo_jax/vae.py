"""The latent-variable model as one Flax module: encoder, posterior, prior, decoder, likelihood.

Every objective in `elbo_jax.objectives` talks to a model only through the methods below (the
"model protocol"), each written for ONE example; batching is `jax.vmap` outside. A model with a
different structure (e.g. `models.hierarchical.TwoLayerVAE`) implements the same methods and every
objective works with it unchanged.

The protocol is `Model` below: x is one example, [*data_shape]; D latents; S samples.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import flax.linen as nn
import jax


@runtime_checkable
class Model(Protocol):
  """What objectives, evaluation and initialisation ask of a latent-variable model.

  Every method is called inside `model.apply` on ONE example; q is a pytree of posterior
  parameters.
  """

  # Names of the top-level submodules (keys of params["params"]) holding q's and p's parameters;
  # `split_params` partitions a params or gradient pytree by them (PIWAE, the gradient SNR).
  inference_modules: tuple[str, ...]
  generative_modules: tuple[str, ...]

  @property
  def latent_dim(self) -> int:
    """D."""

  @property
  def output_bias_path(self) -> tuple[str, ...]:
    """Names in params["params"] of the bias of the raw likelihood parameters, one per value
    (`elbo_jax.initialization.set_output_bias`)."""

  @property
  def has_posterior_density(self) -> bool:
    """Whether `posterior_log_prob` works at any z (STL, DReG, the VampPrior need it)."""

  @property
  def has_analytic_kl(self) -> bool:
    """Whether `kl_analytic` exists."""

  def encode(self, x) -> Any:
    """The posterior's parameters q."""

  def sample_posterior(self, q, key, num_samples: int):
    """z: [S, D] reparameterised draws and their exact log q(z|x): [S] (flows included)."""

  def posterior_log_prob(self, z, q):
    """log q(z|x) at given z: [..., D] -> [...], where `has_posterior_density`."""

  def posterior_mean(self, q, key, num_samples: int):
    """E_q[z]: [D]; exact where q has a closed form, else the mean of `num_samples` draws."""

  def prior_log_prob(self, z):
    """log p(z): [..., D] -> [...]."""

  def likelihood_log_prob(self, z, x):
    """log p(x|z), summed over the data dimensions: [..., D] -> [...]."""

  def kl_analytic(self, q):
    """(KL(q || p), per-dimension KL [D] or None), where `has_analytic_kl`."""

  def decode(self, z):
    """Raw likelihood parameters: [..., D] -> [..., *likelihood.param_shape]."""

  def sample_prior(self, key, num_samples: int):
    """z ~ p(z): [n, D]."""


class VAE(nn.Module):
  """A one-stochastic-layer VAE assembled from interchangeable components.

  Attributes:
    encoder: x [..., *data_shape] -> features h [..., H].
    decoder: z [..., D] -> raw likelihood parameters [..., *likelihood.param_shape].
    likelihood: a module from `elbo_jax.likelihoods` (log_prob, mean, sample).
    prior: a module from `elbo_jax.priors`.
    posterior: a module from `elbo_jax.posteriors`; maps h to the parameters of q(z|x).
  """

  encoder: nn.Module
  decoder: nn.Module
  likelihood: nn.Module
  prior: nn.Module
  posterior: nn.Module

  # VampPrior pseudo-inputs live in the prior, so they are generative even though p(z) evaluates
  # the encoder at them.
  inference_modules = ("encoder", "posterior")
  generative_modules = ("decoder", "likelihood", "prior")

  @property
  def latent_dim(self) -> int:
    return self.posterior.latent_dim

  @property
  def output_bias_path(self) -> tuple:
    """Where the likelihood parameters' bias sits in params["params"] (a per-value bias: the MLP
    decoder's final Dense)."""
    return ("decoder", self.decoder.output_layer, "bias")

  @property
  def has_posterior_density(self) -> bool:
    return self.posterior.has_density

  @property
  def has_analytic_kl(self) -> bool:
    # Closed forms exist for a Gaussian q against a Gaussian p(z); mixtures and flows need Monte
    # Carlo.
    return self.posterior.is_gaussian and self.prior.is_gaussian

  def __call__(self, x, key):
    """Touches every parameter once (for `init`); returns the single-sample ELBO of x."""
    q = self.encode(x)
    z, log_q = self.sample_posterior(q, key, 1)
    return self.likelihood_log_prob(z, x) + self.prior_log_prob(z) - log_q

  def encode(self, x):
    return self.posterior(self.encoder(x))

  def sample_posterior(self, q, key, num_samples: int):
    return self.posterior.sample(q, key, num_samples)

  def posterior_log_prob(self, z, q):
    return self.posterior.log_prob(z, q)

  def prior_log_prob(self, z):
    if not self.prior.mixes_posterior:
      return self.prior.log_prob(z)
    # VampPrior: p(z) = 1/K sum_k q(z | u_k), the encoder's posteriors at the learned pseudo-inputs.
    q_u = self.encode(self.prior.pseudo_inputs())  # leaves: [K, ...]
    log_q_u = self.posterior.log_prob(z[..., None, :], q_u)  # [..., K]
    return jax.nn.logsumexp(log_q_u, axis=-1) - math.log(self.prior.num_pseudo_inputs)

  def decode(self, z):
    return self.decoder(z)

  def likelihood_log_prob(self, z, x):
    return self.likelihood.log_prob(self.decode(z), x)

  def kl_analytic(self, q):
    """Returns (KL(q || p), per-dimension KL or None). Only valid when `has_analytic_kl`."""
    return self.posterior.kl_to_diag_normal(q, *self.prior.gaussian_params())

  def posterior_mean(self, q, key, num_samples: int):
    if self.posterior.is_gaussian:
      return self.posterior.mean(q)
    return self.sample_posterior(q, key, num_samples)[0].mean(0)

  def sample_prior(self, key, num_samples: int):
    if not self.prior.mixes_posterior:
      return self.prior.sample(key, num_samples)
    component_key, sample_key = jax.random.split(key)
    k = jax.random.randint(component_key, (num_samples,), 0, self.prior.num_pseudo_inputs)
    q_u = self.encode(self.prior.pseudo_inputs()[k])  # leaves: [n, ...]
    keys = jax.random.split(sample_key, num_samples)
    # One draw from each chosen component; the sampler is written per example, so map it. A vmap,
    # not a Python loop, which compiled a copy per sample (12 s for 64 samples of a small model).
    return jax.vmap(lambda q, key: self.posterior.sample(q, key, 1)[0][0])(q_u, keys)


def split_params(model, params) -> tuple[dict, dict]:
  """A params (or gradient) pytree -> (inference, generative), by the model's named submodules.

  Both parts keep every collection of `params` and hold only their own top-level submodules;
  `merge_params` undoes the split. A submodule named in neither list is an error, so a new
  component cannot fall silently on one side.
  """
  inference, generative = set(model.inference_modules), set(model.generative_modules)
  parts = ({}, {})
  for collection, tree in params.items():
    unnamed = sorted(set(tree) - inference - generative)
    if unnamed:
      raise ValueError(f"{type(model).__name__} puts the submodules {unnamed} in neither "
                       "inference_modules nor generative_modules")
    parts[0][collection] = {k: v for k, v in tree.items() if k in inference}
    parts[1][collection] = {k: v for k, v in tree.items() if k in generative}
  return parts


def merge_params(inference: dict, generative: dict) -> dict:
  """The params pytree that `split_params` split into `inference` and `generative`."""
  return {collection: inference[collection] | generative[collection] for collection in inference}
