"""From a config to what a run needs: checks, the protocol model, and the trainer.

`check_config` looks at every field that needs no data; `build_trainer` loads nothing but checks
the rest against the data set (likelihood vs data, batch size vs examples, free bits vs objective)
and builds the model, objective and optimiser. Both run before anything is written to a workdir,
so a refused config leaves nothing behind.

`accelerator.compute_dtype` is the dtype the networks compute in; parameters, optimiser state,
log-densities and the logsumexp of importance weights stay float32. `build_model(config, dataset,
"float32")` is the same model computing in float32, with the same parameters: validation and
evaluation use it (`elbo_jax.report`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

import elbo_jax.disentangling  # noqa: F401  (registers beta_tcvae, factor_vae, ...)
from elbo_jax import components, disentanglement, initialization, objectives
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax.likelihoods import LIKELIHOODS
from elbo_jax.mesh import PLATFORMS
from elbo_jax.models import ENCODER_DECODER_MODELS, MODELS
from elbo_jax.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from elbo_jax.posteriors import POSTERIORS
from elbo_jax.priors import PRIORS
from elbo_jax.registry import (
  ConfigError,
  non_negative,
  non_negative_int,
  one_of,
  positive,
  positive_int,
  unit_interval,
)
from elbo_jax.vae import VAE

NONFINITE_POLICIES = ("stop", "skip")
COMPUTE_DTYPES = ("float32", "bfloat16")
# Fields that replicas of one vectorised program may differ in: they enter the program as traced
# values (keys, KL weight, free bits, learning rate), not as shapes or code. An objective adds the
# options it declares traced (`vectorizable_fields`).
VECTORIZABLE_FIELDS = ("seed", "objective.beta", "objective.free_bits", "objective.warmup_epochs",
                       "optimizer.learning_rate", "optimizer.weight_decay")


def vectorizable_fields(config) -> tuple[str, ...]:
  """VECTORIZABLE_FIELDS and the objective's traced options (`objectives.register`)."""
  traced = objectives.traced_options(config.objective.name)
  return VECTORIZABLE_FIELDS + tuple(f"objective.{name}" for name in traced)


def check_config(config) -> None:
  """Raises a ConfigError naming the first invalid field among those that need no data."""
  for registry, name in [
      (MODELS, config.model.name), (OPTIMIZERS, config.optimizer.name),
      (SCHEDULES, config.optimizer.schedule), (initialization.SCHEMES, config.model.init),
  ]:
    registry.get(name)
  components.check(config, config_lib.default_config())
  for field in ("model.latent_dim", "objective.num_samples", "objective.num_averages",
                "training.batch_size", "training.num_epochs", "training.steps_per_call",
                "training.checkpoint_every",
                "eval.num_samples", "eval.chunk_size", "eval.batch_size", "eval.repeats",
                "eval.elbo_samples", "accelerator.replica_parallelism"):
    section, key = field.split(".")
    positive_int(field, config[section][key])
  for field in ("objective.beta", "objective.free_bits", "objective.warmup_epochs",
                "optimizer.weight_decay", "optimizer.clip_norm", "optimizer.warmup_steps",
                "training.checkpoint_every_seconds", "training.divergence_factor",
                "training.divergence_grad_factor", "eval.num_test", "eval.curve_num_test",
                "accelerator.num_devices"):
    section, key = field.split(".")
    non_negative(field, config[section][key])
  non_negative_int("training.early_stopping_patience", config.training.early_stopping_patience,
                   "epochs; 0 = off")
  non_negative_int("eval.factor_vae_points", config.eval.factor_vae_points,
                   "voting points; 0 = off")
  non_negative_int("eval.beta_vae_points", config.eval.beta_vae_points, "points; 0 = off")
  positive("optimizer.learning_rate", config.optimizer.learning_rate)
  one_of("training.on_nonfinite", config.training.on_nonfinite, NONFINITE_POLICIES)
  one_of("accelerator.platform", config.accelerator.platform, PLATFORMS)
  one_of("accelerator.compute_dtype", config.accelerator.compute_dtype, COMPUTE_DTYPES)
  one_of("objective.kl", config.objective.kl, objectives.KL_MODES)
  one_of("eval.dci_importance", config.eval.dci_importance, tuple(disentanglement.IMPORTANCES))
  one_of("objective.estimator", config.objective.estimator, objectives.ESTIMATORS)
  unit_interval("objective.ciwae_beta", config.objective.ciwae_beta)
  one_of("model.output_bias", config.model.output_bias, initialization.OUTPUT_BIASES)
  if config.model.output_bias == "data_mean" and (
      config.likelihood.name != "bernoulli" or config.model.name not in ("mlp", "two_layer")):
    raise ConfigError("model.output_bias='data_mean' starts Bernoulli logits at one bias per "
                      "pixel: it needs likelihood.name='bernoulli' and model.name in: mlp, "
                      f"two_layer (got {config.likelihood.name!r}, {config.model.name!r})")


def _build(registry, cfg, **supplied):
  """The component `cfg.name` with its options from `cfg` and, of the arguments the builder
  `supplied` (shapes, dtypes), those it declares."""
  declared = registry.option_names(cfg.name)
  return registry.get(cfg.name)(**{k: v for k, v in supplied.items() if k in declared},
                                **registry.options(cfg, exclude=supplied))


