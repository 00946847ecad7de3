"""Pareto k-hat and ESS of importance weights: known Pareto tails are recovered, the values equal
an independent implementation (arviz's `psislw`, a test-only dependency) and a plain numpy ESS,
and the evaluator's values streamed over chunks of K equal the one-shot ones on the same weights.
"""

import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elbo_jax import evaluation, io, psis, xla
from elbo_jax.train import train_and_evaluate
from tests.conftest import tiny_config
from tests.test_objectives import P, make_model, set_posterior


def _pareto_log_weights(key, k, num_samples):
  """log w for w ~ generalised Pareto(shape k, scale 1): w = (U^-k - 1) / k, U ~ Uniform(0, 1)."""
  u = jax.random.uniform(key, (num_samples,), jnp.float32, minval=1e-12)
  return jnp.log(jnp.expm1(-k * jnp.log(u)) / k)


@pytest.mark.parametrize("k", [0.2, 0.5, 0.8, 1.2])
def test_weights_with_a_known_pareto_tail_give_back_its_shape(k):
  """At K = 5000 the fit uses the M = 213 largest weights; over 50 independent sets of weights the
  mean k-hat is within 0.05 of k after Vehtari et al.'s prior, which moves it towards 0.5 by
  10 / (M + 10) of the distance."""
  keys = jax.random.split(jax.random.key(int(10 * k)), 50)
  khat = jax.vmap(lambda key: psis.diagnose(_pareto_log_weights(key, k, 5000))["khat"])(keys)
  assert abs(float(khat.mean()) - (213 * k + 10 * 0.5) / 223) < 0.05, khat
  assert float(khat.std()) < 0.15


