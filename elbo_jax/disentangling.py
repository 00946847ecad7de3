"""Objectives that ask the latents to disentangle: beta-TCVAE, FactorVAE, DIP-VAE and the
capacity-annealed beta-VAE.

beta-TCVAE, FactorVAE and DIP-VAE are the ELBO plus a penalty on the batch's aggregate posterior,
which no single example sees, so their per-example functions carry a `batch_loss`
(`objectives.register`) that the training step adds to the mean per-example loss
(`objectives.reduce_loss`); they need a diagonal-Gaussian posterior (they read its means,
log-scales and draws). FactorVAE also trains a discriminator, an `objectives.Critic`. The
capacity-annealed beta-VAE follows a schedule, so its per-example function takes the training
progress `epoch`. Their strengths are traced options: cells of an ablation that differ only in
them train as one vectorised program.

  beta_tcvae  Chen et al. 2018: -ELBO + (tc_weight - 1) TC, with TC the total correlation of q(z)
              estimated on the batch by minibatch-stratified sampling
              (`kl_decomposition.minibatch_terms`). Since the KL term is I_q(x; z) + TC +
              dimension-wise KL, this weighs TC by tc_weight and the other two by 1 (their
              alpha = gamma = 1), with the KL taken in closed form where it exists.
  factor_vae  Kim & Mnih 2018: -ELBO + factor_gamma TC, with TC estimated by the density-ratio
              trick: a discriminator D learns to tell draws of q(z) (the batch's z) from draws of
              prod_j q(z_j) (each dimension of the batch's z permuted on its own), and
              TC ~ mean log D(z) / (1 - D(z)). As disentanglement_lib: one batch serves both
              networks, the discriminator is 6 x 1000 leaky-ReLU units, Adam(1e-4, 0.5, 0.9).
  dip_vae     Kumar et al. 2018: -ELBO + lambda_od sum_{i != j} C_ij^2
              + lambda_d sum_i (C_ii - 1)^2, C the covariance over the batch of the posterior
              means (dip_type 'i') or of q(z) itself, Cov[mean] + E[diag(scale^2)] ('ii').
  capacity_vae  Burgess et al. 2018: -E_q log p(x|z) + capacity_gamma |KL - C|, the capacity C
              rising linearly from 0 to capacity_max nats over capacity_epochs.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from elbo_jax import kl_decomposition, objectives, posteriors, xla
from elbo_jax.registry import ConfigError, one_of, positive, positive_int

DIP_TYPES = ("i", "ii")


def _with_posterior(model, name: str, num_samples: int, kl: str):
  """The ELBO's per-example function whose terms also hold q's mean and log-scale and the first
  draw z (each [D]); it accepts and ignores the traced options."""
  if not isinstance(getattr(model, "posterior", None), posteriors.DiagonalGaussian):
    raise ConfigError(f"objective.name={name!r} reads the batch's posterior means, scales and "
                      "draws: it needs posterior.name='diagonal_gaussian' and a one-layer model")
  positive_int("objective.num_samples", num_samples)
  analytic = objectives.uses_analytic_kl(model, kl)

  def terms_fn(m, x, key, beta):
    terms, q, z = objectives.elbo_terms(m, x, key, beta, num_samples, analytic)
    return terms | {"z": z[0], "q_mean": q["mean"], "q_log_scale": q["log_scale"]}

  def per_example(params, x, key, beta=1.0, **traced):
    return model.apply(params, x, xla.fast_key(key), beta, method=terms_fn)

  per_example.model = model
  return per_example


@objectives.register("beta_tcvae", traced=("tc_weight",))
def beta_tcvae(model, *, num_samples: int = 1, kl: str = "auto", tc_weight: float = 1.0):
  """beta-TCVAE (Chen et al. 2018); tc_weight is their beta, the weight on the total correlation.

  The batch must be at least 2 examples (minibatch-stratified sampling pairs them)."""
  per_example = _with_posterior(model, "beta_tcvae", num_samples, kl)

  def batch_loss(terms, dataset_size: int, tc_weight=tc_weight):
    tc = kl_decomposition.minibatch_terms(terms["z"], terms["q_mean"], terms["q_log_scale"],
                                          dataset_size, "mss")["total_correlation"]
    return (tc_weight - 1.0) * tc.mean()

  per_example.batch_loss = batch_loss
  return per_example


class Discriminator(nn.Module):
  """FactorVAE's discriminator: z [..., D] -> logits [..., 2] of (a draw of q(z), a draw of
  prod_j q(z_j))."""

  hidden: tuple[int, ...]

  @nn.compact
  def __call__(self, z):
    for width in self.hidden:
      z = nn.leaky_relu(nn.Dense(width)(z), 0.2)
    return nn.Dense(2)(z)


def permute_dims(key, z):
  """z [B, D] with each column permuted across the batch on its own: draws of prod_j q(z_j)
  when z's rows are draws of q(z) (Kim & Mnih 2018, Algorithm 1)."""
  keys = jax.random.split(key, z.shape[1])
  return jax.vmap(jax.random.permutation, in_axes=(0, 1), out_axes=1)(keys, z)


