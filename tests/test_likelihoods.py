"""Likelihoods p(x|z): densities against scipy / float64 closed forms, normalisation, stability."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from elbo_jax import distributions, likelihoods
from elbo_jax.registry import ConfigError

EXTREME_LOGITS = np.array(
    [-1e4, -100.0, -20.0, -0.5, -0.49, -1e-4, -1e-7, 0.0, 1e-7, 1e-4, 0.49, 0.5, 20.0, 100.0, 1e4],
    np.float32,
)


def _rng(seed=0):
  return np.random.default_rng(seed)


# The tests call everything through jit: one compilation per function is far faster than eager
# op-by-op dispatch.
_jit = jax.jit
bernoulli_log_prob = _jit(distributions.bernoulli_log_prob)
cb_log_prob = _jit(distributions.continuous_bernoulli_log_prob)
dlm_log_prob = _jit(distributions.discretized_logistic_mixture_log_prob)
categorical_log_prob = _jit(distributions.categorical_log_prob)


def _init(module, *args, method):
  return _jit(module.init, static_argnames="method")(jax.random.PRNGKey(0), *args, method=method)


def _zero_variables(module, *args, method):
  """The module's variables as zeros, from abstract evaluation (no compilation)."""
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, method=method))
  return jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype), shapes)


def _apply(module, method, *args, variables=None):
  variables = _init(module, *args, method=method) if variables is None else variables
  return _jit(module.apply, static_argnames="method")(variables, *args, method=method)


# Float64 references in lambda = sigmoid(logits) space, independent of the logit-space code.


def _cb_log_norm_ref(logits):
  logits = np.asarray(logits, np.float64)
  lam = special.expit(logits)
  with np.errstate(divide="ignore", invalid="ignore"):
    closed = np.log(2.0 * np.arctanh(1.0 - 2.0 * lam) / (1.0 - 2.0 * lam))
  l2 = logits**2
  series = np.log(2.0) + l2 / 12 - 7 * l2**2 / 1440 + 31 * l2**3 / 90720
  return np.where(np.abs(logits) < 1e-3, series, closed)


