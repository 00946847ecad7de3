"""Per-example variational objectives: ELBO, beta-ELBO, IWAE and its variants MIWAE, CIWAE, PIWAE.

MIWAE(M, K) averages M IWAE_K bounds, CIWAE(beta) mixes the ELBO and IWAE_K, PIWAE(M, K) trains the
inference network on MIWAE(M, K) and the generative one on IWAE(M*K) (Rainforth et al. 2018).

Each constructor takes a model that follows the protocol in `elbo_jax.vae` and returns
`f(params, x, key, beta=1.0) -> terms` for ONE example x (no batch axis): a pure function that
`jax.vmap`, `jax.jit` and `jax.grad` compose with. `terms` is a flat dict of named scalars (nats):

  bound           the objective's value: ELBO, IWAE_K, MIWAE, CIWAE (what `loss` is a surrogate
                  for), or for PIWAE IWAE(M*K)
  iwae            importance-weighted objectives only: IWAE over all their samples
  elbo            the ELBO estimate:          E_q[log p(x|z)] - KL(q(z|x) || p(z))
  log_px_given_z  the reconstruction term:    E_q[log p(x|z)]
  kl              the KL term (analytic where a closed form exists, else Monte Carlo)
  loss            what training minimises:    -(log_px_given_z - beta * kl), or for the
                  importance-weighted ones -bound in value with the chosen estimator's gradient
  kl_per_dim      [D], when the KL is analytic and factorises over latent dimensions
  log_weights     [N], importance-weighted only: log p(x, z_n) - log q(z_n | x), N = K or M*K
  miwae           piwae only: MIWAE(M, K), the bound the inference network ascends

`reduce_loss` is the one place where per-example terms become the batch loss (and where free bits,
which act on the batch-averaged KL per dimension, are applied).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from elbo_jax import likelihoods, xla
from elbo_jax.registry import ConfigError, Registry, one_of, positive_int, unit_interval
from elbo_jax.vae import VAE, merge_params, split_params

PerExample = Callable[..., dict]
ESTIMATORS = ("reparam", "stl", "dreg")
KL_MODES = ("auto", "analytic", "mc")

OBJECTIVES: Registry = Registry("objective.name")
# Fields of the objective section that the training step reads, whatever the objective: the KL
# weight (a per-call argument of every per-example function), its warm-up, free bits.
READ_BY_TRAINER = ("beta", "warmup_epochs", "free_bits")


def register(name: str, traced: Sequence[str] = ()):
  """Registers an objective's constructor under `name` (a decorator).

  The constructor takes the model and its options as keywords (read from the `objective` config
  section, `from_config`) and returns a per-example function. traced: the options that replicas
  of one vectorised program may differ in; the training step passes each as a traced scalar
  keyword argument, f(params, x, key, beta, **traced), and `build.vectorizable_fields` adds
  "objective.<option>" to the fields a group may differ in.

  A per-example function may carry `batch_loss(terms, dataset_size, **traced) -> scalar`: a
  penalty on the batch as a whole (e.g. the total correlation of the batch's posteriors), added
  to the mean per-example loss by `reduce_loss`; terms: the vmapped terms [B, ...];
  dataset_size: the number of training examples the batch was drawn from. One with
  `takes_epoch = True` also gets `epoch=`, the training progress in epochs (a traced float), from
  the training step, for weights that follow a schedule. One with a `critic` (a `Critic`: a
  network the objective trains beside the model, e.g. FactorVAE's discriminator) has the
  critic's parameters in the train state and passes them to its `batch_loss` as
  `critic_params=`.
  """
  def add(constructor):
    constructor.traced = tuple(traced)
    return OBJECTIVES.register(name)(constructor)

  return add


@dataclasses.dataclass(frozen=True)
class Critic:
  """A network an objective trains beside the model, with an optimiser of its own.

  The training step updates it once per step, after computing the model's gradient with the
  critic's current parameters (both from the same batch, as disentanglement_lib's FactorVAE);
  its parameters and optimiser state live in `train.TrainState.critic`, so checkpoints, resume
  and vectorised replicas carry them like the model's.

  init(key) -> params; optimizer: an optax transformation; loss(params, terms, key) -> scalar:
  the critic's loss on the batch's per-example terms (leading batch axis), which it must treat
  as constants.
  """

  init: Callable
  optimizer: optax.GradientTransformation
  loss: Callable


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


def uses_analytic_kl(model, kl: str) -> bool:
  """Whether objective.kl=`kl` takes the KL in closed form for `model` (a ConfigError where it
  asks for a closed form the model does not have)."""
  one_of("objective.kl", kl, KL_MODES)
  if kl == "analytic" and not model.has_analytic_kl:
    raise ConfigError(
        "objective.kl='analytic' needs a Gaussian posterior (diagonal_gaussian, full_gaussian) and "
        "a Gaussian prior (standard_normal, learned_gaussian); use objective.kl='mc'"
    )
  return kl != "mc" and model.has_analytic_kl


@register("elbo")
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
  analytic = uses_analytic_kl(model, kl)

  def terms_fn(m, x, key, beta):
    return elbo_terms(m, x, key, beta, num_samples, analytic)[0]

  def per_example(params, x, key, beta=beta):
    return model.apply(params, x, xla.fast_key(key), beta, method=terms_fn)

  per_example.model = model
  return per_example


def elbo_terms(m, x, key, beta, num_samples: int, analytic: bool) -> tuple[dict, dict, jax.Array]:
  """The ELBO's named terms for one example x, inside `model.apply`, with the posterior's
  parameters q and its S draws z: [S, D] (objectives that also penalise the batch's posteriors,
  `elbo_jax.disentangling`, read them). analytic: the closed-form KL (`uses_analytic_kl`)."""
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
  }, q, z


@register("beta_elbo")
def beta_elbo(model, *, likelihood=None, prior=None, posterior=None, num_samples: int = 1,
              kl: str = "auto", beta: float = 1.0) -> PerExample:
  """The beta-ELBO of Higgins et al. 2017: E_q[log p(x|z)] - beta * KL; `bound` stays the ELBO."""
  return elbo(model, likelihood=likelihood, prior=prior, posterior=posterior,
              num_samples=num_samples, kl=kl, beta=beta)


def _check_estimator(model, estimator: str) -> None:
  one_of("objective.estimator", estimator, ESTIMATORS)
  if estimator != "reparam" and not model.has_posterior_density:
    raise ConfigError(
        f"objective.estimator={estimator!r} needs log q(z|x) at arbitrary z, which flows do not "
        "give; use a Gaussian posterior or objective.estimator='reparam'"
    )


def _log_weights(m, x, z, q, log_q, estimator: str):
  """log w = log p(x|z) + log p(z) - log q(z|x) at z: [N, D]; returns log w, log p(x|z) and
  log q - log p(z), each [N]."""
  log_px_given_z = m.likelihood_log_prob(z, x)
  log_pz = m.prior_log_prob(z)
  if estimator != "reparam":
    # Stopping q's parameters (not z) drops the score term d log q / d phi, whose mean is zero.
    log_q = m.posterior_log_prob(z, jax.lax.stop_gradient(q))
  return log_px_given_z + log_pz - log_q, log_px_given_z, log_q - log_pz


def _grouped_bound(log_w, num_averages: int):
  """MIWAE: (1/M) sum_m log (1/K) sum_k w_mk, log_w: [M*K] read as M groups of K."""
  groups = log_w.reshape(num_averages, -1)  # [M, K]
  return jax.nn.logsumexp(groups, axis=-1).mean() - math.log(groups.shape[-1])


def _weigh(m, x, key, num_averages: int, num_samples: int, estimator: str) -> dict:
  """M*K samples of q(z|x), drawn exactly as IWAE(M*K) draws them from `key`, and their weights.

  Returns log_w, log_px_given_z, kl: [M*K] and `surrogate`, a scalar whose gradient is the
  `estimator` gradient of MIWAE(M, K) (its value is the bound for reparam and stl only).
  """
  q = m.encode(x)
  z, log_q = m.sample_posterior(q, key, num_averages * num_samples)  # [M*K, D], [M*K]
  log_w, log_px_given_z, kl = _log_weights(m, x, z, q, log_q, estimator)
  out = {"log_w": log_w, "log_px_given_z": log_px_given_z, "kl": kl}
  if estimator != "dreg":
    return out | {"surrogate": _grouped_bound(log_w, num_averages)}
  # Normalised weights within each group: MIWAE's gradient is the mean of its groups' gradients.
  w = jax.nn.softmax(log_w.reshape(num_averages, -1), axis=-1).reshape(-1)  # [M*K]
  w = jax.lax.stop_gradient(w)
  # Same value as z, but the cotangent reaching z_k is scaled by w_k: with the outer weights
  # w_k this gives w_k^2 on the encoder path and w_k on the generative parameters.
  z_scaled = jax.lax.stop_gradient(z) + w[:, None] * (z - jax.lax.stop_gradient(z))
  log_w_scaled = _log_weights(m, x, z_scaled, q, log_q, estimator)[0]
  return out | {"surrogate": jnp.sum(w * log_w_scaled) / num_averages}


def importance_surrogate(m, x, key, num_samples: int, estimator: str):
  """A scalar whose gradient is `estimator`'s gradient of IWAE(K = num_samples) at ONE example x.

  m: anything with the VAE's methods (encode, sample_posterior, likelihood_log_prob,
  prior_log_prob, posterior_log_prob), e.g. a bound `VAE` or `gaussian_toy.Model`, so models
  written outside Flax get exactly the estimators `iwae` trains with.
  """
  _check_estimator(m, estimator)
  return _weigh(m, x, key, 1, num_samples, estimator)["surrogate"]


def _loss(surrogate, bound):
  """The value of -bound with the gradient of -surrogate."""
  return -(surrogate - jax.lax.stop_gradient(surrogate) + jax.lax.stop_gradient(bound))


def _terms(weighed: dict, bound, loss) -> dict:
  log_w = weighed["log_w"]
  return {
      "bound": bound,
      "iwae": jax.nn.logsumexp(log_w) - math.log(log_w.shape[0]),
      "elbo": log_w.mean(),
      "log_px_given_z": weighed["log_px_given_z"].mean(),
      "kl": weighed["kl"].mean(),
      "loss": loss,
      "log_weights": log_w,
  }


def _importance_model(model, likelihood, prior, posterior, num_averages, num_samples, estimator):
  model = assemble(model, likelihood, prior, posterior)
  positive_int("objective.num_averages", num_averages)
  positive_int("objective.num_samples", num_samples)
  _check_estimator(model, estimator)
  return model


def _without_beta(model, terms_fn) -> PerExample:
  def per_example(params, x, key, beta=1.0):
    del beta  # Importance-weighted bounds have no KL weight.
    return model.apply(params, x, xla.fast_key(key), method=terms_fn)

  per_example.model = model
  return per_example


@register("iwae")
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
  The value is the same for all three; only the gradient differs. IWAE(K) is MIWAE(1, K).
  """
  return miwae(model, likelihood=likelihood, prior=prior, posterior=posterior, num_averages=1,
               num_samples=num_samples, estimator=estimator)


