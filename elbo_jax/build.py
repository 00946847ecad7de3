"""Builds a protocol model from a config, and checks a config before anything runs.

Every component is looked up by name in its family's registry, so an unknown name fails with a
one-line error that lists the allowed ones, before any data is loaded or code is compiled.
"""

from __future__ import annotations

import jax

from elbo_jax import data as data_lib
from elbo_jax.likelihoods import LIKELIHOODS
from elbo_jax.models import ENCODER_DECODER_MODELS, MODELS
from elbo_jax.objectives import ESTIMATORS, OBJECTIVES
from elbo_jax.optim import OPTIMIZERS, SCHEDULES
from elbo_jax.posteriors import POSTERIORS
from elbo_jax.priors import PRIORS
from elbo_jax.registry import ConfigError, positive_int, unit_interval
from elbo_jax.vae import VAE

PLATFORMS = ("auto", "cpu", "gpu", "tpu")
NONFINITE_POLICIES = ("stop", "skip")


def check_config(config) -> None:
  """Raises a ConfigError naming the first invalid field; looks every component name up."""
  for registry, name in [
      (LIKELIHOODS, config.likelihood.name), (PRIORS, config.prior.name),
      (POSTERIORS, config.posterior.name), (OBJECTIVES, config.objective.name),
      (MODELS, config.model.name), (OPTIMIZERS, config.optimizer.name),
      (SCHEDULES, config.optimizer.schedule),
  ]:
    registry.get(name)
  for field in ("model.latent_dim", "objective.num_samples", "objective.num_averages",
                "training.batch_size",
                "training.num_epochs", "training.steps_per_call", "training.checkpoint_every",
                "eval.num_samples", "eval.chunk_size", "eval.batch_size", "eval.repeats",
                "eval.elbo_samples"):
    section, key = field.split(".")
    positive_int(field, config[section][key])
  if config.training.on_nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f"training.on_nonfinite={config.training.on_nonfinite!r} is not known; "
                      f"allowed values: {', '.join(NONFINITE_POLICIES)}")
  if config.accelerator.platform not in PLATFORMS:
    raise ConfigError(f"accelerator.platform={config.accelerator.platform!r} is not known; "
                      f"allowed values: {', '.join(PLATFORMS)}")
  if config.objective.estimator not in ESTIMATORS:
    raise ConfigError(f"objective.estimator={config.objective.estimator!r} is not known; "
                      f"allowed values: {', '.join(ESTIMATORS)}")
  unit_interval("objective.ciwae_beta", config.objective.ciwae_beta)
  if config.objective.beta < 0 or config.objective.free_bits < 0:
    raise ConfigError("objective.beta and objective.free_bits must be non-negative")


def select_devices(platform: str) -> list:
  """The devices of `accelerator.platform`; 'auto' takes JAX's default backend."""
  if platform == "auto":
    return jax.devices()
  try:
    return jax.devices(platform)
  except RuntimeError:
    present = sorted({d.platform for d in jax.devices()})
    raise ConfigError(f"accelerator.platform={platform!r} is not present on this machine; "
                      f"present: {', '.join(present)}") from None


def build_likelihood(config, data_shape):
  cfg = config.likelihood
  cls = LIKELIHOODS.get(cfg.name)
  options = {"gaussian": dict(variance=cfg.variance, scale=cfg.scale),
             "discretized_logistic_mixture": dict(num_mixtures=cfg.num_mixtures)}
  return cls(event_shape=tuple(data_shape), **options.get(cfg.name, {}))


def build_prior(config, data_shape):
  cfg = config.prior
  latent_dim = config.model.latent_dim
  options = {"mog": dict(num_components=cfg.num_components),
             "vamp": dict(num_pseudo_inputs=cfg.num_pseudo_inputs, data_shape=tuple(data_shape))}
  return PRIORS.get(cfg.name)(latent_dim=latent_dim, **options.get(cfg.name, {}))


def build_posterior(config):
  cfg = config.posterior
  options = {"planar_flow": dict(num_flows=cfg.num_flows),
             "iaf": dict(num_flows=cfg.num_flows, hidden=cfg.hidden)}
  return POSTERIORS.get(cfg.name)(latent_dim=config.model.latent_dim,
                                  **options.get(cfg.name, {}))


def build_model(config, dataset):
  """The protocol model for `config` on `dataset` (checks that the likelihood fits the data)."""
  data_shape = tuple(dataset.shape)
  likelihood = build_likelihood(config, data_shape)
  data_lib.check_compatible(dataset, likelihood.data_kind, config.likelihood.name)
  m = config.model
  if m.name not in ENCODER_DECODER_MODELS:
    if config.prior.name != "standard_normal" or config.posterior.name != "diagonal_gaussian":
      raise ConfigError(f"model.name={m.name!r} has its own hierarchical prior and posterior; "
                        "use prior.name='standard_normal', posterior.name='diagonal_gaussian'")
    two_layer = dict(hidden1=m.hidden, latent1=m.latent_dim, hidden2=m.hidden2,
                     latent2=m.latent2_dim, activation=m.activation)
    return MODELS.get(m.name)(two_layer, data_shape, likelihood)
  encoder, decoder = MODELS.get(m.name)(m, data_shape, likelihood)
  if config.prior.name == "vamp" and config.posterior.name not in ("diagonal_gaussian",
                                                                    "full_gaussian"):
    raise ConfigError("prior.name='vamp' mixes the posterior's densities, so it needs "
                      "posterior.name in: diagonal_gaussian, full_gaussian")
  return VAE(encoder=encoder, decoder=decoder, likelihood=likelihood,
             prior=build_prior(config, data_shape), posterior=build_posterior(config))