def _cb_log_norm_grad_ref(logits):
  logits = np.asarray(logits, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    closed = 1.0 / logits - 1.0 / np.sinh(logits)  # d/dl log(l / tanh(l / 2))
  return np.where(np.abs(logits) < 1e-3, logits / 6 - 7 * logits**3 / 360, closed)


def _cb_mean_ref(logits):
  logits = np.asarray(logits, np.float64)
  lam = special.expit(logits)
  with np.errstate(divide="ignore", invalid="ignore"):
    closed = lam / (2 * lam - 1) + 1 / (2 * np.arctanh(1 - 2 * lam))
  return np.where(np.abs(logits) < 1e-3, 0.5 + logits / 12 - logits**3 / 720, closed)


def _cb_cdf_ref(x, logits):
  lam = special.expit(np.float64(logits))
  return (lam**x * (1 - lam) ** (1 - x) + lam - 1) / (2 * lam - 1)


def _dlm_log_prob_ref(x, logit_probs, means, log_scales):
  """PixelCNN++ bin masses from scipy's logistic, tails in log space. x: [N]; params: [N, K]."""
  centre = x[:, None] / 127.5 - 1.0
  scales = np.exp(log_scales)
  upper = (centre + 1 / 255 - means) / scales
  lower = (centre - 1 / 255 - means) / scales
  # log(F(upper) - F(lower)) from whichever tail keeps the subtraction accurate.
  log_sf_lower, log_sf_upper = stats.logistic.logsf(lower), stats.logistic.logsf(upper)
  log_cdf_lower, log_cdf_upper = stats.logistic.logcdf(lower), stats.logistic.logcdf(upper)
  with np.errstate(divide="ignore"):  # the unused tail may be log(0)
    log_bin = np.where(
        lower > 0,
        log_sf_lower + np.log1p(-np.exp(log_sf_upper - log_sf_lower)),
        log_cdf_upper + np.log1p(-np.exp(log_cdf_lower - log_cdf_upper)),
    )
  log_bin = np.where(x[:, None] == 0, log_cdf_upper, log_bin)
  log_bin = np.where(x[:, None] == 255, log_sf_lower, log_bin)
  log_weights = logit_probs - special.logsumexp(logit_probs, axis=-1, keepdims=True)
  return special.logsumexp(log_weights + log_bin, axis=-1)


def _random_dlm_params(rng, n, k, log_scale_range=(-7.0, 2.0)):
  return (
      rng.normal(size=(n, k)) * 2.0,
      rng.uniform(-1.5, 1.5, size=(n, k)),
      rng.uniform(*log_scale_range, size=(n, k)),
  )


# Elementwise densities against independent references.


def test_bernoulli_matches_scipy():
  rng = _rng()
  logits = rng.normal(size=200).astype(np.float32) * 5
  x = rng.integers(0, 2, size=200)
  got = bernoulli_log_prob(x.astype(np.float32), logits)
  want = stats.bernoulli.logpmf(x, special.expit(logits.astype(np.float64)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Non-binary x in [0, 1] is the negative binary cross-entropy.
  soft_x = rng.uniform(size=200)
  p = special.expit(logits.astype(np.float64))
  want = soft_x * np.log(p) + (1 - soft_x) * np.log1p(-p)
  got = bernoulli_log_prob(soft_x.astype(np.float32), logits)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [784, 777, 5])  # a multiple of the log's group size, and not
def test_summed_bernoulli_matches_scipy_and_has_the_elementwise_gradient(size):
  rng = _rng(11)
  logits = (rng.normal(size=(3, size)) * 5).astype(np.float32)
  x = rng.integers(0, 2, size=size)
  p = special.expit(logits.astype(np.float64))
  got = _jit(distributions.bernoulli_log_prob_sum)(x.astype(np.float32), logits)
  np.testing.assert_allclose(got, stats.bernoulli.logpmf(x, p).sum(-1), rtol=1e-6, atol=1e-5)
  grad = _jit(jax.grad(lambda l: distributions.bernoulli_log_prob_sum(x, l).sum()))(logits)
  np.testing.assert_allclose(grad, x - p, atol=1e-6)
  soft_x = rng.uniform(size=size)
  grad_x = _jit(jax.grad(lambda x: distributions.bernoulli_log_prob_sum(x, logits).sum()))(soft_x)
  np.testing.assert_allclose(grad_x, logits.astype(np.float64).sum(0), atol=1e-5)


@pytest.mark.parametrize("variance", ["fixed", "global", "per_pixel"])
def test_gaussian_matches_scipy(variance):
  rng = _rng(1)
  event_shape = (3, 2)
  module = likelihoods.Gaussian(event_shape=event_shape, variance=variance, scale=0.3)
  raw = rng.normal(size=(4, *event_shape)).astype(np.float32)
  x = rng.normal(size=event_shape).astype(np.float32)
  variables = _init(module, raw, x, method="log_prob")
  if variance == "fixed":
    scale = np.full(event_shape, 0.3)
  else:
    log_scale = rng.normal(size=() if variance == "global" else event_shape).astype(np.float32)
    variables = {"params": {"log_scale": jnp.asarray(log_scale)}}
    scale = np.broadcast_to(np.exp(log_scale.astype(np.float64)), event_shape)
  got = _apply(module, "log_prob", raw, x, variables=variables)
  want = stats.norm.logpdf(x, raw, scale).sum(axis=(-2, -1))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_continuous_bernoulli_log_prob_matches_closed_form():
  rng = _rng(2)
  logits = rng.uniform(-15, 15, size=300)
  x = rng.uniform(size=300)
  lam = special.expit(logits)
  want = (
      x * np.log(lam) + (1 - x) * np.log1p(-lam)
      + np.log(2 * np.arctanh(1 - 2 * lam) / (1 - 2 * lam))
  )
  got = cb_log_prob(x.astype(np.float32), logits.astype(np.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5)


def test_continuous_bernoulli_log_norm_is_accurate_and_smooth_through_one_half():
  # A dense grid through lambda = 0.5 that straddles the series/closed-form switch at |l| = 0.5.
  logits = np.concatenate([
      np.linspace(-3, 3, 6001), np.linspace(0.499, 0.501, 101), np.linspace(-0.501, -0.499, 101),
      [0.0, 1e-30, -1e-30, 4e-4, -4e-4],  # 4e-4 in logits is lambda = 0.5 +- 1e-4
  ]).astype(np.float32)
  exact_inputs = logits.astype(np.float64)
  value, grad = _jit(jax.vmap(jax.value_and_grad(distributions.continuous_bernoulli_log_norm)))(
      logits
  )
  np.testing.assert_allclose(value, _cb_log_norm_ref(exact_inputs), rtol=0, atol=5e-7)
  np.testing.assert_allclose(grad, _cb_log_norm_grad_ref(exact_inputs), rtol=0, atol=5e-7)
  mean = _jit(distributions.continuous_bernoulli_mean)(logits)
  np.testing.assert_allclose(mean, _cb_mean_ref(exact_inputs), rtol=0, atol=5e-7)
  # Far from 0.5: log C = log|l| - log tanh(|l| / 2), and tanh(|l| / 2) = 1 in float64 here.
  far = np.array([-1e4, -200.0, 50.0, 1e4], np.float32)
  np.testing.assert_allclose(distributions.continuous_bernoulli_log_norm(far), np.log(np.abs(far)),
                             rtol=1e-6)
  np.testing.assert_allclose(distributions.continuous_bernoulli_mean(far),
                             np.where(far > 0, 1 - 1 / far, -1 / far), rtol=1e-6)


LAMBDA_LOGITS = {
    "lambda=1e-6": special.logit(1e-6),
    "lambda=0.5-1e-4": special.logit(0.5 - 1e-4),
    "lambda=0.5": 0.0,
    "lambda=0.5+1e-4": special.logit(0.5 + 1e-4),
    "lambda=1-1e-6": special.logit(1 - 1e-6),
    "lambda=0.3": special.logit(0.3),
    "lambda=0.8": special.logit(0.8),
    "logits=-1e4": -1e4,
    "logits=1e4": 1e4,
}


@pytest.mark.parametrize("logits", LAMBDA_LOGITS.values(), ids=LAMBDA_LOGITS.keys())
def test_continuous_bernoulli_density_integrates_to_one(logits):
  # Gauss-Legendre on [0, e], [e, 1 - e], [1 - e, 1]: for large |l| the mass sits within ~1/|l| of
  # an edge, and e = 20/|l| holds all but e^-20 of it.
  edge = min(0.5, 20.0 / max(abs(logits), 1.0))
  nodes, weights = np.polynomial.legendre.leggauss(200)
  total = 0.0
  for lo, hi in [(0.0, edge), (edge, 1.0 - edge), (1.0 - edge, 1.0)]:
    x = lo + (hi - lo) * (nodes + 1) / 2
    density = np.exp(np.asarray(cb_log_prob(x.astype(np.float32), np.float32(logits)), np.float64))
    total += (hi - lo) / 2 * np.dot(weights, density)
  assert abs(total - 1.0) < 1e-5


def test_continuous_bernoulli_samples_follow_the_cdf():
  module = likelihoods.ContinuousBernoulli(event_shape=(20000,))
  for logits in [0.0, 3e-7, -2.0, 7.0, 300.0]:
    x = _apply(module, "sample", jax.random.PRNGKey(3), jnp.full((20000,), logits))
    x = np.asarray(x, np.float64)
    assert np.all((x >= 0) & (x <= 1))
    if logits == 0.0:
      assert stats.kstest(x, "uniform").pvalue > 1e-3
    elif logits == 300.0:  # lambda^x underflows in the float64 CDF; the mean is 1 - 1/300
      assert abs(x.mean() - (1 - 1 / 300)) < 1e-4
    else:
      assert stats.kstest(x, lambda t, l=logits: _cb_cdf_ref(t, l)).pvalue > 1e-3


def test_discretized_logistic_mixture_matches_scipy():
  rng = _rng(4)
  n, k = 512, 4
  params = _random_dlm_params(rng, n, k, log_scale_range=(-5.0, 1.0))
  x = rng.integers(0, 256, size=n)
  x[:20], x[20:40] = 0, 255
  got = dlm_log_prob(x, *(p.astype(np.float32) for p in params))
  np.testing.assert_allclose(got, _dlm_log_prob_ref(x, *params), rtol=2e-5, atol=2e-5)


def test_discretized_logistic_mixture_tiny_probabilities_are_exact():
  # Bins ~150 scales out in either tail, where sigma(p) - sigma(m) is 0 in float32 and PixelCNN++
  # would switch to its midpoint approximation.
  x = np.array([200, 30, 254, 1])
  logit_probs = np.zeros((4, 1))
  means = np.array([[-0.5], [0.5], [-1.0], [1.0]])
  log_scales = np.full((4, 1), -5.0)
  got = dlm_log_prob(
      x, logit_probs.astype(np.float32), means.astype(np.float32), log_scales.astype(np.float32)
  )
  want = _dlm_log_prob_ref(x, logit_probs, means, log_scales)
  assert np.all(want < -100)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_categorical_matches_log_softmax():
  rng = _rng(5)
  logits = rng.normal(size=(7, 256)) * 3
  x = rng.integers(0, 256, size=7)
  got = categorical_log_prob(x, logits.astype(np.float32))
  want = (logits - special.logsumexp(logits, axis=-1, keepdims=True))[np.arange(7), x]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# Normalisation over the discrete supports.


def test_bernoulli_sums_to_one():
  logits = EXTREME_LOGITS[np.abs(EXTREME_LOGITS) < 50]
  total = np.exp(bernoulli_log_prob(np.array([[0.0], [1.0]], np.float32), logits)).sum(0)
  np.testing.assert_allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_discretized_logistic_mixture_sums_to_one(seed):
  rng = _rng(10 + seed)
  params = [p.astype(np.float32) for p in _random_dlm_params(rng, 6, 5, (-9.0, 4.0))]
  levels = np.arange(256)[:, None]  # [256, 1] against params [6, K]
  log_p = dlm_log_prob(levels, *params)  # [256, 6]
  np.testing.assert_allclose(jax.nn.logsumexp(log_p, axis=0), 0.0, atol=1e-5)


def test_categorical_sums_to_one():
  logits = jnp.asarray(_rng(6).normal(size=(3, 256)) * 10, jnp.float32)
  log_p = categorical_log_prob(np.arange(256)[:, None], logits)  # [256, 3]
  np.testing.assert_allclose(jax.nn.logsumexp(log_p, axis=0), 0.0, atol=1e-5)


# Stability: values and gradients at extreme parameters.


@pytest.mark.parametrize("fn", [
    distributions.bernoulli_log_prob, distributions.bernoulli_log_prob_sum,
    distributions.continuous_bernoulli_log_prob,
    lambda x, logits: distributions.continuous_bernoulli_mean(logits),
])
def test_unit_interval_functions_and_grads_are_finite_at_extremes(fn):
  logits = jnp.asarray(np.tile(EXTREME_LOGITS, 3))
  x = jnp.repeat(jnp.array([0.0, 0.3, 1.0]), EXTREME_LOGITS.size)
  value, grads = _jit(jax.value_and_grad(lambda x, logits: fn(x, logits).sum(), argnums=(0, 1)))(
      x, logits
  )
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)


def test_discretized_logistic_mixture_and_grads_are_finite_at_extremes():
  values = np.array([-1e4, -30.0, 0.0, 30.0, 1e4], np.float32)
  grid = np.stack(np.meshgrid(values, values, values, indexing="ij"), -1).reshape(-1, 3)
  logit_probs = jnp.stack([grid[:, 0], jnp.zeros(len(grid))], -1)
  means = jnp.stack([grid[:, 1], jnp.full(len(grid), 0.1)], -1)
  log_scales = jnp.stack([grid[:, 2], jnp.full(len(grid), -100.0)], -1)
  levels = jnp.array([0, 1, 128, 254, 255])[:, None]  # [5, 1] against params [125, 2]
  log_p, grads = _jit(jax.vmap(jax.value_and_grad(
      lambda *p: distributions.discretized_logistic_mixture_log_prob(*p).sum(), argnums=(1, 2, 3)
  ), in_axes=(0, None, None, None)))(levels, logit_probs, means, log_scales)
  assert np.all(np.isfinite(log_p)) and all(np.all(np.isfinite(g)) for g in grads)


MODULES = {
    "bernoulli": {},
    "continuous_bernoulli": {},
    "gaussian/fixed": {"variance": "fixed", "scale": 0.5},
    "gaussian/global": {"variance": "global"},
    "gaussian/per_pixel": {"variance": "per_pixel"},
    "discretized_logistic_mixture": {"num_mixtures": 3},
    "categorical": {},
}
EVENT_SHAPE = (4, 3, 2)


def _make(spec):
  return likelihoods.LIKELIHOODS.get(spec.split("/")[0])(event_shape=EVENT_SHAPE, **MODULES[spec])


def _data(module, shape):
  rng = _rng(7)
  if module.data_kind == "uint8":
    return rng.integers(0, 256, size=shape).astype(np.float32)
  if module.data_kind == "unit_interval":
    return rng.uniform(size=shape).astype(np.float32)
  return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("spec", MODULES)
def test_module_log_prob_and_grad_finite_at_extreme_raw(spec):
  module = _make(spec)
  raw = jnp.asarray(np.resize(EXTREME_LOGITS, (2, *module.param_shape)))
  x = _data(module, EVENT_SHAPE)
  variables = _zero_variables(module, raw, x, method="log_prob")
  log_p, grad = _jit(jax.value_and_grad(
      lambda raw: module.apply(variables, raw, x, method="log_prob").sum()
  ))(raw)
  assert np.isfinite(log_p) and np.all(np.isfinite(grad))


# Module interface: shapes, parameters, configuration errors.


def test_registry_and_class_attributes():
  assert likelihoods.LIKELIHOODS.names() == sorted(
      ["bernoulli", "categorical", "continuous_bernoulli", "discretized_logistic_mixture",
       "gaussian"]
  )
  registry = likelihoods.LIKELIHOODS
  kinds = {name: registry.get(name).data_kind for name in registry.names()}
  assert kinds == {
      "bernoulli": "unit_interval", "continuous_bernoulli": "unit_interval", "gaussian": "real",
      "discretized_logistic_mixture": "uint8", "categorical": "uint8",
  }
  for name in registry.names():
    assert registry.get(name).reports_bits_per_dim == (kinds[name] == "uint8")


def test_param_shapes_need_no_binding():
  assert likelihoods.Bernoulli(event_shape=(28, 28, 1)).param_shape == (28, 28, 1)
  assert likelihoods.Gaussian(event_shape=(28, 28, 1)).param_shape == (28, 28, 1)
  dlm = likelihoods.DiscretizedLogisticMixture(event_shape=(32, 32, 3), num_mixtures=10)
  assert dlm.param_shape == (32, 32, 90)
  assert likelihoods.Categorical(event_shape=(32, 32, 3)).param_shape == (32, 32, 768)


@pytest.mark.parametrize("spec", MODULES)
def test_module_shapes(spec):
  module = _make(spec)
  raw = jnp.asarray(_rng(8).normal(size=(2, 5, *module.param_shape)), jnp.float32)
  x = _data(module, EVENT_SHAPE)
  xs = _data(module, (2, 5, *EVENT_SHAPE))
  # Shapes come from abstract evaluation; values (ranges) need only mean and sample to run.
  variables = _zero_variables(module, raw, x, method="log_prob")
  for data in (x, xs):
    log_p = jax.eval_shape(lambda data=data: module.apply(variables, raw, data, method="log_prob"))
    assert log_p.shape == (2, 5)
  # Eager: these small graphs reuse per-op compilations across the parametrised cases.
  mean = module.apply(variables, raw, method="mean")
  sample = module.apply(variables, jax.random.PRNGKey(1), raw, method="sample")
  assert mean.shape == sample.shape == (2, 5, *EVENT_SHAPE)
  if module.data_kind == "unit_interval":
    assert np.all((mean >= 0) & (mean <= 1) & (sample >= 0) & (sample <= 1))
  if module.data_kind == "uint8":
    assert np.all((mean >= 0) & (mean <= 255) & (sample >= 0) & (sample <= 255))
    np.testing.assert_array_equal(sample, np.round(sample))


@pytest.mark.parametrize("variance,count", [("fixed", 0), ("global", 1), ("per_pixel", 24)])
def test_gaussian_parameter_counts(variance, count):
  module = likelihoods.Gaussian(event_shape=EVENT_SHAPE, variance=variance, scale=2.0)
  variables = _init(module, jnp.zeros(EVENT_SHAPE), jnp.zeros(EVENT_SHAPE), method="log_prob")
  leaves = jax.tree.leaves(variables)
  assert sum(leaf.size for leaf in leaves) == count
  assert all(np.allclose(leaf, math.log(2.0)) for leaf in leaves)


@pytest.mark.parametrize("spec", ["bernoulli", "gaussian/per_pixel", "categorical"])
def test_module_works_inside_a_parent_module(spec):
  likelihood = _make(spec)

  class Decoder(nn.Module):
    likelihood: nn.Module

    @nn.compact
    def __call__(self, z, x):
      raw = nn.Dense(math.prod(self.likelihood.param_shape))(z)
      return self.likelihood.log_prob(raw.reshape(*z.shape[:-1], *self.likelihood.param_shape), x)

  model = Decoder(likelihood)
  z, x = jnp.ones((3, 2)), _data(likelihood, EVENT_SHAPE)
  variables = _jit(model.init)(jax.random.PRNGKey(0), z, x)
  assert set(variables["params"]) <= {"Dense_0", "likelihood"}
  assert _jit(model.apply)(variables, z, x).shape == (3,)


def test_discretized_logistic_mixture_mean_is_within_half_a_level_of_the_exact_mean():
  module = likelihoods.DiscretizedLogisticMixture(event_shape=(50, 1), num_mixtures=3)
  params = _random_dlm_params(_rng(9), 50, 3)
  raw = jnp.asarray(np.stack(params, axis=1).reshape(50, 9), jnp.float32)  # [50, 3 * K]
  mean = _apply(module, "mean", raw)[:, 0]
  levels = np.arange(256)[:, None]
  probs = np.exp(_dlm_log_prob_ref(np.repeat(levels, 50), *(np.tile(p, (256, 1)) for p in params)))
  exact = (probs.reshape(256, 50) * levels).sum(0)
  assert np.all(np.abs(mean - exact) <= 0.5 + 1e-3)


def test_discretized_logistic_mixture_samples_match_probabilities():
  module = likelihoods.DiscretizedLogisticMixture(event_shape=(1,), num_mixtures=2)
  raw = jnp.array([0.3, -0.2, -0.6, 0.9, -3.0, -2.0], jnp.float32)  # [logits, means, log-scales]
  samples = _apply(module, "sample", jax.random.PRNGKey(2), jnp.broadcast_to(raw, (40000, 6)))
  frequencies = np.bincount(np.asarray(samples[:, 0], np.int64), minlength=256) / 40000
  probs = np.exp(_apply(module, "log_prob", raw[None], np.arange(256)[:, None]))
  assert 0.5 * np.abs(frequencies - probs).sum() < 0.03


def test_unknown_options_raise_config_errors_naming_the_field():
  with pytest.raises(ConfigError, match=r"likelihood\.variance='foo'.*fixed, global, per_pixel"):
    likelihoods.Gaussian(event_shape=(2,), variance="foo")
  with pytest.raises(ConfigError, match=r"likelihood\.scale"):
    likelihoods.Gaussian(event_shape=(2,), scale=-1.0)
  with pytest.raises(ConfigError, match=r"likelihood\.num_mixtures"):
    likelihoods.DiscretizedLogisticMixture(event_shape=(2,), num_mixtures=0)
  with pytest.raises(ConfigError, match=r"likelihood\.event_shape"):
    likelihoods.Bernoulli(event_shape=())
  with pytest.raises(ConfigError, match=r"likelihood\.name='bernouli'"):
    likelihoods.LIKELIHOODS.get("bernouli")


def test_bits_per_dim():
  np.testing.assert_allclose(likelihoods.bits_per_dim(3072 * math.log(2.0) * 3.5, (32, 32, 3)), 3.5)
