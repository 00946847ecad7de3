"""The objectives obey the mathematics on a linear-Gaussian model where log p(x) is exact.

Model: p(z) = N(0, I_D), p(x|z) = N(Wz + b, s^2 I_P), built from the library's own components (a
linear decoder, a fixed-variance Gaussian likelihood, a full-covariance Gaussian posterior whose
encoder is the identity), so the true posterior, which is linear in x, is exactly representable.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elbo_jax as ej
from elbo_jax import linear_gaussian as lg
from elbo_jax.evaluation import importance_log_likelihood, map_dataset
from elbo_jax.likelihoods import Gaussian
from elbo_jax.posteriors import LOG_SCALE_BOUND, FullGaussian
from elbo_jax.priors import StandardNormal

D, P = 2, 4


class Identity(nn.Module):
  @nn.compact
  def __call__(self, x):
    return x


def make_model():
  key = jax.random.key(0)
  W, b, s = lg.random_model(key, D, P)
  vae = ej.VAE(encoder=Identity(), decoder=nn.Dense(P),
               likelihood=Gaussian(event_shape=(P,), variance="fixed", scale=float(s)),
               prior=StandardNormal(latent_dim=D), posterior=FullGaussian(latent_dim=D))
  x = jax.random.normal(jax.random.key(1), (P,)) * 2.0
  params = vae.init(jax.random.key(2), x, jax.random.key(3))
  return vae, params, x, (W, b, s)


def set_posterior(params, W, b, s, mean_offset=0.0, cov_scale=1.0):
  """Params whose decoder is (W, b) and whose q(z|x) is the true posterior (optionally perturbed).

  The true posterior mean is A (x - b) with A = cov W^T / s^2 and its covariance does not depend
  on x, so dense heads with the right kernels and biases represent it for every x.
  """
  _, cov = lg.true_posterior(jnp.zeros(P), W, b, s)
  A = cov @ W.T / s**2
  tril = jnp.linalg.cholesky(cov * cov_scale)
  rows, cols = np.tril_indices(D, -1)
  raw_log_diag = LOG_SCALE_BOUND * jnp.arctanh(jnp.log(jnp.diagonal(tril)) / LOG_SCALE_BOUND)
  p = jax.tree.map(lambda a: a, params)
  post = p["params"]["posterior"]
  post["mean_head"] = {"kernel": A.T, "bias": -A @ b + mean_offset}
  post["off_diagonal_head"] = {"kernel": jnp.zeros((P, len(rows))), "bias": tril[rows, cols]}
  post["log_diagonal_head"] = {"kernel": jnp.zeros((P, D)), "bias": raw_log_diag}
  p["params"]["decoder"] = {"kernel": W.T, "bias": b}
  return p, tril


@pytest.fixture(scope="module")
def setup():
  return make_model()


def test_elbo_equals_log_evidence_at_the_true_posterior(setup):
  vae, params, x, (W, b, s) = setup
  params, _ = set_posterior(params, W, b, s)
  log_px = lg.log_evidence(x, W, b, s)
  # With q = p(z|x) every log-weight equals log p(x), so even a one-sample Monte Carlo ELBO is
  # exact.
  for kl in ("mc", "analytic"):
    terms = ej.elbo(vae, kl=kl, num_samples=1 if kl == "mc" else 20000)(params, x,
                                                                        jax.random.key(4))
    np.testing.assert_allclose(terms["elbo"], log_px, atol=1e-4 if kl == "mc" else 2e-2)
  iwae = ej.iwae(vae, num_samples=7)(params, x, jax.random.key(5))
  np.testing.assert_allclose(iwae["log_weights"], jnp.full(7, log_px), atol=1e-4)


def test_elbo_is_below_log_evidence_and_the_gap_is_the_posterior_kl(setup):
  vae, params, x, (W, b, s) = setup
  log_px = lg.log_evidence(x, W, b, s)
  true_mean, true_cov = lg.true_posterior(x, W, b, s)
  for offset, scale in [(0.7, 1.0), (-0.3, 3.0), (0.0, 0.2), (1.5, 0.5)]:
    p, tril = set_posterior(params, W, b, s, mean_offset=offset, cov_scale=scale)
    q_mean = true_mean + offset
    terms = ej.elbo(vae, kl="analytic", num_samples=50000)(p, x, jax.random.key(6))
    closed = lg.elbo(x, W, b, s, q_mean, tril @ tril.T)
    np.testing.assert_allclose(terms["elbo"], closed, atol=0.02 + 1e-3 * abs(closed))
    assert terms["elbo"] < log_px
    gap = lg.kl_gaussian(q_mean, tril @ tril.T, true_mean, true_cov)
    np.testing.assert_allclose(log_px - terms["elbo"], gap, atol=0.02 + 1e-3 * gap)


def test_monte_carlo_kl_matches_analytic_kl_within_its_standard_error(setup):
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=0.8, cov_scale=2.0)
  keys = jax.random.split(jax.random.key(7), 4000)
  mc = jax.vmap(lambda k: ej.elbo(vae, kl="mc")(p, x, k)["kl"])(keys)
  analytic = ej.elbo(vae, kl="analytic")(p, x, keys[0])["kl"]
  assert abs(mc.mean() - analytic) < 4 * mc.std() / np.sqrt(len(mc))


def test_iwae_bound_rises_with_k_towards_log_evidence(setup):
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=1.0, cov_scale=2.5)
  log_px = lg.log_evidence(x, W, b, s)
  bounds = []
  for k in (1, 10, 100, 1000):
    keys = jax.random.split(jax.random.key(k), 200)
    bound = jax.jit(jax.vmap(lambda key, k=k: ej.iwae(vae, num_samples=k)(p, x, key)["iwae"]))
    bounds.append(float(bound(keys).mean()))
  assert all(a < b for a, b in zip(bounds, bounds[1:])), bounds
  assert bounds[-1] < log_px + 1e-3
  assert log_px - bounds[-1] < 0.05 * (log_px - bounds[0]), (bounds, log_px)


def test_importance_log_likelihood_is_exact_at_the_posterior_and_converges_otherwise(setup):
  vae, params, x, (W, b, s) = setup
  log_px = lg.log_evidence(x, W, b, s)
  exact, _ = set_posterior(params, W, b, s)
  f = importance_log_likelihood(vae, num_samples=1030, chunk_size=100)  # K not a multiple
  np.testing.assert_allclose(f(exact, x, jax.random.key(8)), log_px, atol=1e-4)
  off, _ = set_posterior(params, W, b, s, mean_offset=0.5, cov_scale=1.5)
  estimate = importance_log_likelihood(vae, num_samples=20000, chunk_size=512)(
      off, x, jax.random.key(9))
  assert abs(estimate - log_px) < 0.02


def test_log_likelihood_does_not_depend_on_batch_size(setup):
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=0.5)
  data = np.asarray(jax.random.normal(jax.random.key(10), (11, P)))
  f = importance_log_likelihood(vae, num_samples=64, chunk_size=16)
  a = map_dataset(f, p, data, jax.random.key(11), batch_size=3)
  b_ = map_dataset(f, p, data, jax.random.key(11), batch_size=11)
  np.testing.assert_allclose(a, b_, rtol=1e-6)


def _objectives(vae):
  return {
      "elbo_analytic": ej.elbo(vae, kl="analytic", num_samples=3),
      "elbo_mc": ej.elbo(vae, kl="mc", num_samples=3),
      "beta_elbo": ej.beta_elbo(vae, beta=4.0, num_samples=2),
      "iwae": ej.iwae(vae, num_samples=5),
  }


@pytest.mark.parametrize("name", ["elbo_analytic", "elbo_mc", "beta_elbo", "iwae"])
def test_gradient_matches_finite_differences(setup, name):
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=0.4, cov_scale=1.7)
  f = _objectives(vae)[name]
  key = jax.random.key(12)
  loss = lambda q: f(q, x, key)["loss"]
  grad = jax.grad(loss)(p)
  direction = jax.tree.map(lambda a: jax.random.normal(jax.random.key(a.size), a.shape), p)
  along = lambda t: loss(jax.tree.map(lambda a, d: a + t * d, p, direction))
  eps = 1e-2
  finite = (along(eps) - along(-eps)) / (2 * eps)
  analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad),
                                                 jax.tree.leaves(direction)))
  np.testing.assert_allclose(analytic, finite, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["elbo_analytic", "elbo_mc", "beta_elbo", "iwae"])
def test_vmap_equals_python_loop_and_jit_equals_eager(setup, name):
  vae, params, _, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=0.3)
  f = _objectives(vae)[name]
  xs = jax.random.normal(jax.random.key(13), (4, P))
  keys = jax.random.split(jax.random.key(14), 4)
  batched = ej.batched(f)(p, xs, keys, 1.0)
  for i in range(4):
    eager = f(p, xs[i], keys[i], 1.0)
    for k, v in eager.items():
      np.testing.assert_allclose(batched[k][i], v, rtol=1e-5, atol=1e-5)
  jitted = jax.jit(f)(p, xs[0], keys[0])
  for k, v in f(p, xs[0], keys[0]).items():
    np.testing.assert_allclose(jitted[k], v, rtol=1e-5, atol=1e-5)


def _encoder_grads(grads):
  return grads["params"]["posterior"]


def test_stl_and_dreg_encoder_gradients_vanish_at_the_true_posterior(setup):
  """At q = p(z|x) the log-weight is constant in z: STL and DReG have zero variance there."""
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s)
  for estimator, vanishes in [("reparam", False), ("stl", True), ("dreg", True)]:
    f = ej.iwae(vae, num_samples=4, estimator=estimator)
    g = jax.grad(lambda q: f(q, x, jax.random.key(15))["loss"])(p)
    norm = float(jnp.sqrt(sum(jnp.sum(a**2) for a in jax.tree.leaves(_encoder_grads(g)))))
    assert (norm < 1e-3) == vanishes, (estimator, norm)


def test_dreg_keeps_the_iwae_gradient_for_the_generative_parameters(setup):
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=0.6, cov_scale=2.0)
  grads = {}
  for estimator in ("reparam", "dreg"):
    f = ej.iwae(vae, num_samples=6, estimator=estimator)
    grads[estimator] = jax.grad(lambda q: f(q, x, jax.random.key(16))["loss"])(p)
  jax.tree.map(lambda a, b_: np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-5),
               grads["reparam"]["params"]["decoder"], grads["dreg"]["params"]["decoder"])


@pytest.mark.slow
@pytest.mark.parametrize("estimator,k", [("stl", 1), ("dreg", 3)])
def test_stl_and_dreg_encoder_gradients_are_unbiased(setup, estimator, k):
  """E[estimator] = E[reparam] gradient of the bound over many draws: STL for K = 1 (it is
  biased for K > 1, Tucker et al. 2019), DReG for any K."""
  vae, params, x, (W, b, s) = setup
  p, _ = set_posterior(params, W, b, s, mean_offset=0.6, cov_scale=2.0)
  keys = jax.random.split(jax.random.key(17), 3000)

  def encoder_grads(estimator):
    f = ej.iwae(vae, num_samples=k, estimator=estimator)
    g = jax.vmap(lambda k: jax.grad(lambda q: f(q, x, k)["loss"])(p))(keys)
    return _encoder_grads(g)["mean_head"]["bias"]  # [draws, D]

  reference = encoder_grads("reparam")
  g = encoder_grads(estimator)
  se = np.sqrt(g.var(0) / len(g) + reference.var(0) / len(g))
  assert np.all(np.abs(g.mean(0) - reference.mean(0)) < 4.5 * se + 1e-4)
  assert np.all(g.var(0) < reference.var(0))  # the point of both estimators


def test_free_bits_floor_each_dimensions_batch_kl():
  terms = {"log_px_given_z": jnp.array([-10.0, -12.0]), "loss": jnp.array([11.0, 13.0]),
           "kl_per_dim": jnp.array([[0.1, 2.0], [0.3, 4.0]])}
  # Dimension 0 averages 0.2 nats < 0.5, so it counts as 0.5; dimension 1 averages 3.0.
  np.testing.assert_allclose(ej.reduce_loss(terms, 1.0, 0.5), 11.0 + 0.5 + 3.0)
  np.testing.assert_allclose(ej.reduce_loss(terms, 1.0, 0.0), 12.0)


def test_kl_warmup_schedule_rises_linearly_to_beta():
  steps = jnp.array([0, 50, 100, 500])
  np.testing.assert_allclose(ej.kl_weight(steps, 2.0, 100), [0.0, 1.0, 2.0, 2.0])
  np.testing.assert_allclose(ej.kl_weight(steps, 2.0, 0), [2.0] * 4)


def test_traced_free_bits_of_zero_give_exactly_the_plain_loss_and_gradient():
  # Replicas of one vectorised program share the free-bits branch; one with 0 must be unchanged.
  def terms(scale):
    return {"log_px_given_z": scale * jnp.array([-10.0, -12.0]),
            "loss": scale * jnp.array([11.0, 13.0]),
            "kl_per_dim": scale * jnp.array([[0.1, 2.0], [0.3, 4.0]])}
  plain = jax.value_and_grad(lambda s: ej.reduce_loss(terms(s), 1.0, 0.0))(1.0)
  traced = jax.jit(jax.value_and_grad(lambda s, fb: ej.reduce_loss(terms(s), 1.0, fb)))(1.0, 0.0)
  assert plain == tuple(float(v) for v in traced)
  with_bits = jax.jit(lambda fb: ej.reduce_loss(terms(1.0), 1.0, fb))(0.5)
  np.testing.assert_allclose(with_bits, 11.0 + 0.5 + 3.0)


def test_flow_posteriors_refuse_estimators_that_need_their_density():
  from elbo_jax.posteriors import PlanarFlow

  vae = ej.VAE(encoder=Identity(), decoder=nn.Dense(P), likelihood=Gaussian(event_shape=(P,)),
               prior=StandardNormal(latent_dim=D), posterior=PlanarFlow(latent_dim=D))
  with pytest.raises(ej.ConfigError, match="objective.estimator='dreg'"):
    ej.iwae(vae, estimator="dreg")
  with pytest.raises(ej.ConfigError, match="objective.kl='analytic'"):
    ej.elbo(vae, kl="analytic")


# The full Gaussian and the IAF take 5-8 s each: the slow suite.
@pytest.mark.parametrize("posterior_name", [
    "diagonal_gaussian", pytest.param("full_gaussian", marks=pytest.mark.slow),
    pytest.param("iaf", marks=pytest.mark.slow)])
def test_objectives_stay_finite_for_extreme_network_outputs(posterior_name):
  """Weights scaled by 1e4 drive encoder log-scales far past +-50 and decoder logits past +-1e4."""
  from elbo_jax.likelihoods import Bernoulli
  from elbo_jax.models import MLPDecoder, MLPEncoder
  from elbo_jax.posteriors import POSTERIORS

  vae = ej.VAE(encoder=MLPEncoder(data_shape=(6,), hidden=(8,)),
               decoder=MLPDecoder(out_shape=(6,), hidden=(8,)),
               likelihood=Bernoulli(event_shape=(6,)), prior=StandardNormal(latent_dim=3),
               posterior=POSTERIORS.get(posterior_name)(latent_dim=3))
  x = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
  params = vae.init(jax.random.key(0), x, jax.random.key(1))
  extreme = jax.tree.map(lambda a: a * 1e4, params)
  objectives_ = [ej.elbo(vae), ej.iwae(vae, num_samples=4)]
  if posterior_name != "iaf":
    objectives_.append(ej.iwae(vae, num_samples=4, estimator="dreg"))
  for f in objectives_:
    terms = f(extreme, x, jax.random.key(2))
    grads = jax.grad(lambda p: f(p, x, jax.random.key(2))["loss"])(extreme)
    for name, value in terms.items():
      assert np.all(np.isfinite(value)), (posterior_name, name)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads)), posterior_name
