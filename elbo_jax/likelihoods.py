"""Observation models p(x|z) as Flax modules, selected by name through `LIKELIHOODS`.

Chosen: small hand-written modules over the pure functions in `elbo_jax.distributions`, for the
reasons given there (no distrax/TFP dependency; every density is checked against scipy in tests/).
They are Flax modules, not plain functions, because the Gaussian's variance can be a learned
parameter; `setup()` creates it so every method can read it.

Interface (the VAE in `elbo_jax.vae` relies on it), for `event_shape` = the shape of one datum:
  param_shape                      shape the decoder outputs for ONE example (needs no binding)
  log_prob(raw, x) -> [...]        raw: [..., *param_shape], x: [..., *event_shape] (broadcasts);
                                   log p(x|z) in nats, summed over the event dimensions
  mean(raw), sample(key, raw)      -> [..., *event_shape], float32
  data_kind                        "unit_interval" (x in [0, 1]), "real", or "uint8" (0..255)
  reports_bits_per_dim             True where log p is a probability of discrete 8-bit data

Data checks: every objective and the evaluator score x through `log_prob`, which first refuses
(ConfigError) what is knowable while tracing: x whose shape does not end with `event_shape`, and an
integer dtype for a likelihood over [0, 1] (uint8 images 0..255 would give a positive "ELBO").
The 8-bit likelihoods accept integer and float dtypes (levels as whole numbers). What only values
reveal (x outside [0, 1]; levels outside 0..255 or not whole) is checked in programs built with
`checked`, through `jax.experimental.checkify`.
"""

from __future__ import annotations

import contextvars
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import checkify

from elbo_jax import distributions, xla
from elbo_jax.registry import ConfigError, Registry, positive, positive_int

LIKELIHOODS = Registry("likelihood.name")

_VARIANCES = ("fixed", "global", "per_pixel")
_NUM_LEVELS = 256


# Whether the likelihoods traced now add checkify value checks (only inside `checked` programs:
# a check staged outside checkify is an error).
_VALUE_CHECKS = contextvars.ContextVar("elbo_jax_value_checks", default=False)
_FOR_8_BIT = "or use likelihood 'categorical' or 'discretized_logistic_mixture' for 8-bit data"


def bits_per_dim(nats, event_shape):
  """Converts nats per example (e.g. a negative log-likelihood) to bits per data dimension."""
  return nats / (math.prod(event_shape) * math.log(2.0))


def checked(fn):
  """`fn` jitted with the value checks of the likelihoods it scores data with (`check_data`).

  The checks run inside the compiled program (`jax.experimental.checkify`), so they cost a few
  reductions over x per call; the returned function raises a one-line ConfigError naming the first
  problem found, else returns what `fn` returns.
  """
  def with_value_checks(*args):
    token = _VALUE_CHECKS.set(True)
    try:
      return fn(*args)
    finally:
      _VALUE_CHECKS.reset(token)

  program = xla.jit(checkify.checkify(with_value_checks))

  def run(*args):
    error, out = program(*args)
    problem = error.get()
    if problem:
      # checkify appends where the check failed; the message already says what is wrong.
      raise ConfigError(re.sub(r"\s*\(`check` failed\)$", "", problem.splitlines()[0]))
    return out

  return run


