"""ELBO surgery: identities per sample, closed forms on a linear-Gaussian encoder, chunking and
the minibatch estimators' expectations over all batches of a small data set."""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elbo_jax import build, distributions, results
from elbo_jax import data as data_lib
from elbo_jax import kl_decomposition as kd
from elbo_jax import linear_gaussian as lg
from elbo_jax.train import train_and_evaluate
from tests.conftest import tiny_config

D = 2
A = np.array([[1.0, 1.0], [0.0, 0.7]])  # encoder mean A x mixes the two data coordinates
SIGMA = np.array([0.6, 0.9])  # fixed posterior scales


def _linear_gaussian_posteriors(n, seed=0):
  """x ~ N(0, I_2), q(z|x) = N(A x, diag SIGMA^2): means, log_scales [n, 2] (float32).

  The sample is whitened to empirical mean 0 and covariance I, so that q(z)'s first two moments
  are exactly those of the closed form and only its finite-mixture shape differs.
  """
  x = np.random.default_rng(seed).standard_normal((n, D))
  x = x - x.mean(0)
  x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x.T, bias=True))).T
  means = x @ A.T
  return jnp.asarray(means, jnp.float32), jnp.asarray(np.tile(np.log(SIGMA), (n, 1)), jnp.float32)


def _closed_form():
  """q(z) = N(0, S) with S = A A^T + diag SIGMA^2; every term in closed form."""
  cov_q = np.diag(SIGMA**2)
  cov_agg = A @ A.T + cov_q
  var = np.diag(cov_agg)
  logdet_agg = np.linalg.slogdet(cov_agg)[1]
  avg_kl = 0.5 * (np.trace(cov_q) + np.trace(A @ A.T) - D - np.log(SIGMA**2).sum())
  kl_aggregate = float(lg.kl_gaussian(jnp.zeros(D), jnp.asarray(cov_agg), jnp.zeros(D),
                                      jnp.eye(D)))
  return {
      "avg_kl": avg_kl,
      "mutual_info": 0.5 * (logdet_agg - np.log(SIGMA**2).sum()),
      "total_correlation": 0.5 * (np.log(var).sum() - logdet_agg),
      "dimwise_kl": 0.5 * np.sum(var - 1.0 - np.log(var)),
      "kl_aggregate": kl_aggregate,
  }


def _correlated_prior():
  """A non-factorised Gaussian prior N(0, [[1, r], [r, 1]]) with its N(0, 1) marginals."""
  r = 0.5
  prec = np.linalg.inv(np.array([[1.0, r], [r, 1.0]]))
  log_norm = -math.log(2 * math.pi) - 0.5 * math.log(1 - r**2)
  return lambda z: log_norm - 0.5 * z @ jnp.asarray(prec, z.dtype) @ z


@pytest.fixture(scope="module")
def linear_gaussian_terms():
  """Posteriors of 2,000 whitened x and the per-sample terms at 2 samples each."""
  means, log_scales = _linear_gaussian_posteriors(2000)
  samples = kd.decomposition_samples(jax.random.PRNGKey(0), means, log_scales, num_samples=2)
  return means, log_scales, samples


def test_closed_form_terms_match_linear_gaussian_encoder(linear_gaussian_terms):
  _, _, samples = linear_gaussian_terms
  expected = _closed_form()
  for name, value in expected.items():
    est = np.asarray(samples[name], np.float64)
    stderr = est.std() / math.sqrt(est.size)
    # The data set is a finite sample, so q(z) is a mixture of n Gaussians near N(0, S): allow
    # the Monte Carlo error plus a finite-mixture term of 0.02 nats.
    assert abs(est.mean() - value) < 4 * stderr + 0.02, (name, est.mean(), value, stderr)
  assert expected["mutual_info"] > 0.5 and expected["total_correlation"] > 0.05


@pytest.mark.parametrize("use_correlated_prior", [False, True])
def test_terms_sum_to_average_kl_per_sample(use_correlated_prior):
  means, log_scales = _linear_gaussian_posteriors(300, seed=1)
  log_prior = _correlated_prior() if use_correlated_prior else None
  t = kd.decomposition_samples(jax.random.PRNGKey(1), means, log_scales, log_prior=log_prior,
                               chunk_size=64)
  total = t["mutual_info"] + t["total_correlation"] + t["dimwise_kl"] + t["prior_coupling"]
  np.testing.assert_allclose(total, t["avg_kl"], atol=2e-4)
  np.testing.assert_allclose(t["mutual_info"] + t["kl_aggregate"], t["avg_kl"], atol=2e-4)
  coupling = float(jnp.mean(t["prior_coupling"]))
  assert (abs(coupling) > 0.01) if use_correlated_prior else coupling == 0.0


