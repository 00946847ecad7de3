"""The gradient SNR estimator recovers known answers and reproduces Rainforth et al.'s finding.

Known answers: a synthetic objective whose batch gradient is a + b * mean_i(eps_i) exactly; the
linear-Gaussian VAE, where the mean of the reparameterised ELBO gradient is the gradient of the
closed-form ELBO; and a brute-force loop over the same draws.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from matplotlib.image import imread

import elbo_jax as ej
from elbo_jax import linear_gaussian as lg
from elbo_jax import snr
from elbo_jax.vae import split_params
from tests.test_objectives import make_model, set_posterior


@pytest.fixture(scope="module")
def lg_setup():
  vae, params, _, (W, b, s) = make_model()
  params, _ = set_posterior(params, W, b, s, mean_offset=0.5, cov_scale=2.0)
  batch = jax.random.normal(jax.random.key(3), (4, 4)) * 2.0
  return vae, params, batch, float(s)


def test_snr_of_a_gradient_a_plus_b_eps_is_sqrt_batch_times_a_over_b():
  """Per example the gradient is a + b * eps_i, eps_i ~ N(0, 1) independent across the B examples,
  so the batch-mean gradient is a + b / sqrt(B) * N(0, 1): SNR = sqrt(B) |a| / |b|. Examples
  sharing one draw would give |a| / |b| instead."""
  a = {"inference": jnp.array([1.0, -2.0, 0.5]), "generative": jnp.array([3.0, -0.2, 0.0])}
  b = {"inference": jnp.array([1.0, 1.0, 2.0]), "generative": jnp.array([0.5, -1.0, 1.5])}

  def per_example(params, x, key):
    del x
    eps = dict(zip(snr.PARTS, jax.random.normal(key, (2, 3))))
    return {"loss": sum(jnp.sum(params[n] * (a[n] + b[n] * eps[n])) for n in snr.PARTS)}

  batch_size, num_draws = 4, 3001  # not a multiple of the chunk size
  params = {n: jnp.zeros(3) for n in snr.PARTS}
  out = snr.gradient_snr(per_example, params, jnp.zeros((batch_size, 1)), jax.random.key(0),
                         num_draws, split_fn=lambda g: (g["inference"], g["generative"]),
                         chunk_size=64)
  for n in snr.PARTS:
    std = np.abs(b[n]) / np.sqrt(batch_size)
    expected = np.abs(a[n]) / std
    np.testing.assert_array_less(np.abs(out[n]["gradient_mean"] - a[n]),
                                 5 * std / np.sqrt(num_draws))
    np.testing.assert_array_less(np.abs(out[n]["gradient_std"] - std),
                                 5 * std / np.sqrt(2 * num_draws))
    # Delta method: the SNR estimate has standard deviation sqrt((1 + SNR^2 / 2) / N).
    np.testing.assert_array_less(np.abs(out[n]["per_parameter"] - expected),
                                 5 * np.sqrt((1 + expected**2 / 2) / num_draws))
    np.testing.assert_allclose(out[n]["snr_mean"], out[n]["per_parameter"].mean(), rtol=1e-6)
    np.testing.assert_allclose(out[n]["snr_median"], np.median(out[n]["per_parameter"]),
                               rtol=1e-6)


def _exact_batch_elbo(vae, params, batch, s):
  """The mean over the batch of the closed-form ELBO, as a function of the VAE's parameters."""
  decoder = params["params"]["decoder"]

  def one(x):
    q = vae.apply(params, x, method=lambda m, x: m.encode(x))
    return lg.elbo(x, decoder["kernel"].T, decoder["bias"], s, q["mean"],
                   q["scale_tril"] @ q["scale_tril"].T)

  return jax.vmap(one)(batch).mean()