class Likelihood(nn.Module):
  """Shared fields and checks; `event_shape` is one datum's shape, e.g. (28, 28, 1)."""

  event_shape: tuple

  data_kind = "real"
  reports_bits_per_dim = False

  def __post_init__(self):
    shape = self.event_shape
    if not isinstance(shape, (tuple, list)) or not shape or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape
    ):
      raise ConfigError(
          f"likelihood.event_shape={shape!r} must be a non-empty tuple of positive integers"
      )
    super().__post_init__()

  @property
  def param_shape(self) -> tuple:
    return tuple(self.event_shape)

  def log_prob(self, raw, x):
    """log p(x|z) in nats: raw [..., *param_shape], x [..., *event_shape] -> [...]."""
    self.check_data(x)
    return self._log_prob(raw, x)

  def check_data(self, x) -> None:
    """Refuses x [..., *event_shape] that this likelihood cannot score (see the module docstring).

    Shape and dtype raise a ConfigError while tracing; value checks are added in `checked`.
    """
    name = f"the {type(self).__name__} likelihood"
    shape, event = tuple(jnp.shape(x)), tuple(self.event_shape)
    if shape[max(len(shape) - len(event), 0):] != event:
      raise ConfigError(f"{name} has event_shape {event}, but x has shape {shape}; reshape each "
                        f"example to {event} (a batch to [batch, {', '.join(map(str, event))}])")
    dtype = jnp.result_type(x)
    integer = jnp.issubdtype(dtype, jnp.integer)
    if self.data_kind == "unit_interval":
      to_unit = f"scale x to [0, 1] (x / 255, then binarise it for 'bernoulli'), {_FOR_8_BIT}"
      if integer:
        raise ConfigError(f"{name} scores values in [0, 1], but x has integer dtype {dtype}; "
                          f"{to_unit}")
      if _VALUE_CHECKS.get():
        checkify.check(jnp.all((x >= 0) & (x <= 1)),
                       f"{name} scores values in [0, 1], but x holds values from {{lo:.4g}} to "
                       f"{{hi:.4g}}; {to_unit}", lo=jnp.min(x), hi=jnp.max(x))
    elif self.data_kind == "uint8" and _VALUE_CHECKS.get() and dtype != jnp.uint8:
      levels = (f"{name} scores 8-bit levels, whole numbers 0..255, but x holds values from "
                f"{{lo:.4g}} to {{hi:.4g}}")
      advice = ("; pass the images as uint8 (np.round(x * 255) for data in [0, 1]), or use "
                "likelihood 'bernoulli', 'continuous_bernoulli' or 'gaussian' for data in [0, 1]")
      lo, hi = jnp.min(x), jnp.max(x)
      checkify.check((lo >= 0) & (hi <= 255), levels + advice, lo=lo, hi=hi)
      if not integer:
        checkify.check(jnp.all(x == jnp.round(x)), levels + ", not all of them whole" + advice,
                       lo=lo, hi=hi)

  def _sum_event(self, per_element):
    return per_element.sum(axis=tuple(range(-len(self.event_shape), 0)))

  def _flat_event(self, a):
    """a [..., *event_shape] -> [..., prod(event_shape)]; a scalar stays a scalar.

    On XLA:CPU, computing the terms over one flat axis rather than over [28, 28, 1] made the whole
    K=5000 evaluation of an MLP VAE about 20% faster.
    """
    n = len(self.event_shape)
    return a if jnp.ndim(a) < n else a.reshape(*jnp.shape(a)[:jnp.ndim(a) - n], -1)

  def _sum_elementwise(self, log_prob_fn, *args):
    """sum over the event of log_prob_fn(*args), each arg [..., *event_shape] or a scalar."""
    return log_prob_fn(*map(self._flat_event, args)).sum(-1)


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
  """Independent Bernoulli per element; raw = logits [..., *event_shape]."""

  data_kind = "unit_interval"

  def _log_prob(self, raw, x):
    return distributions.bernoulli_log_prob_sum(self._flat_event(x), self._flat_event(raw))

  def mean(self, raw):
    return jax.nn.sigmoid(raw)

  def sample(self, key, raw):
    return jax.random.bernoulli(key, jax.nn.sigmoid(raw)).astype(jnp.float32)


@LIKELIHOODS.register("continuous_bernoulli")
class ContinuousBernoulli(Likelihood):
  """Continuous Bernoulli per element (Loaiza-Ganem & Cunningham, 2019); raw = logits.

  `mean` is the distribution's mean, which is not lambda = sigmoid(raw).
  """

  data_kind = "unit_interval"

  def _log_prob(self, raw, x):
    return self._sum_elementwise(distributions.continuous_bernoulli_log_prob, x, raw)

  def mean(self, raw):
    return distributions.continuous_bernoulli_mean(raw)

  def sample(self, key, raw):
    # Inverse CDF: F^-1(u) = log1p(u expm1(l)) / l. It is evaluated at l = -|logits| (expm1 cannot
    # overflow there) and mirrored, since x ~ CB(l) <=> 1 - x ~ CB(-l).
    u = jax.random.uniform(key, raw.shape)
    a = -jnp.abs(raw)
    near_half = a > -1e-6
    a_safe = jnp.where(near_half, -1.0, a)
    y = jnp.where(near_half, u, jnp.log1p(u * jnp.expm1(a_safe)) / a_safe)
    return jnp.where(raw > 0, 1.0 - y, y)


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
  """Independent Gaussian per element; raw = means [..., *event_shape].

  Attributes:
    variance: "fixed" (scale = `scale`), "global" (one learned log-scale), or "per_pixel" (a learned
      log-scale per data element); learned scales do not depend on z and start at `scale`.
    scale: the fixed standard deviation, or the initial one of a learned scale.
  """

  variance: str = "fixed"
  scale: float = 1.0

  def __post_init__(self):
    if self.variance not in _VARIANCES:
      raise ConfigError(
          f"likelihood.variance={self.variance!r} is not known; "
          f"allowed values: {', '.join(_VARIANCES)}"
      )
    positive("likelihood.scale", self.scale)
    super().__post_init__()

  def setup(self):
    if self.variance == "fixed":
      return
    shape = () if self.variance == "global" else tuple(self.event_shape)
    self.log_scale = self.param(
        "log_scale", nn.initializers.constant(math.log(self.scale)), shape, jnp.float32
    )

  def _log_scale(self):
    return math.log(self.scale) if self.variance == "fixed" else self.log_scale

  def _log_prob(self, raw, x):
    return self._sum_elementwise(distributions.diag_normal_log_prob_per_dim, x, raw,
                                 self._log_scale())

  def mean(self, raw):
    return raw

  def sample(self, key, raw):
    return raw + jnp.exp(self._log_scale()) * jax.random.normal(key, raw.shape)