def test_monte_carlo_average_kl_matches_analytic_kl(linear_gaussian_terms):
  means, log_scales, est = linear_gaussian_terms
  analytic = jnp.mean(
      jnp.sum(distributions.kl_diag_normal(means, log_scales, 0.0, 0.0), -1))
  stderr = float(jnp.std(est["avg_kl"])) / math.sqrt(est["avg_kl"].size)
  assert abs(float(jnp.mean(est["avg_kl"])) - float(analytic)) < 4 * stderr


def test_total_correlation_is_zero_for_a_product_grid():
  # Means on a product grid with a diagonal encoder: q(z) is exactly the product of its
  # marginals, so log q(z) - sum_j log q(z_j) vanishes at every sample, not just on average.
  grid = np.array(list(itertools.product([-1.5, 0.0, 0.7, 2.0], [-0.5, 1.0, 3.0])))
  means = jnp.asarray(grid, jnp.float32)
  log_scales = jnp.asarray(np.tile(np.log([0.8, 0.5]), (len(grid), 1)), jnp.float32)
  t = kd.decomposition_samples(jax.random.PRNGKey(3), means, log_scales, num_samples=50)
  np.testing.assert_allclose(t["total_correlation"], 0.0, atol=1e-5)
  assert float(jnp.mean(t["mutual_info"])) > 0.5


def test_chunked_equals_unchunked():
  means, log_scales = _linear_gaussian_posteriors(101, seed=4)
  key = jax.random.PRNGKey(4)
  full = kd.decomposition_samples(key, means, log_scales, chunk_size=101)
  chunked = kd.decomposition_samples(key, means, log_scales, chunk_size=7)
  for name in kd.TERMS:
    np.testing.assert_allclose(chunked[name], full[name], rtol=1e-5, atol=1e-5)


def test_decompose_kl_rejects_bad_input():
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="means and log_scales"):
    kd.decompose_kl(key, jnp.zeros((3, 2)), jnp.zeros((3, 3)))
  with pytest.raises(ValueError, match="chunk_size must be"):
    kd.decompose_kl(key, jnp.zeros((3, 2)), jnp.zeros((3, 2)), chunk_size=0)


def test_decompose_kl_averages_the_samples():
  means, log_scales = _linear_gaussian_posteriors(50, seed=8)
  key = jax.random.PRNGKey(8)
  terms = kd.decompose_kl(key, means, log_scales, chunk_size=64)
  samples = kd.decomposition_samples(key, means, log_scales, chunk_size=64)
  assert set(terms) == set(kd.TERMS)
  for name in kd.TERMS:
    np.testing.assert_allclose(terms[name], jnp.mean(samples[name]), rtol=1e-6)


def _all_batch_estimates(z_i, i, means, log_scales, batch_size, method):
  """Mean over every batch containing i (i first) of q-hat(z_i): joint scalar, per-dim [D]."""
  n = means.shape[0]
  log_w = np.asarray(kd.minibatch_log_weights(batch_size, n, method)[0], np.float64)
  pair = np.asarray(distributions.diag_normal_log_prob_per_dim(z_i, means, log_scales), np.float64)
  joint, dims = [], []
  for rest in itertools.combinations([k for k in range(n) if k != i], batch_size - 1):
    idx = np.array((i,) + rest)
    joint.append(np.sum(np.exp(pair[idx].sum(-1) + log_w)))
    dims.append(np.sum(np.exp(pair[idx] + log_w[:, None]), axis=0))
  return np.mean(joint), np.mean(dims, axis=0)


def test_stratified_density_is_unbiased_over_all_batches():
  means, log_scales = _linear_gaussian_posteriors(6, seed=5)
  i, z_i = 2, means[2] + 0.3
  mean_joint, mean_dims = _all_batch_estimates(z_i, i, means, log_scales, 3, "mss")
  pair = distributions.diag_normal_log_prob_per_dim(z_i, means, log_scales)
  np.testing.assert_allclose(mean_joint, jnp.mean(jnp.exp(pair.sum(-1))), rtol=1e-5)
  np.testing.assert_allclose(mean_dims, jnp.mean(jnp.exp(pair), axis=0), rtol=1e-5)