@register("miwae")
def miwae(model, *, likelihood=None, prior=None, posterior=None, num_averages: int = 1,
          num_samples: int = 5, estimator: str = "reparam") -> PerExample:
  """MIWAE(M, K) = (1/M) sum_m log (1/K) sum_k w_mk (Rainforth et al. 2018): M IWAE_K bounds
  averaged, from M*K samples drawn as IWAE(M*K) draws them from the same key.

  `estimator` as for `iwae`, applied within each group (DReG normalises w over a group's K).
  `bound` is MIWAE(M, K); `iwae` is IWAE(M*K) of the same samples.
  """
  model = _importance_model(model, likelihood, prior, posterior, num_averages, num_samples,
                            estimator)

  def terms_fn(m, x, key):
    weighed = _weigh(m, x, key, num_averages, num_samples, estimator)
    bound = _grouped_bound(weighed["log_w"], num_averages)
    return _terms(weighed, bound, _loss(weighed["surrogate"], bound))

  return _without_beta(model, terms_fn)


@register("ciwae")
def ciwae(model, *, likelihood=None, prior=None, posterior=None, num_samples: int = 5,
          ciwae_beta: float = 0.5, estimator: str = "reparam") -> PerExample:
  """CIWAE(beta) = beta * ELBO + (1 - beta) * IWAE_K from the same K samples (Rainforth et al.
  2018); the ELBO here is the mean of the K log-weights.

  `estimator` as for `iwae`; with "dreg" the ELBO part gets DReG's K = 1 case, sticking the
  landing. `bound` is CIWAE(beta); `iwae` and `elbo` are its two parts.
  """
  model = _importance_model(model, likelihood, prior, posterior, 1, num_samples, estimator)
  unit_interval("objective.ciwae_beta", ciwae_beta)

  def terms_fn(m, x, key):
    weighed = _weigh(m, x, key, 1, num_samples, estimator)
    elbo_k = weighed["log_w"].mean()
    bound = ciwae_beta * elbo_k + (1.0 - ciwae_beta) * _grouped_bound(weighed["log_w"], 1)
    surrogate = ciwae_beta * elbo_k + (1.0 - ciwae_beta) * weighed["surrogate"]
    return _terms(weighed, bound, _loss(surrogate, bound))

  return _without_beta(model, terms_fn)