@LIKELIHOODS.register("discretized_logistic_mixture")
class DiscretizedLogisticMixture(Likelihood):
  """PixelCNN++-style discretised mixture of logistics over 256 levels, per element.

  event_shape is (..., C) with channels last. raw: [..., *event_shape[:-1], C * 3 * K], its last
  axis read as [C, 3, K]: per channel, K mixture logits, K means in [-1, 1] units, K log-scales.
  Channels are independent mixtures (no PixelCNN++ RGB coupling): simpler, and the decoder
  conditions every channel on z anyway. x: integers 0..255. mean/sample are in [0, 255].
  """

  num_mixtures: int = 10

  data_kind = "uint8"
  reports_bits_per_dim = True

  def __post_init__(self):
    positive_int("likelihood.num_mixtures", self.num_mixtures)
    super().__post_init__()

  @property
  def param_shape(self) -> tuple:
    *spatial, channels = self.event_shape
    return (*spatial, channels * 3 * self.num_mixtures)

  def _split(self, raw):
    """raw [..., C * 3 * K] -> logit_probs, means, log_scales, each [..., C, K]."""
    params = raw.reshape(*raw.shape[:-1], self.event_shape[-1], 3, self.num_mixtures)
    return params[..., 0, :], params[..., 1, :], params[..., 2, :]

  def _log_prob(self, raw, x):
    log_probs = distributions.discretized_logistic_mixture_log_prob(x, *self._split(raw))
    return self._sum_event(log_probs)

  def mean(self, raw):
    """Mean of the continuous mixture clipped to [-1, 1], as levels in [0, 255] (float32).

    It differs from the mean of the 256-level distribution only by the rounding to levels, so by at
    most half a level, and costs O(K) per element instead of O(256 K).
    """
    logit_probs, means, log_scales = self._split(raw)
    # Clipping both ways keeps s * (softplus - softplus) free of overflow and of cancellation.
    scales = jnp.exp(jnp.clip(log_scales, distributions.DLM_MIN_LOG_SCALE, 7.0))
    # E[clip(y, -1, 1)] = -1 + integral_{-1}^{1} P(y > t) dt for a logistic y.
    clipped_means = -1.0 + scales * (
        jax.nn.softplus((means + 1.0) / scales) - jax.nn.softplus((means - 1.0) / scales)
    )
    mean = jnp.sum(jax.nn.softmax(logit_probs, axis=-1) * clipped_means, axis=-1)
    return 127.5 * (mean + 1.0)

  def sample(self, key, raw):
    """Levels 0..255 as float32 (whole numbers)."""
    logit_probs, means, log_scales = self._split(raw)
    component_key, logistic_key = jax.random.split(key)
    k = jax.random.categorical(component_key, logit_probs, axis=-1)[..., None]
    mean = jnp.take_along_axis(means, k, axis=-1)[..., 0]
    log_scale = jnp.take_along_axis(log_scales, k, axis=-1)[..., 0]
    log_scale = jnp.maximum(log_scale, distributions.DLM_MIN_LOG_SCALE)
    y = mean + jnp.exp(log_scale) * jax.random.logistic(logistic_key, mean.shape)
    # Level v owns [v - 1/2, v + 1/2] in units of 2/255 around its centre v / 127.5 - 1.
    return jnp.clip(jnp.round(127.5 * (y + 1.0)), 0.0, 255.0)


@LIKELIHOODS.register("categorical")
class Categorical(Likelihood):
  """A free 256-way categorical per element.

  raw: [..., *event_shape[:-1], C * 256], its last axis read as [C, 256] logits.

  x: integers 0..255. mean/sample are in [0, 255] (float32).
  """

  data_kind = "uint8"
  reports_bits_per_dim = True

  @property
  def param_shape(self) -> tuple:
    *spatial, channels = self.event_shape
    return (*spatial, channels * _NUM_LEVELS)

  def _logits(self, raw):
    return raw.reshape(*raw.shape[:-1], self.event_shape[-1], _NUM_LEVELS)

  def _log_prob(self, raw, x):
    return self._sum_event(distributions.categorical_log_prob(x, self._logits(raw)))

  def mean(self, raw):
    levels = jnp.arange(_NUM_LEVELS, dtype=jnp.float32)
    return jax.nn.softmax(self._logits(raw), axis=-1) @ levels

  def sample(self, key, raw):
    return jax.random.categorical(key, self._logits(raw), axis=-1).astype(jnp.float32)