def _reference(log_w: np.ndarray) -> tuple[float, float]:
  """arviz's k-hat (r_eff = 1, independent draws) and (sum w)^2 / sum w^2 in float64."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # arviz announces its refactor on import
    arviz = pytest.importorskip("arviz")
  _, khat = arviz.psislw(np.array(log_w, np.float64), reff=1.0)
  w = np.exp(log_w - log_w.max())
  return float(khat), float(w.sum()**2 / np.square(w).sum())


# Two of the four draws (5 s each) run with the slow tests.
@pytest.mark.parametrize("draw", ["normal_sd1", "normal_sd3",
                                  pytest.param("student_t2", marks=pytest.mark.slow),
                                  pytest.param("small_k100", marks=pytest.mark.slow)])
def test_khat_and_ess_equal_arviz_and_numpy(draw):
  rng = np.random.default_rng(0)
  log_w = {"normal_sd1": lambda: rng.normal(size=5000),
           "normal_sd3": lambda: 3 * rng.normal(size=5000) - 40.0,
           "student_t2": lambda: np.log(np.abs(rng.standard_t(2, size=2000))),
           "small_k100": lambda: rng.normal(size=100)}[draw]()
  khat, ess = _reference(log_w)
  with jax.enable_x64(True):
    exact = psis.diagnose(jnp.asarray(log_w, jnp.float64))
    np.testing.assert_allclose(exact["khat"], khat, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(exact["ess"], ess, rtol=1e-9)
  single = psis.diagnose(jnp.asarray(log_w, jnp.float32))  # as the evaluator computes it
  np.testing.assert_allclose(single["khat"], khat, atol=2e-3)
  np.testing.assert_allclose(single["ess"], ess, rtol=1e-4)


def test_khat_is_nan_when_the_tail_is_too_short_to_fit():
  assert psis.tail_size(5000) == 213 and psis.tail_size(100) == 20 and psis.tail_size(20) == 4
  assert np.isnan(psis.diagnose(jnp.linspace(0.0, 1.0, 20))["khat"])
  assert np.isfinite(psis.diagnose(jnp.linspace(0.0, 1.0, 25))["khat"])


def _all_log_weights(vae, params, x, key, num_samples, chunk):
  """The log weights the evaluator draws, chunk by chunk from the same keys, concatenated."""
  def chunk_weights(m, x, key):
    z, log_q = m.sample_posterior(m.encode(x), key, chunk)
    return m.likelihood_log_prob(z, x) + m.prior_log_prob(z) - log_q

  key = xla.fast_key(key)
  draw = jax.jit(lambda c: vae.apply(params, x, jax.random.fold_in(key, c), method=chunk_weights))
  with jax.default_matmul_precision("highest"):
    chunks = [draw(c) for c in range(-(-num_samples // chunk))]
  return jnp.concatenate(chunks)[:num_samples]


def test_streamed_diagnostics_over_chunks_equal_the_one_shot_ones():
  vae, params, x, (W, b, s) = make_model()
  # A posterior too narrow for the true one: heavy-tailed weights, k-hat well above 0.
  params, _ = set_posterior(params, W, b, s, mean_offset=0.3, cov_scale=0.3)
  key, num_samples = jax.random.key(8), 1030  # not a multiple of the chunk
  streamed = jax.jit(evaluation.importance_estimate(vae, num_samples=num_samples,
                                                    chunk_size=100))(params, x, key)
  one_shot = psis.diagnose(_all_log_weights(vae, params, x, key, num_samples, 100))
  assert float(one_shot["khat"]) > 0.3
  np.testing.assert_allclose(streamed["log_likelihood"], one_shot["log_likelihood"], atol=1e-5)
  np.testing.assert_allclose(streamed["khat"], one_shot["khat"], atol=1e-5)
  np.testing.assert_allclose(streamed["ess"], one_shot["ess"], rtol=1e-5)
  plain = evaluation.importance_log_likelihood(vae, num_samples=num_samples, chunk_size=100)
  np.testing.assert_allclose(plain(params, x, key), streamed["log_likelihood"], rtol=1e-7)


def test_log_likelihood_returns_per_example_diagnostics_and_their_summary():
  vae, params, _, (W, b, s) = make_model()
  params, _ = set_posterior(params, W, b, s, mean_offset=0.5, cov_scale=0.5)
  data = np.asarray(jax.random.normal(jax.random.key(10), (7, P)))
  out = evaluation.log_likelihood(vae, params, data, jax.random.key(11), num_samples=200,
                                  chunk_size=64, batch_size=3)
  assert out["khat"].shape == out["ess"].shape == (7,)
  assert np.all((out["ess"] >= 1) & (out["ess"] <= 200))
  summary = psis.summary(out["khat"], out["ess"], 200)
  assert summary["khat_median"] == pytest.approx(float(np.median(out["khat"])))
  assert summary["khat_share_above_0.7"] == pytest.approx(float(np.mean(out["khat"] > 0.7)))
  assert summary["khat_worst_examples"][0] == int(np.argmax(out["khat"]))
  off = evaluation.log_likelihood(vae, params, data, jax.random.key(11), num_samples=200,
                                  chunk_size=64, batch_size=3, diagnostics=False)
  assert "khat" not in off
  np.testing.assert_allclose(off["per_example"], out["per_example"], rtol=1e-6)


@pytest.mark.slow
def test_a_trained_run_writes_khat_and_ess_into_results_json_and_a_histogram(tmp_path, capsys):
  from experiments import cli

  results = train_and_evaluate(tiny_config(**{"training.num_epochs": 1, "eval.num_samples": 100,
                                              "eval.chunk_size": 30}), str(tmp_path))
  test = io.read_json(tmp_path / "results.json")["test"]
  assert test["khat_tail_size"] == 20 and 0 < test["khat_median"] <= test["khat_max"]
  assert 1 <= test["ess_min"] <= test["ess_median"] <= 100
  assert test["ess_median_share_of_k"] == pytest.approx(test["ess_median"] / 100)
  assert results["figures"]["khat"] == "khat.png"
  assert os.path.getsize(tmp_path / "khat.png") > 10_000
  cli.print_results(results, str(tmp_path))
  out, err = capsys.readouterr()
  assert f"Pareto k-hat median {test['khat_median']:.2f}" in out
  assert err == (cli.khat_warning(test) + "\n" if cli.khat_warning(test) else "")


def test_evaluate_warns_in_one_line_only_when_many_examples_are_above_0_7():
  from experiments import cli

  test = {"khat_median": 0.8, "khat_share_above_0.7": 0.6, "num_importance_samples": 5000}
  warning = cli.khat_warning(test)
  assert warning.startswith("warning: 60% of the test examples have Pareto k-hat > 0.7")
  assert "\n" not in warning
  assert cli.khat_warning(test | {"khat_share_above_0.7": psis.WARN_SHARE}) is None
  assert cli.khat_warning(test | {"khat_share_above_0.7": None}) is None  # K too small to fit


def test_the_diagnostics_apply_to_an_iwae_objectives_log_weights_on_request():
  import elbo_jax as ej

  vae, params, x, (W, b, s) = make_model()
  params, _ = set_posterior(params, W, b, s, mean_offset=0.3, cov_scale=0.5)
  terms = ej.iwae(vae, num_samples=200)(params, x, jax.random.key(3))
  out = psis.diagnose(terms["log_weights"])
  np.testing.assert_allclose(out["log_likelihood"], terms["iwae"], rtol=1e-6)
  assert 1 <= float(out["ess"]) <= 200 and np.isfinite(out["khat"])