def build_likelihood(config, data_shape):
  return _build(LIKELIHOODS, config.likelihood, event_shape=tuple(data_shape))


def build_prior(config, data_shape):
  return _build(PRIORS, config.prior, latent_dim=config.model.latent_dim,
                data_shape=tuple(data_shape))


def build_posterior(config, dtype=jnp.float32):
  return _build(POSTERIORS, config.posterior, latent_dim=config.model.latent_dim, dtype=dtype)


def build_model(config, dataset, compute_dtype: str | None = None):
  """The protocol model for `config` on `dataset` (checks that the likelihood fits the data).

  compute_dtype: the networks' compute dtype; None reads `accelerator.compute_dtype`.
  """
  dtype = jnp.dtype(compute_dtype or config.accelerator.compute_dtype)
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
    return MODELS.get(m.name)(two_layer, data_shape, likelihood, dtype)
  encoder, decoder = MODELS.get(m.name)(m, data_shape, likelihood, dtype)
  if (PRIORS.get(config.prior.name).mixes_posterior
      and not POSTERIORS.get(config.posterior.name).has_density):
    with_density = [n for n in POSTERIORS.registered() if POSTERIORS.get(n).has_density]
    raise ConfigError(f"prior.name={config.prior.name!r} mixes the posterior's densities, so it "
                      f"needs posterior.name in: {', '.join(with_density)}")
  return VAE(encoder=encoder, decoder=decoder, likelihood=likelihood,
             prior=build_prior(config, data_shape), posterior=build_posterior(config, dtype))


def check_group(configs: Sequence) -> None:
  """Raises a ConfigError unless the configs differ only in `vectorizable_fields`."""
  first = config_lib.to_json(configs[0])
  vectorizable = vectorizable_fields(configs[0])
  ignore = config_lib.NON_IDENTITY_FIELDS + vectorizable
  for other in configs[1:]:
    differing = config_lib.differences(first, config_lib.to_json(other), ignore=ignore)
    if differing:
      raise ConfigError(
          f"runs of one vectorised group differ in {', '.join(differing)}, which changes shapes "
          f"or code; a group may differ only in: {', '.join(vectorizable)}")


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The parts of a training program that its replicas share (all but `vectorizable_fields`).

  Attributes:
    model: the protocol model; per_example: its objective, f(params, x, key, beta) -> terms.
    steps_per_epoch, total_steps: floor(N / batch_size) and that times training.num_epochs.
    free_bits: whether the loss needs the free-bits branch (some replica has free_bits > 0).
    dynamic_binarization: whether each batch is binarised afresh.
    optimizer_config: the `optimizer` section; `optimizer(lr, wd)` builds the chain.
    init: `model.init`, the weights' scheme; output_bias: `model.output_bias`.
    num_train: the training set's size (all processes), for objectives with a `batch_loss`.
  """

  model: Any
  per_example: Callable
  steps_per_epoch: int
  total_steps: int
  free_bits: bool
  dynamic_binarization: bool
  optimizer_config: Any
  init: str
  output_bias: str
  num_train: int

  @property
  def critic(self) -> objectives.Critic | None:
    """The objective's critic (`objectives.Critic`), if it trains one."""
    return getattr(self.per_example, "critic", None)

  def optimizer(self, learning_rate=None, weight_decay=None):
    return make_optimizer(self.optimizer_config, self.steps_per_epoch, self.total_steps,
                          learning_rate, weight_decay)


def build_trainer(configs: Sequence, dataset) -> Trainer:
  """The shared training program of `configs` (one run, or a vectorised group) on `dataset`.

  Raises a one-line ConfigError for anything the data or the model make invalid.
  """
  for config in configs:
    check_config(config)
  check_group(configs)
  config = configs[0]
  model = build_model(config, dataset)
  per_example = objectives.from_config(model, config.objective)
  n, batch_size = dataset.num_train, config.training.batch_size
  steps_per_epoch = n // batch_size
  if steps_per_epoch < 1:
    raise ConfigError(f"training.batch_size={batch_size} exceeds the {n} training examples")
  num_test = min(config.eval.num_test or len(dataset.test), len(dataset.test))
  if num_test < 2:
    raise ConfigError(f"eval.num_test={config.eval.num_test} leaves {num_test} of the "
                      f"{len(dataset.test)} test examples; the active units need at least 2: use "
                      "eval.num_test=0 (all) or >= 2")
  # Trace one example of the data's dtype, without compiling: the modules check their fields in
  # setup, the likelihood checks the data's shape and dtype, and the terms show whether free bits
  # apply. Without this, those errors would come from the first step, after the workdir is written.
  x = jax.ShapeDtypeStruct(dataset.shape, dataset.train.dtype)
  key = jax.eval_shape(lambda: jax.random.key(0))
  params = jax.eval_shape(model.init, key, jax.ShapeDtypeStruct(dataset.shape, jnp.float32), key)
  terms = jax.eval_shape(per_example, params, x, key)
  free_bits = any(c.objective.free_bits > 0 for c in configs)
  if free_bits:
    objectives.check_free_bits(terms)
  return Trainer(model=model, per_example=per_example, steps_per_epoch=steps_per_epoch,
                 total_steps=steps_per_epoch * config.training.num_epochs, free_bits=free_bits,
                 dynamic_binarization=dataset.dynamic, optimizer_config=config.optimizer,
                 init=config.model.init, output_bias=config.model.output_bias,
                 num_train=dataset.num_train)