@pytest.mark.slow  # 8 s; the SNR-against-K checks stay in the default suite
def test_mean_gradient_is_the_exact_elbo_gradient_within_monte_carlo_error(lg_setup):
  vae, params, batch, s = lg_setup
  num_draws = 2000
  out = snr.gradient_snr(ej.elbo(vae, kl="mc"), params, batch, jax.random.key(1), num_draws,
                         chunk_size=100)
  exact = jax.grad(lambda p: -_exact_batch_elbo(vae, p, batch, s))(params)
  for part, exact_part in zip(snr.PARTS, split_params(vae, exact)):
    exact_flat = ravel_pytree(exact_part)[0]
    assert exact_flat.size == out[part]["gradient_mean"].size > 0
    error = np.abs(out[part]["gradient_mean"] - exact_flat)
    np.testing.assert_array_less(error, 5 * out[part]["gradient_std"] / np.sqrt(num_draws) + 1e-5)


def test_snr_equals_a_brute_force_loop_over_the_same_draws(lg_setup):
  """Chunking (37 draws in chunks of 8, the last one padded) and the merged moments change
  nothing."""
  vae, params, batch, _ = lg_setup
  per_example = ej.iwae(vae, num_samples=3)
  key, num_draws = jax.random.key(2), 37
  out = snr.gradient_snr(per_example, params, batch, key, num_draws, chunk_size=8)

  @jax.jit
  def draw_gradient(draw_key):
    keys = jax.random.split(draw_key, len(batch))
    loss = lambda p: jax.vmap(per_example, in_axes=(None, 0, 0))(p, batch, keys)["loss"].mean()
    return [ravel_pytree(part)[0] for part in split_params(vae, jax.grad(loss)(params))]

  draws = [draw_gradient(k) for k in jax.random.split(key, num_draws)]
  for i, part in enumerate(snr.PARTS):
    g = np.stack([np.asarray(d[i], np.float64) for d in draws])
    np.testing.assert_allclose(out[part]["gradient_mean"], g.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[part]["gradient_std"], g.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[part]["per_parameter"],
                               np.abs(g.mean(0)) / g.std(0, ddof=1), rtol=1e-3)


def test_iwae_encoder_snr_falls_with_k_but_dregs_does_not_and_decoder_snr_rises(lg_setup):
  """Rainforth et al. 2018: the reparameterised IWAE encoder SNR is O(1/sqrt(K)); Tucker et al.
  2019: DReG's is not; the generative network's grows like sqrt(K) for both. From K = 1 to 100 the
  rates predict factors 1/10 and 10; the bounds below leave room for Monte Carlo error."""
  vae, params, batch, _ = lg_setup
  snrs = {(e, k): snr.gradient_snr(ej.iwae(vae, num_samples=k, estimator=e), params, batch,
                                   jax.random.key(4), 1000, chunk_size=100)
          for e in ("reparam", "dreg") for k in (1, 100)}

  def mean(e, k, part):
    return snrs[e, k][part]["snr_mean"]

  assert mean("reparam", 100, "inference") < 0.3 * mean("reparam", 1, "inference")
  assert mean("dreg", 100, "inference") > mean("dreg", 1, "inference")
  for e in ("reparam", "dreg"):
    assert mean(e, 100, "generative") > 3 * mean(e, 1, "generative")


@pytest.mark.slow
def test_sweep_rows_do_not_depend_on_chunking_and_plot_to_a_png(lg_setup, tmp_path):
  vae, params, batch, _ = lg_setup
  key, num_draws = jax.random.key(5), 20
  # A budget of 40 samples of z in flight: chunks of 10 draws at K = 1, of one draw at K = 10.
  rows = snr.iwae_snr_sweep(vae, params, batch, key, num_samples=(1, 10),
                            estimators=("reparam", "dreg"), num_draws=num_draws,
                            max_samples_in_flight=40)
  assert [(r["num_samples"], r["estimator"]) for r in rows] == [
      (1, "reparam"), (1, "dreg"), (10, "reparam"), (10, "dreg")]
  for row in rows:
    whole = snr.gradient_snr(ej.iwae(vae, num_samples=row["num_samples"],
                                     estimator=row["estimator"]),
                             params, batch, key, num_draws, chunk_size=num_draws)
    for part in snr.PARTS:
      for stat in ("snr_mean", "snr_median"):
        np.testing.assert_allclose(row[f"{part}_{stat}"], whole[part][stat], rtol=1e-3)
  path = snr.plot_snr(rows, tmp_path / "snr.png", title="IWAE gradient SNR")
  assert imread(path).shape[:2] == (400, 1000)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["snr.png"]  # no temporary file left


