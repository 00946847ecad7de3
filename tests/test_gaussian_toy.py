"""Rainforth et al. 2018's Gaussian toy: its optimum is the one the mathematics gives, its
per-point gradients are the library's IWAE estimators, and the `gaussian_toy` ablation's smoke
run reproduces the papers' SNR rates and writes slopes.csv, its table and figure."""

import csv

import jax
import numpy as np
import pytest

from configs.ablations import gaussian_toy as toy_config
from elbo_jax import gaussian_toy, sweep
from elbo_jax.registry import ConfigError


@pytest.mark.slow  # 7 s; the toy's other exact checks stay in the default suite
def test_at_the_optimum_q_has_the_exact_posterior_mean_and_the_elbo_gradient_in_mu_is_known():
  """p(z | x) = N((x + mu) / 2, I / 2): at A = I / 2, b = mu / 2 the reparameterised ELBO (K = 1)
  gradient in b has mean 0, and in mu its mean is E_q[z] - mu = (x - mu) / 2."""
  x = gaussian_toy.make_data(jax.random.key(0), 64, 3)
  model = gaussian_toy.optimum(x)
  np.testing.assert_allclose(model.mu, x.mean(0), rtol=1e-6)
  params, rows = gaussian_toy.per_point(model, x[:2])
  f = gaussian_toy.per_example(1, "reparam")

  def grad(key):
    loss = lambda p: jax.vmap(f, in_axes=(None, 0, 0))(p, rows, jax.random.split(key, 2))[
        "loss"].mean()
    return jax.grad(loss)(params)

  n = 4000
  g = jax.vmap(grad)(jax.random.split(jax.random.key(1), n))
  # Per point, the gradient of the batch mean is that point's gradient over B = 2; in b it is
  # -2 (z - posterior mean), standard deviation 2 sqrt(2/3); in mu it is -(z - mu), sqrt(2/3).
  np.testing.assert_array_less(np.abs(2 * g.b.mean(0)), 4 * 2 * np.sqrt(2 / 3) / np.sqrt(n))
  np.testing.assert_array_less(np.abs(2 * g.mu.mean(0) + (x[:2] - model.mu) / 2),
                               4 * np.sqrt(2 / 3) / np.sqrt(n))


@pytest.mark.slow
def test_the_smoke_run_reproduces_the_papers_snr_rates_and_writes_its_outputs(tmp_path):
  """Reparameterised inference SNR falls (Rainforth et al.: like K^-1/2), generative rises like
  K^+1/2 for every estimator, DReG's inference SNR rises (Tucker et al. 2019)."""
  rows = sweep.run(toy_config.get_config("smoke"), str(tmp_path))
  assert [(r["num_samples"], r["estimator"]) for r in rows] == [
      (k, e) for k in (1, 10, 100) for e in ("reparam", "dreg")]
  with open(tmp_path / "slopes.csv") as f:
    slopes = {(r["estimator"], r["network"]): float(r["slope"]) for r in csv.DictReader(f)}
  assert slopes[("reparam", "inference")] < -0.25
  assert abs(slopes[("reparam", "generative")] - 0.5) < 0.1
  assert slopes[("dreg", "inference")] > 0.2
  table = (tmp_path / "table.md").read_text()
  assert "| reparam | inference |" in table and "Wall time" in table
  assert (tmp_path / "gaussian_toy_snr.png").stat().st_size > 10_000
  assert (tmp_path / "results.csv").exists()


def test_bad_toy_options_are_one_line_errors(tmp_path):
  ablation = toy_config.get_config("smoke")
  ablation.toy.num_samples = (10,)
  with pytest.raises(ConfigError, match=r"toy.num_samples=\(10,\) needs two values"):
    sweep.run(ablation, str(tmp_path))
  ablation = toy_config.get_config("smoke")
  ablation.toy.estimators = ("rws",)
  with pytest.raises(ConfigError, match="toy.estimators: 'rws' is not known"):
    sweep.run(ablation, str(tmp_path))
  ablation = toy_config.get_config("smoke")
  ablation.analysis = "toy"
  with pytest.raises(ConfigError, match="ablation analysis='toy' is not known"):
    sweep.run(ablation, str(tmp_path))


def test_the_slope_is_the_log_log_least_squares_fit():
  k = np.array([1, 10, 100, 1000])
  assert gaussian_toy.fit_slope(k, 3.0 * k**-0.5) == pytest.approx(-0.5)
  assert np.isnan(gaussian_toy.fit_slope(k, [1.0, 0.0, 0.0, 0.0]))  # one usable point

