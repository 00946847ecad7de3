"""Per-example variational objectives: ELBO, beta-ELBO and the IWAE bound.

Each constructor takes a model that follows the protocol in `elbo_jax.vae` and returns
`f(params, x, key, beta=1.0) -> terms` for ONE example x (no batch axis): a pure function that
`jax.vmap`, `jax.jit` and `jax.grad` compose with. `terms` is a flat dict of named scalars (nats):

  bound           the objective's value: ELBO, or the IWAE_K bound (what `loss` is a surrogate for)
  elbo            the ELBO estimate:          E_q[log p(x|z)] - KL(q(z|x) || p(z))
  log_px_given_z  the reconstruction term:    E_q[log p(x|z)]
  kl              the KL term (analytic where a closed form exists, else Monte Carlo)
  loss            what training minimises:    -(log_px_given_z - beta * kl), or the IWAE surrogate
  kl_per_dim      [D], when the KL is analytic and factorises over latent dimensions
  log_weights     [K], iwae only: log p(x, z_k) - log q(z_k | x)

`reduce_loss` is the one place where per-example terms become the batch loss (and where free bits,
which act on the batch-averaged KL per dimension, are applied).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from elbo_jax import xla
from elbo_jax.registry import ConfigError, Registry, positive_int
from elbo_jax.vae import VAE

PerExample = Callable[..., dict]
ESTIMATORS = ("reparam", "stl", "dreg")
KL_MODES = ("auto", "analytic", "mc")


def assemble(model, likelihood=None, prior=None, posterior=None):
  """Returns a protocol model: `model` itself, or a VAE built from an (encoder, decoder) pair.

  Components given here replace those of a VAE, so `elbo(vae, prior=VampPrior(...))` works too.
  """
  given = {
      k: v
      for k, v in dict(likelihood=likelihood, prior=prior, posterior=posterior).items()
      if v is not None
  }
  if isinstance(model, (tuple, list)):
    if len(given) != 3:
      raise ConfigError("an (encoder, decoder) pair needs likelihood=, prior= and posterior=")
    encoder, decoder = model
    return VAE(encoder=encoder, decoder=decoder, **given)
  return model.clone(**given) if given else model


def _check_kl_mode(model, kl: str) -> bool:
  """Returns whether the analytic KL is used."""
  if kl not in KL_MODES:
    raise ConfigError(f"objective.kl={kl!r} is not known; allowed values: {', '.join(KL_MODES)}")
  if kl == "analytic" and not model.has_analytic_kl:
    raise ConfigError(
        "objective.kl='analytic' needs a Gaussian posterior (diagonal_gaussian, full_gaussian) and "
        "a Gaussian prior (standard_normal, learned_gaussian); use objective.kl='mc'"
    )
  return kl != "mc" and model.has_analytic_kl


def elbo(model, *, likelihood=None, prior=None, posterior=None, num_samples: int = 1,
         kl: str = "auto", beta: float = 1.0) -> PerExample:
  """The ELBO with S reparameterised samples; `beta` != 1 gives the beta-ELBO (Higgins et al.).

  Args:
    model: a protocol model (e.g. `elbo_jax.VAE`) or an (encoder, decoder) pair.
    num_samples: S, samples of z used for the reconstruction term (and a Monte Carlo KL).
    kl: "auto" (analytic where a closed form exists), "analytic" (error if none) or "mc".
    beta: the default weight on the KL in `loss`; a schedule passes it per call instead.
  """
  model = assemble(model, likelihood, prior, posterior)
  positive_int("objective.num_samples", num_samples)
  analytic = _check_kl_mode(model, kl)

  def terms_fn(m, x, key, beta):
    q = m.encode(x)
    z, log_q = m.sample_posterior(q, key, num_samples)  # [S, D], [S]
    log_px_given_z = m.likelihood_log_prob(z, x).mean()
    out = {}
    if analytic:
      kl_value, kl_per_dim = m.kl_analytic(q)
      if kl_per_dim is not None:
        out["kl_per_dim"] = kl_per_dim
    else:
      kl_value = (log_q - m.prior_log_prob(z)).mean()
    elbo_value = log_px_given_z - kl_value
    return out | {
        "bound": elbo_value,
        "elbo": elbo_value,
        "log_px_given_z": log_px_given_z,
        "kl": kl_value,
        "loss": -(log_px_given_z - beta * kl_value),
    }

  def per_example(params, x, key, beta=beta):
    return model.apply(params, x, xla.fast_key(key), beta, method=terms_fn)

  per_example.model = model
  return per_example


def beta_elbo(model, *, beta: float, **kwargs) -> PerExample:
  """The beta-ELBO of Higgins et al. 2017: E_q[log p(x|z)] - beta * KL; `bound` stays the ELBO."""
  return elbo(model, beta=beta, **kwargs)


def iwae(model, *, likelihood=None, prior=None, posterior=None, num_samples: int = 5,
         estimator: str = "reparam") -> PerExample:
  """The importance-weighted bound log (1/K) sum_k p(x, z_k) / q(z_k|x) (Burda et al. 2015).

  Args:
    num_samples: K, the number of importance samples.
    estimator: the gradient estimator for the encoder:
      "reparam": plain reparameterised gradient of the bound;
      "stl": sticking the landing (Roeder et al. 2017): log q evaluated with stopped variational
        parameters, removing the score-function term; unbiased for K = 1 only (for K > 1 that
        term no longer has mean zero, Tucker et al. 2019), but zero-variance at q = p(z|x);
      "dreg": doubly reparameterised (Tucker et al. 2019): encoder gradient
        sum_k w_k^2 d log w_k / dz_k dz_k/dphi, generative gradient sum_k w_k grad log w_k
        (w normalised weights). Both need log q at arbitrary z, so Gaussian posteriors only.
  The value is the same for all three; only the gradient differs.
  """
  model = assemble(model, likelihood, prior, posterior)
  positive_int("objective.num_samples", num_samples)
  if estimator not in ESTIMATORS:
    raise ConfigError(
        f"objective.estimator={estimator!r} is not known; allowed values: {', '.join(ESTIMATORS)}"
    )
  if estimator != "reparam" and getattr(model, "has_flow_posterior", False):
    raise ConfigError(
        f"objective.estimator={estimator!r} needs log q(z|x) at arbitrary z, which flows do not "
        "give; use a Gaussian posterior or objective.estimator='reparam'"
    )
  log_k = math.log(num_samples)

  def log_weights_fn(m, x, z, q, log_q):
    log_px_given_z = m.likelihood_log_prob(z, x)
    log_pz = m.prior_log_prob(z)
    if estimator != "reparam":
      # Stopping q's parameters (not z) drops the score term d log q / d phi, whose mean is zero.
      log_q = m.posterior_log_prob(z, jax.lax.stop_gradient(q))
    return log_px_given_z + log_pz - log_q, log_px_given_z, log_q - log_pz

  def terms_fn(m, x, key):
    q = m.encode(x)
    z, log_q = m.sample_posterior(q, key, num_samples)  # [K, D], [K]
    log_w, log_px_given_z, kl_k = log_weights_fn(m, x, z, q, log_q)
    bound = jax.nn.logsumexp(log_w) - log_k
    if estimator == "dreg":
      w = jax.lax.stop_gradient(jax.nn.softmax(log_w))  # [K]
      # Same value as z, but the cotangent reaching z_k is scaled by w_k: with the outer weights
      # w_k this gives w_k^2 on the encoder path and w_k on the generative parameters.
      z_scaled = jax.lax.stop_gradient(z) + w[:, None] * (z - jax.lax.stop_gradient(z))
      surrogate = jnp.sum(w * log_weights_fn(m, x, z_scaled, q, log_q)[0])
      # The value of -bound with the gradient of the surrogate alone.
      loss = -(surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(bound))
    else:
      loss = -bound
    return {
        "bound": bound,
        "iwae": bound,
        "elbo": log_w.mean(),
        "log_px_given_z": log_px_given_z.mean(),
        "kl": kl_k.mean(),
        "loss": loss,
        "log_weights": log_w,
    }

  def per_example(params, x, key, beta=1.0):
    del beta  # The IWAE bound has no KL weight.
    return model.apply(params, x, xla.fast_key(key), method=terms_fn)

  per_example.model = model
  return per_example


def batched(per_example: PerExample) -> PerExample:
  """`per_example` vmapped over a batch of examples and keys and jitted: f(params, x, keys, beta).

  Compiled with `elbo_jax.xla.jit`, as the training loop is.
  """
  return xla.jit(jax.vmap(per_example, in_axes=(None, 0, 0, None)))


def reduce_loss(terms: dict, beta=1.0, free_bits=0.0):
  """The batch loss from per-example terms (leading batch axis): the mean of `loss`.

  With free bits (Kingma et al. 2016) each latent dimension's batch-averaged KL counts as at least
  `free_bits` nats, so the optimiser gains nothing by pushing a dimension's KL below it.
  `free_bits` may be traced (one value per vectorised replica): a replica whose value is 0 then
  gets exactly the plain loss, value and gradient.
  """
  if isinstance(free_bits, (int, float)) and not free_bits:
    return terms["loss"].mean()
  check_free_bits(terms)
  kl = jnp.maximum(terms["kl_per_dim"].mean(0), free_bits).sum()
  return jnp.where(free_bits > 0, -terms["log_px_given_z"].mean() + beta * kl,
                   terms["loss"].mean())


def check_free_bits(terms) -> None:
  """Raises a ConfigError unless `terms` (an objective's output, or its names) allow free bits."""
  if "kl_per_dim" not in terms:
    raise ConfigError(
        "objective.free_bits > 0 needs a per-dimension analytic KL: a diagonal_gaussian posterior "
        "and a standard_normal or learned_gaussian prior"
    )


def kl_weight(step, beta, warmup_steps):
  """KL warm-up: beta rises linearly from 0 to `beta` over `warmup_steps` (0: constant beta).

  Any argument may be traced, so replicas of one program can differ in beta and warm-up length.
  """
  ramp = jnp.minimum(1.0, step / jnp.maximum(warmup_steps, 1)).astype(jnp.float32)
  return jnp.where(warmup_steps > 0, beta * ramp, beta).astype(jnp.float32)


OBJECTIVES: Registry = Registry("objective.name")
OBJECTIVES.register("elbo")(elbo)
OBJECTIVES.register("beta_elbo")(beta_elbo)
OBJECTIVES.register("iwae")(iwae)


def from_config(model, cfg) -> PerExample:
  """Builds the per-example objective named by an `objective` ConfigDict."""
  build = OBJECTIVES.get(cfg.name)
  if cfg.name == "iwae":
    return build(model, num_samples=cfg.num_samples, estimator=cfg.estimator)
  if cfg.estimator != "reparam":
    raise ConfigError(
        f"objective.estimator={cfg.estimator!r} applies to objective.name='iwae' only; "
        "use objective.estimator='reparam'"
    )
  return build(model, num_samples=cfg.num_samples, kl=cfg.kl, beta=cfg.beta)
