"""Priors p(z): Flax modules holding any learned prior parameters.

Chosen: hand-written Flax linen modules over the pure functions in `elbo_jax.distributions`, for the
same reasons as `elbo_jax.posteriors` (distrax breaks on JAX upgrades, TFP-on-JAX is heavy, and each
prior is a few lines checked against scipy.stats in tests/test_posteriors_priors.py).

Interface (D latents):
  log_prob(z [..., D]) -> [...]        sample(key, n) -> [n, D]
  gaussian_params() -> (mean [D], log_scale [D])     the two Gaussian priors only
  is_gaussian        True where KL(q || p) has a closed form for a Gaussian q
  mixes_posterior    True only for the VampPrior, whose density is the encoder's posterior averaged
                     over pseudo-inputs; the VAE (elbo_jax.vae) evaluates and samples it.
Learned log-scales pass through `posteriors.bound_log_scale`, so prior and posterior scales share
one range and the closed-form KL stays finite in float32.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from elbo_jax import distributions
from elbo_jax.posteriors import bound_log_scale
from elbo_jax.registry import Registry, positive_int

PRIORS = Registry("prior.name")


def _gaussian_sample(key, n: int, mean, log_scale):
  """n draws [n, D] from N(mean, diag(exp(log_scale))^2), mean and log_scale [D]."""
  eps = jax.random.normal(key, (n, mean.shape[-1]), mean.dtype)
  return mean + jnp.exp(log_scale) * eps


@PRIORS.register("standard_normal")
class StandardNormal(nn.Module):
  """p(z) = N(0, I_D). No parameters.

  Attributes:
    latent_dim: D.
  """

  latent_dim: int
  is_gaussian = True
  mixes_posterior = False

  def gaussian_params(self):
    zeros = jnp.zeros((self.latent_dim,))
    return zeros, zeros

  def log_prob(self, z):
    return distributions.diag_normal_log_prob(z, 0.0, 0.0)

  def sample(self, key, n: int):
    return jax.random.normal(key, (n, self.latent_dim))


@PRIORS.register("learned_gaussian")
class LearnedGaussian(nn.Module):
  """p(z) = N(mean, diag(exp(log_scale))^2) with learned mean and log-scale, initialised to N(0, I).

  Attributes:
    latent_dim: D.
  """

  latent_dim: int
  is_gaussian = True
  mixes_posterior = False

  def setup(self):
    self.mean = self.param("mean", nn.initializers.zeros, (self.latent_dim,))
    self.raw_log_scale = self.param("log_scale", nn.initializers.zeros, (self.latent_dim,))

  def gaussian_params(self):
    return self.mean, bound_log_scale(self.raw_log_scale)

  def log_prob(self, z):
    return distributions.diag_normal_log_prob(z, *self.gaussian_params())

  def sample(self, key, n: int):
    return _gaussian_sample(key, n, *self.gaussian_params())


@PRIORS.register("mog")
class MixtureOfGaussians(nn.Module):
  """p(z) = sum_k pi_k N(mean_k, diag(exp(log_scale_k))^2) with everything learned.

  Means start as N(0, I) draws: identical components would receive identical gradients and never
  separate. Log-scales start at 0 and mixture logits at 0 (uniform weights).
  Attributes:
    latent_dim: D.
    num_components: K.
  """

  latent_dim: int
  num_components: int = 10
  is_gaussian = False
  mixes_posterior = False

  def setup(self):
    positive_int("prior.num_components", self.num_components)
    shape = (self.num_components, self.latent_dim)
    self.means = self.param("means", nn.initializers.normal(1.0), shape)
    self.raw_log_scales = self.param("log_scales", nn.initializers.zeros, shape)
    self.logits = self.param("logits", nn.initializers.zeros, (self.num_components,))

  def components(self):
    """(log_weights [K], means [K, D], log_scales [K, D])."""
    return jax.nn.log_softmax(self.logits), self.means, bound_log_scale(self.raw_log_scales)

  def log_prob(self, z):
    log_weights, means, log_scales = self.components()
    per_component = distributions.diag_normal_log_prob(z[..., None, :], means, log_scales)
    return jax.nn.logsumexp(per_component + log_weights, axis=-1)

  def sample(self, key, n: int):
    log_weights, means, log_scales = self.components()
    component_key, noise_key = jax.random.split(key)
    k = jax.random.categorical(component_key, log_weights, shape=(n,))
    eps = jax.random.normal(noise_key, (n, self.latent_dim), means.dtype)
    return means[k] + jnp.exp(log_scales[k]) * eps


@PRIORS.register("vamp")
class VampPrior(nn.Module):
  """VampPrior (Tomczak & Welling, 2017): p(z) = 1/K sum_k q(z | u_k), u_k learned pseudo-inputs.

  Only the pseudo-inputs live here; the density and sampling need the encoder and posterior, so the
  VAE computes them (`VAE.prior_log_prob`, `VAE.sample_prior`). As in the authors' code the
  pseudo-inputs are a raw parameter passed through a hard-tanh into the data range [0, 1] and
  initialised from N(0.05, 0.01^2), i.e. near-black images that the encoder sees as plausible
  inputs; the hard-tanh is a clip, so a pixel pushed past 0 or 1 stops moving, as in the paper.
  Attributes:
    latent_dim: D.
    num_pseudo_inputs: K.
    data_shape: the shape of one input x.
  """

  latent_dim: int
  num_pseudo_inputs: int = 500
  data_shape: tuple[int, ...] = (28, 28, 1)
  is_gaussian = False
  mixes_posterior = True

  def setup(self):
    positive_int("prior.num_pseudo_inputs", self.num_pseudo_inputs)

    def init(key, shape, dtype=jnp.float32):
      return 0.05 + 0.01 * jax.random.normal(key, shape, dtype)

    self.raw_pseudo_inputs = self.param(
        "pseudo_inputs", init, (self.num_pseudo_inputs, *self.data_shape)
    )

  def pseudo_inputs(self):
    """The K pseudo-inputs [K, *data_shape], in [0, 1]."""
    return jnp.clip(self.raw_pseudo_inputs, 0.0, 1.0)

  def log_prob(self, z):
    raise NotImplementedError(
        "VampPrior.log_prob needs the encoder and posterior; call VAE.prior_log_prob, which "
        "averages q(z | u_k) over the pseudo-inputs"
    )

  def sample(self, key, n: int):
    raise NotImplementedError(
        "VampPrior.sample needs the encoder and posterior; call VAE.sample_prior"
    )