def test_weighted_density_expectation_has_the_stated_bias():
  n, m, i = 6, 3, 4
  means, log_scales = _linear_gaussian_posteriors(n, seed=6)
  z_i = means[i] - 0.2
  mean_joint, _ = _all_batch_estimates(z_i, i, means, log_scales, m, "mws")
  dens = jnp.exp(distributions.diag_normal_log_prob(z_i, means, log_scales))
  others = jnp.sum(dens) - dens[i]
  np.testing.assert_allclose(mean_joint, (dens[i] + (m - 1) / (n - 1) * others) / (n * m),
                             rtol=1e-5)


def test_minibatch_terms_approach_full_data_terms_with_the_whole_set():
  # With the whole data set as the batch, MSS's weights are all 1/N: it is the full estimator.
  means, log_scales = _linear_gaussian_posteriors(40, seed=7)
  key = jax.random.PRNGKey(7)
  full = kd.decomposition_samples(key, means, log_scales)
  eps = jax.random.normal(key, (40, 1, D)).reshape(40, D)
  z = means + jnp.exp(log_scales) * eps
  batch = kd.minibatch_terms(z, means, log_scales, dataset_size=40, method="mss")
  for name in kd.TERMS:
    np.testing.assert_allclose(batch[name], full[name], rtol=1e-4, atol=1e-4)
  mws = kd.minibatch_terms(z, means, log_scales, dataset_size=40, method="mws")
  # MWS normalises by N M = N^2 at M = N, so its log q(z) is log N below the full one.
  np.testing.assert_allclose(mws["mutual_info"] - batch["mutual_info"], math.log(40), rtol=1e-5)


@pytest.mark.parametrize("method,batch,n,match", [
    ("mxx", 4, 10, "method must be one of"),
    ("mss", 1, 10, "batch_size must be in"),
    ("mws", 11, 10, "batch_size must be in"),
])
def test_minibatch_weights_reject_bad_arguments(method, batch, n, match):
  with pytest.raises(ValueError, match=match):
    kd.minibatch_log_weights(batch, n, method)


# --- On a trained run's test set ------------------------------------------------------------------

def _test_set(**fields):
  config = tiny_config(**fields)
  dataset = data_lib.load(config.data)
  model = build.build_model(config, dataset)
  x = dataset.test[:64]
  params = model.init(jax.random.key(0), x[0], jax.random.key(1))
  return results.TestSet(config, dataset, model, params, x, jax.random.key(2))


def test_the_decomposition_is_reported_for_diagonal_gaussians_under_gaussian_priors_only():
  standard = _test_set()
  terms = kd.test_set_terms(standard)
  assert set(terms) == {"mutual_info", "total_correlation", "dimwise_kl", "kl_aggregate"}
  # Per sample, TC + dimension-wise KL = KL(q(z) || p(z)) for a factorised prior.
  np.testing.assert_allclose(terms["total_correlation"] + terms["dimwise_kl"],
                             terms["kl_aggregate"], rtol=1e-5, atol=1e-5)
  # I_q(x; z) <= log N per sample: q(z) >= q(z|x_n) / N.
  assert 0 <= terms["mutual_info"] <= math.log(64)
  # A learned Gaussian prior at its initial N(0, I) gives the standard normal's terms.
  learned = _test_set(**{"prior.name": "learned_gaussian"})
  params = {"params": standard.params["params"] | {"prior": learned.params["params"]["prior"]}}
  same = kd.test_set_terms(dataclasses.replace(learned, params=params))
  for name, value in terms.items():
    np.testing.assert_allclose(same[name], value, rtol=1e-5, atol=1e-6)
  for fields in ({"posterior.name": "iaf"}, {"prior.name": "mog"},
                 {"eval.kl_decomposition": False}):
    assert kd.test_set_terms(_test_set(**fields)) == {}


def test_a_runs_results_and_printout_hold_the_kl_term_taken_apart(tmp_path):
  test = train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), str(tmp_path))["test"]
  np.testing.assert_allclose(test["total_correlation"] + test["dimwise_kl"],
                             test["kl_aggregate"], rtol=1e-5, atol=1e-5)
  lines = results.printed_lines(test)
  assert f"TC(q(z)): {test['total_correlation']:.2f}" in lines
  assert f"I_q(x; z): {test['mutual_info']:.2f}" in lines