@register("piwae")
def piwae(model, *, likelihood=None, prior=None, posterior=None, num_averages: int = 1,
          num_samples: int = 5, estimator: str = "reparam") -> PerExample:
  """PIWAE(M, K) (Rainforth et al. 2018): from the same M*K samples, the inference network ascends
  MIWAE(M, K) (with `estimator`, as in `miwae`) and the generative network IWAE(M*K).

  The parts are told apart by `elbo_jax.vae.split_params`. The log-weights are evaluated twice,
  once with the generative parameters stopped and once with the inference ones stopped, so this
  costs two passes (three with dreg). `bound` is IWAE(M*K); `miwae` is MIWAE(M, K).
  """
  model = _importance_model(model, likelihood, prior, posterior, num_averages, num_samples,
                            estimator)
  if not hasattr(model, "inference_modules"):
    raise ConfigError("objective.name='piwae' needs a model that names its inference_modules and "
                      "generative_modules (see elbo_jax.vae)")

  def inference_fn(m, x, key):
    return _weigh(m, x, key, num_averages, num_samples, estimator)

  def generative_fn(m, x, key):
    # With q's parameters stopped every estimator gives the generative network the same gradient.
    return _weigh(m, x, key, 1, num_averages * num_samples, "reparam")

  def per_example(params, x, key, beta=1.0):
    del beta  # Importance-weighted bounds have no KL weight.
    inference, generative = split_params(model, params)
    stop = jax.lax.stop_gradient
    key = xla.fast_key(key)
    q_side = model.apply(merge_params(inference, stop(generative)), x, key, method=inference_fn)
    p_side = model.apply(merge_params(stop(inference), generative), x, key, method=generative_fn)
    bound = _grouped_bound(p_side["log_w"], 1)
    # Each surrogate reaches only its own parameters, so the sum gives each part its own gradient.
    loss = _loss(q_side["surrogate"] + p_side["surrogate"], bound)
    return _terms(p_side, bound, loss) | {"miwae": _grouped_bound(p_side["log_w"], num_averages)}

  per_example.model = model
  return per_example


