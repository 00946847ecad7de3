"""Two stochastic layers (Burda et al. 2015, section 5): x -> z1 -> z2 and z2 -> z1 -> x.

Inference: q(z1, z2 | x) = q(z1 | x) q(z2 | z1).  Generative: p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1).
Every conditional is a diagonal Gaussian whose mean and log-scale come from a tanh MLP; p(z2) is
N(0, I). The latent vector seen by the objectives is z = [z1, z2]: [D1 + D2].

The model implements the protocol of `elbo_jax.vae` (there is no closed-form KL, so
`has_analytic_kl` is False). MNIST sizes from the paper: 784-200-200-100 (z1), 100-100-100-50 (z2).
The networks compute in `dtype` (`accelerator.compute_dtype`); their outputs (Gaussian parameters,
likelihood parameters) are cast to float32 before any density is evaluated or sampled.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from elbo_jax import distributions
from elbo_jax.models.mlp import MLP
from elbo_jax.posteriors import bound_log_scale


class GaussianHead(nn.Module):
  """inputs [..., F] -> {"mean", "log_scale"}: [..., latent], float32.

  An MLP and a linear layer, both computing in `dtype`.
  """

  hidden: tuple
  latent: int
  activation: str = "tanh"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    h = MLP(self.hidden, self.activation, dtype=self.dtype)(inputs)
    out = nn.Dense(2 * self.latent, dtype=self.dtype)(h).astype(jnp.float32)
    mean, log_scale = jnp.split(out, 2, axis=-1)
    # The posteriors' smooth bound, for the same reasons (finite float32 densities, a gradient
    # everywhere).
    return {"mean": mean, "log_scale": bound_log_scale(log_scale)}


class TwoLayerVAE(nn.Module):
  """A VAE with two stochastic layers; every method is written for one example.

  Attributes:
    likelihood: a module from `elbo_jax.likelihoods` (log_prob, mean, sample, param_shape).
    data_shape: the shape of one example x.
    hidden1: hidden units of q(z1|x), and (reversed) of the decoder z1 -> x.
    latent1: D1, the size of z1.
    hidden2: hidden units of q(z2|z1) and of p(z1|z2).
    latent2: D2, the size of z2.
    activation: a name in `models.activations.ACTIVATIONS`.
    dtype: compute dtype of every network; parameters stay float32.
  """

  likelihood: nn.Module
  data_shape: tuple
  hidden1: tuple = (200, 200)
  latent1: int = 100
  hidden2: tuple = (100, 100)
  latent2: int = 50
  activation: str = "tanh"
  dtype: Any = jnp.float32

  # See the protocol in `elbo_jax.vae`: q(z1|x), q(z2|z1) infer; p(z1|z2) and the decoder generate.
  inference_modules = ("q_z1", "q_z2")
  generative_modules = ("p_z1", "decoder_mlp", "decoder_out", "likelihood")
  output_bias_path = ("decoder_out", "bias")  # the likelihood parameters' bias (model.output_bias)

  def setup(self):
    self.q_z1 = GaussianHead(self.hidden1, self.latent1, self.activation, self.dtype)
    self.q_z2 = GaussianHead(self.hidden2, self.latent2, self.activation, self.dtype)
    self.p_z1 = GaussianHead(self.hidden2, self.latent1, self.activation, self.dtype)
    self.decoder_mlp = MLP(tuple(reversed(self.hidden1)), self.activation, dtype=self.dtype)
    self.decoder_out = nn.Dense(math.prod(self.likelihood.param_shape), dtype=self.dtype)

  @property
  def latent_dim(self) -> int:
    return self.latent1 + self.latent2

  # Both layers of q are Gaussian, so q(z1, z2 | x) has a density at any z; their product has no
  # closed-form KL against p(z1|z2) p(z2), nor a closed-form mean of z2.
  has_posterior_density = True
  has_analytic_kl = False

  def __call__(self, x, key):
    """Touches every parameter once (for `init`); returns the single-sample ELBO of x."""
    q = self.encode(x)
    z, log_q = self.sample_posterior(q, key, 1)
    return self.likelihood_log_prob(z, x) + self.prior_log_prob(z) - log_q

  def _split(self, z):
    return z[..., :self.latent1], z[..., self.latent1:]

  def encode(self, x):
    """x [*data_shape] -> parameters of q(z1|x): {"mean", "log_scale"}: [D1].

    q(z2|z1) depends on the sampled z1, so it is evaluated inside the sampling and density methods.
    """
    n = len(self.data_shape)
    return self.q_z1(x.reshape(x.shape[:x.ndim - n] + (-1,)))

  def sample_posterior(self, q, key, num_samples: int):
    """Returns z = [z1, z2]: [S, D1 + D2] and log q(z1|x) + log q(z2|z1): [S]."""
    key1, key2 = jax.random.split(key)
    eps1 = jax.random.normal(key1, (num_samples, self.latent1), q["mean"].dtype)
    z1 = q["mean"] + jnp.exp(q["log_scale"]) * eps1
    q2 = self.q_z2(z1)
    eps2 = jax.random.normal(key2, (num_samples, self.latent2), z1.dtype)
    z2 = q2["mean"] + jnp.exp(q2["log_scale"]) * eps2
    log_q = (distributions.diag_normal_log_prob(z1, q["mean"], q["log_scale"])
             + distributions.diag_normal_log_prob(z2, q2["mean"], q2["log_scale"]))
    return jnp.concatenate([z1, z2], axis=-1), log_q

  def posterior_log_prob(self, z, q):
    """log q(z1|x) + log q(z2|z1) at z: [..., D1 + D2]; returns [...]."""
    z1, z2 = self._split(z)
    q2 = self.q_z2(z1)
    return (distributions.diag_normal_log_prob(z1, q["mean"], q["log_scale"])
            + distributions.diag_normal_log_prob(z2, q2["mean"], q2["log_scale"]))

  def prior_log_prob(self, z):
    """log N(z2; 0, I) + log p(z1|z2) at z: [..., D1 + D2]; returns [...]."""
    z1, z2 = self._split(z)
    p1 = self.p_z1(z2)
    return (distributions.diag_normal_log_prob(z2, 0.0, 0.0)
            + distributions.diag_normal_log_prob(z1, p1["mean"], p1["log_scale"]))

  def decode(self, z):
    """z [..., D1 + D2] -> raw likelihood parameters [..., *param_shape]; only z1 is used."""
    z1, _ = self._split(z)
    out = self.decoder_out(self.decoder_mlp(z1)).astype(jnp.float32)
    return out.reshape(z.shape[:-1] + tuple(self.likelihood.param_shape))

  def likelihood_log_prob(self, z, x):
    return self.likelihood.log_prob(self.decode(z), x)

  def posterior_mean(self, q, key, num_samples: int):
    return self.sample_posterior(q, key, num_samples)[0].mean(0)

  def kl_analytic(self, q):
    raise NotImplementedError("TwoLayerVAE has no closed-form KL; use a Monte Carlo objective")

  def sample_prior(self, key, num_samples: int):
    """Ancestral samples z = [z1, z2]: [n, D1 + D2] with z2 ~ N(0, I), z1 ~ p(z1|z2)."""
    key2, key1 = jax.random.split(key)
    z2 = jax.random.normal(key2, (num_samples, self.latent2))
    p1 = self.p_z1(z2)
    z1 = p1["mean"] + jnp.exp(p1["log_scale"]) * jax.random.normal(key1, p1["mean"].shape)
    return jnp.concatenate([z1, z2], axis=-1)