def test_the_unbiased_snr_squared_recovers_a_small_known_snr_that_the_plain_ratio_floors():
  """2000 parameters whose batch gradient is a + eps, eps ~ N(0, 1), a = 0.02: SNR = 0.02 each.
  With 400 draws |mean| / std cannot fall below about sqrt(2 / (pi 400)) = 0.04, twice the truth;
  the halves' estimate of the mean SNR^2 is within 4 standard errors of 0.02^2 (the parameters
  are independent here, so its noise is snr_squared_noise / sqrt(2000)), and the noise level is
  the one the formula gives."""
  size, a, num_draws = 2000, 0.02, 400

  def per_example(params, x, key):
    del x
    eps = jax.random.normal(key, (2, size))
    return {"loss": sum(jnp.sum(params[n] * (a + eps[i])) for i, n in enumerate(snr.PARTS))}

  params = {n: jnp.zeros(size) for n in snr.PARTS}
  out = snr.gradient_snr(per_example, params, jnp.zeros((1, 1)), jax.random.key(7), num_draws,
                         split_fn=lambda g: (g["inference"], g["generative"]), chunk_size=50)
  for n in snr.PARTS:
    noise = snr.snr_squared_noise(a**2, num_draws)
    assert out[n]["snr_squared_noise"] == pytest.approx(noise, rel=0.2)
    assert abs(out[n]["snr_squared"] - a**2) < 4 * noise / np.sqrt(size)
    assert out[n]["snr_rms"] == pytest.approx(np.sqrt(max(out[n]["snr_squared"], 0.0)))
    assert out[n]["snr_mean"] > 1.7 * a  # the plain ratio sits at its floor


def test_the_halves_estimate_is_exactly_unbiased_for_gaussian_draws():
  """Over 20000 repetitions of 10 Gaussian draws with SNR 0.3, the mean of the estimate is 0.09
  within Monte Carlo error, where (mean / std)^2 is biased by about 1 / N + 2 SNR^2 / N."""
  rng = np.random.default_rng(0)
  g = 0.3 + rng.normal(size=(20000, 10))
  halves = [(5.0, h.mean(1), np.square(h - h.mean(1, keepdims=True)).sum(1))
            for h in (g[:, :5], g[:, 5:])]
  estimates = np.asarray(snr.unbiased_snr_squared(*halves))
  assert abs(estimates.mean() - 0.09) < 4 * estimates.std() / np.sqrt(len(estimates))
  plain = (g.mean(1) / g.std(1, ddof=1))**2
  assert plain.mean() - 0.09 > 10 * plain.std() / np.sqrt(len(plain))


@pytest.mark.slow  # 9 s; psis.diagnose's own tests stay in the default suite
def test_the_sweeps_weight_diagnostics_give_ess_k_at_the_true_posterior_and_no_khat_below_25(
    lg_setup):
  """With q = p(z|x) every importance weight equals p(x): ESS = K exactly; an imperfect q has
  ESS < K; below K = 25 there are too few weights to fit a Pareto tail."""
  vae, params, batch, s = lg_setup
  _, _, _, (W, b, _) = make_model()
  exact, _ = set_posterior(params, W, b, s)
  out = snr.weight_diagnostics(vae, exact, batch, jax.random.key(6), 100)
  assert out["ess_median"] == pytest.approx(100, rel=1e-4)
  off = snr.weight_diagnostics(vae, params, batch, jax.random.key(6), 100)
  assert 1 <= off["ess_median"] < 95 and off["khat_median"] <= off["khat_max"] < 0.7
  assert np.isnan(snr.weight_diagnostics(vae, params, batch, jax.random.key(6), 10)["khat_max"])