def batched(per_example: PerExample, checked: bool = False) -> PerExample:
  """`per_example` vmapped over a batch of examples and keys and jitted: f(params, x, keys, beta).

  Compiled with `elbo_jax.xla.jit`, as the training loop is. A wrong shape or dtype of x is always
  refused while tracing; `checked=True` also checks x's values (Bernoulli data outside [0, 1],
  8-bit levels outside 0..255 or not whole) and raises a one-line ConfigError naming the problem
  (`likelihoods.checked`), at the cost of a few reductions over x per call.
  """
  vmapped = jax.vmap(per_example, in_axes=(None, 0, 0, None))
  return likelihoods.checked(vmapped) if checked else xla.jit(vmapped)


def reduce_loss(terms: dict, beta=1.0, free_bits=0.0, batch_loss=None):
  """The batch loss from per-example terms (leading batch axis): the mean of `loss`, plus
  `batch_loss(terms)` for an objective that also penalises the batch as a whole (its per-example
  function's `batch_loss`, see `register`).

  With free bits (Kingma et al. 2016) each latent dimension's batch-averaged KL counts as at least
  `free_bits` nats, so the optimiser gains nothing by pushing a dimension's KL below it.
  `free_bits` may be traced (one value per vectorised replica): a replica whose value is 0 then
  gets exactly the plain loss, value and gradient.
  """
  extra = 0.0 if batch_loss is None else batch_loss(terms)
  if isinstance(free_bits, (int, float)) and not free_bits:
    return terms["loss"].mean() + extra
  check_free_bits(terms)
  kl = jnp.maximum(terms["kl_per_dim"].mean(0), free_bits).sum()
  return jnp.where(free_bits > 0, -terms["log_px_given_z"].mean() + beta * kl,
                   terms["loss"].mean()) + extra


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


def traced_options(name: str) -> tuple[str, ...]:
  """The options of the objective `name` that vary per replica as traced values (`register`)."""
  return getattr(OBJECTIVES.get(name), "traced", ())


def from_config(model, cfg) -> PerExample:
  """Builds the per-example objective named by an `objective` ConfigDict: its constructor gets
  the section's fields it declares (`registry.option_names`); another field set away from its
  default is a one-line ConfigError naming the objectives that read it."""
  OBJECTIVES.check_unread(cfg, read=READ_BY_TRAINER)
  return OBJECTIVES.get(cfg.name)(model, **OBJECTIVES.options(cfg))