def log_density_ratio(net: Discriminator, params, z):
  """log D(z) / (1 - D(z)): z [B, D] -> [B]; at the optimal discriminator, log q(z) /
  prod_j q(z_j), whose mean over draws of q(z) is the total correlation."""
  logits = net.apply(params, z)
  return logits[:, 0] - logits[:, 1]


def discriminator_loss(net: Discriminator, params, z, key):
  """Cross-entropy of telling z [B, D] (class 0) from `permute_dims(key, z)` (class 1)."""
  joint = jax.nn.log_softmax(net.apply(params, z))[:, 0]
  product = jax.nn.log_softmax(net.apply(params, permute_dims(key, z)))[:, 1]
  return -0.5 * (joint.mean() + product.mean())


@objectives.register("factor_vae", traced=("factor_gamma",))
def factor_vae(model, *, num_samples: int = 1, kl: str = "auto", factor_gamma: float = 10.0,
               critic_hidden: Sequence[int] = (1000,) * 6, critic_learning_rate: float = 1e-4):
  """FactorVAE (Kim & Mnih 2018); factor_gamma is their gamma, the weight on the discriminator's
  TC estimate beside the ELBO's own KL. critic_hidden, critic_learning_rate: the discriminator's
  layer widths and its Adam's step size (beta1 = 0.5, beta2 = 0.9, as the paper)."""
  if not critic_hidden or any(int(w) < 1 for w in critic_hidden):
    raise ConfigError(f"objective.critic_hidden={tuple(critic_hidden)!r} must be a non-empty "
                      "sequence of positive layer widths")
  positive("objective.critic_learning_rate", critic_learning_rate)
  per_example = _with_posterior(model, "factor_vae", num_samples, kl)
  net = Discriminator(tuple(int(w) for w in critic_hidden))

  def batch_loss(terms, dataset_size: int, critic_params, factor_gamma=factor_gamma):
    del dataset_size  # the discriminator sees draws, not densities
    ratio = log_density_ratio(net, jax.lax.stop_gradient(critic_params), terms["z"])
    return factor_gamma * ratio.mean()

  def critic_loss(params, terms, key):
    return discriminator_loss(net, params, terms["z"], key)

  per_example.batch_loss = batch_loss
  per_example.critic = objectives.Critic(
      init=lambda key: net.init(key, jnp.zeros((model.latent_dim,), jnp.float32)),
      optimizer=optax.adam(critic_learning_rate, b1=0.5, b2=0.9), loss=critic_loss)
  return per_example


def dip_covariance(means, log_scales, dip_type: str):
  """The covariance DIP-VAE pushes towards I: means, log_scales [B, D] -> [D, D]."""
  centred = means - means.mean(0)
  cov = centred.T @ centred / means.shape[0]
  if dip_type == "ii":
    cov = cov + jnp.diag(jnp.exp(2.0 * log_scales).mean(0))
  return cov


@objectives.register("dip_vae", traced=("lambda_od", "lambda_d"))
def dip_vae(model, *, num_samples: int = 1, kl: str = "auto", dip_type: str = "i",
            lambda_od: float = 10.0, lambda_d: float = 100.0):
  """DIP-VAE (Kumar et al. 2018). The paper's settings: lambda_d = 10 lambda_od for 'i',
  lambda_d = lambda_od for 'ii'."""
  one_of("objective.dip_type", dip_type, DIP_TYPES)
  per_example = _with_posterior(model, "dip_vae", num_samples, kl)

  def batch_loss(terms, dataset_size: int, lambda_od=lambda_od, lambda_d=lambda_d):
    cov = dip_covariance(terms["q_mean"], terms["q_log_scale"], dip_type)
    diagonal = jnp.diagonal(cov)
    off_diagonal = jnp.sum(jnp.square(cov)) - jnp.sum(jnp.square(diagonal))
    return lambda_od * off_diagonal + lambda_d * jnp.sum(jnp.square(diagonal - 1.0))

  per_example.batch_loss = batch_loss
  return per_example


@objectives.register("capacity_vae", traced=("capacity_gamma", "capacity_max"))
def capacity_vae(model, *, num_samples: int = 1, kl: str = "auto", capacity_gamma: float = 1000.0,
                 capacity_max: float = 25.0, capacity_epochs: float = 10.0):
  """The capacity-annealed beta-VAE (Burgess et al. 2018: gamma = 1000, C up to 25 nats).

  Its loss ignores the trainer's KL weight (objective.beta): the capacity replaces it. Called
  without `epoch` (evaluation, the gradient SNR), C is capacity_max, the end of the schedule."""
  if capacity_epochs < 0:
    raise ConfigError(f"objective.capacity_epochs={capacity_epochs!r} must be >= 0 (epochs; 0: C "
                      "is capacity_max from the start)")
  elbo = objectives.elbo(model, num_samples=num_samples, kl=kl)

  def per_example(params, x, key, beta=1.0, epoch=None, capacity_gamma=capacity_gamma,
                  capacity_max=capacity_max):
    terms = elbo(params, x, key)
    progress = 1.0 if epoch is None or not capacity_epochs else jnp.minimum(
        1.0, epoch / capacity_epochs)
    capacity = capacity_max * progress
    return terms | {"loss": -terms["log_px_given_z"]
                            + capacity_gamma * jnp.abs(terms["kl"] - capacity)}

  per_example.model = elbo.model
  per_example.takes_epoch = True
  return per_example
