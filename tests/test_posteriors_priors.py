"""Checks posterior families and priors against scipy, Jacobians, closed-form KLs and Monte Carlo.

Runs op-by-op (no jit) with few distinct array shapes: JAX caches each compiled primitive per shape,
so reusing S and N across tests keeps the file fast on CPU. Test inputs come from numpy.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from elbo_jax import distributions
from elbo_jax.posteriors import (
    _MADE,
    IAF,
    LOG_SCALE_BOUND,
    POSTERIORS,
    DiagonalGaussian,
    FullGaussian,
    PlanarFlow,
    planar_u_hat,
)
from elbo_jax.priors import PRIORS, LearnedGaussian, MixtureOfGaussians, StandardNormal, VampPrior
from elbo_jax.registry import ConfigError
from elbo_jax.vae import VAE

D, H = 3, 5
S, N = 8, 20_000  # draws for exact checks; draws for Monte Carlo checks
KEY = jax.random.PRNGKey(0)
POSTERIOR_MODULES = {
    "diagonal_gaussian": DiagonalGaussian(D),
    "full_gaussian": FullGaussian(D),
    "planar_flow": PlanarFlow(D, num_flows=4),
    "iaf": IAF(D, num_flows=3, hidden=16),
}
GAUSSIAN = ["diagonal_gaussian", "full_gaussian"]
FLOWS = ["planar_flow", "iaf"]


def _normal(seed, shape, scale=1.0):
  return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _randomise(params, seed, scale=0.3):
  """Every leaf plus N(0, scale^2) noise, so zero-initialised heads and biases matter too."""
  leaves, tree = jax.tree.flatten(params)
  return jax.tree.unflatten(
      tree, [leaf + _normal(seed + i, leaf.shape, scale) for i, leaf in enumerate(leaves)]
  )


def _init_posterior(module, h):
  # Through sample as well, so the IAF's MADE parameters exist.
  return module.init(KEY, h, method=lambda m, h: m.sample(m(h), KEY, 1))


@functools.cache
def _posterior(name, seed=0, batch=()):
  """(module, params, q) with perturbed parameters and random features h: [*batch, H]."""
  module = POSTERIOR_MODULES[name]
  params = _randomise(_init_posterior(module, jnp.zeros((H,))), seed=100 * seed)
  return module, params, module.apply(params, _normal(seed, batch + (H,)))


def _learned_gaussian_prior():
  prior = LearnedGaussian(D)
  return prior, _randomise(prior.init(KEY, method="gaussian_params"), seed=7)


def _cov(name, q):
  if name == "diagonal_gaussian":
    return np.diag(np.exp(2.0 * np.asarray(q["log_scale"], np.float64)))
  tril = np.asarray(q["scale_tril"], np.float64)
  return tril @ tril.T


@pytest.mark.parametrize("name", GAUSSIAN)
@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_log_q_matches_scipy(name, seed):
  module, params, q = _posterior(name, seed)
  z, log_q = module.apply(params, q, jax.random.PRNGKey(seed), S, method="sample")
  assert z.shape == (S, D) and log_q.shape == (S,)
  expected = stats.multivariate_normal(np.asarray(q["mean"], np.float64), _cov(name, q)).logpdf(
      np.asarray(z, np.float64)
  )
  np.testing.assert_allclose(log_q, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
      module.apply(params, z, q, method="log_prob"), expected, rtol=1e-4, atol=1e-4
  )


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_log_prob_broadcasts_over_q_leading_dims(name):
  module, params, q = _posterior(name, batch=(4,))  # leaves: [K=4, ...], as for the VampPrior
  z = _normal(3, (S, 1, D))
  out = module.apply(params, z, q, method="log_prob")
  assert out.shape == (S, 4)
  for k in range(4):
    q_k = jax.tree.map(lambda a, k=k: a[k], q)
    np.testing.assert_allclose(
        out[:, k], module.apply(params, z[:, 0], q_k, method="log_prob"), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", list(POSTERIOR_MODULES))
def test_sample_is_reparameterize_of_standard_normal_noise(name):
  module, params, q = _posterior(name)
  z, log_q = module.apply(params, q, KEY, S, method="sample")
  z2, log_q2 = module.apply(params, q, jax.random.normal(KEY, (S, D)), method="reparameterize")
  np.testing.assert_allclose(z, z2, rtol=1e-6)
  np.testing.assert_allclose(log_q, log_q2, rtol=1e-6)
  assert np.isfinite(np.asarray(log_q)).all()


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("seed", [0, 1])
def test_flow_log_q_is_base_density_minus_numerical_log_det(name, seed):
  module, params, q = _posterior(name, seed)
  eps = _normal(seed + 20, (S, D))
  _, log_q = module.apply(params, q, eps, method="reparameterize")

  def flow(e):  # eps [D] -> z [D]
    return module.apply(params, q, e[None], method="reparameterize")[0][0]

  jacobians = np.asarray(jax.vmap(jax.jacfwd(flow))(eps), np.float64)  # [S, D, D]
  sign, log_det = np.linalg.slogdet(jacobians)
  assert np.all(sign > 0)  # both flows preserve orientation
  expected = stats.norm.logpdf(np.asarray(eps, np.float64)).sum(-1) - log_det
  np.testing.assert_allclose(log_q, expected, rtol=1e-4, atol=1e-4)


def test_posteriors_declare_what_they_can_do():
  assert [n for n in POSTERIOR_MODULES if POSTERIORS.get(n).has_density] == GAUSSIAN
  assert [n for n in POSTERIOR_MODULES if POSTERIORS.get(n).is_gaussian] == GAUSSIAN
  assert [n for n in PRIORS.registered() if PRIORS.get(n).is_gaussian] == [
      "standard_normal", "learned_gaussian"]


@pytest.mark.parametrize("name", FLOWS)
def test_flow_log_prob_raises_clear_error(name):
  module, params, q = _posterior(name)
  with pytest.raises(NotImplementedError, match="inverse"):
    module.apply(params, jnp.zeros((D,)), q, method="log_prob")


@pytest.mark.parametrize("latent_dim", [1, 4])
def test_made_is_autoregressive(latent_dim):
  made = _MADE(latent_dim, hidden=12)
  context, z = _normal(0, (6,)), _normal(1, (latent_dim,))
  params = _randomise(made.init(KEY, z[None], context), seed=2, scale=1.0)
  for jac in jax.jacfwd(lambda x: made.apply(params, x[None], context))(z):  # dm/dz, ds/dz
    jac = np.asarray(jac)[0]
    # Output d may depend on inputs before d only: strictly lower triangular.
    np.testing.assert_array_equal(np.triu(jac), 0.0)
    if latent_dim > 1:
      assert np.abs(jac[np.tril_indices(latent_dim, -1)]).min() > 0


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_samples_have_right_moments(name):
  module, params, q = _posterior(name)
  z, _ = module.apply(params, q, KEY, N, method="sample")
  z = np.asarray(z, np.float64)
  cov = _cov(name, q)
  std = np.sqrt(np.diag(cov))
  mean = module.apply(params, q, method="mean")
  np.testing.assert_array_less(np.abs(z.mean(0) - mean), 5 * std / np.sqrt(N))
  np.testing.assert_allclose(np.cov(z.T), cov, atol=0.05 * float(np.max(np.abs(cov))))


@pytest.mark.parametrize("name", GAUSSIAN)
@pytest.mark.parametrize("prior_name", ["standard_normal", "learned_gaussian"])
def test_monte_carlo_kl_matches_analytic(name, prior_name):
  module, params, q = _posterior(name)
  if prior_name == "standard_normal":
    prior, prior_params = StandardNormal(D), {}
  else:
    prior, prior_params = _learned_gaussian_prior()
  prior_mean, prior_log_scale = prior.apply(prior_params, method="gaussian_params")
  kl, kl_per_dim = module.apply(params, q, prior_mean, prior_log_scale,
                                method="kl_to_diag_normal")
  if kl_per_dim is not None:
    np.testing.assert_allclose(kl_per_dim.sum(), kl, rtol=1e-6)
  z, log_q = module.apply(params, q, jax.random.PRNGKey(6), N, method="sample")
  terms = np.asarray(log_q - prior.apply(prior_params, z, method="log_prob"), np.float64)
  stderr = terms.std() / np.sqrt(N)
  assert abs(terms.mean() - float(kl)) < 4 * stderr + 1e-4, (terms.mean(), float(kl), stderr)


def test_prior_log_probs_match_scipy():
  z = _normal(4, (S, 4, D), scale=2.0)
  z64 = np.asarray(z, np.float64)

  out = StandardNormal(D).apply({}, z, method="log_prob")
  assert out.shape == (S, 4)
  np.testing.assert_allclose(out, stats.norm.logpdf(z64).sum(-1), rtol=1e-5, atol=1e-5)

  prior, params = _learned_gaussian_prior()
  mean, log_scale = prior.apply(params, method="gaussian_params")
  mean, log_scale = np.asarray(mean, np.float64), np.asarray(log_scale, np.float64)
  np.testing.assert_allclose(
      prior.apply(params, z, method="log_prob"),
      stats.norm.logpdf(z64, mean, np.exp(log_scale)).sum(-1),
      rtol=1e-5,
      atol=1e-5,
  )

  mog = MixtureOfGaussians(D, num_components=4)
  params = _randomise(mog.init(KEY, method="components"), seed=8, scale=1.0)
  log_w, means, log_scales = jax.tree.map(
      lambda a: np.asarray(a, np.float64), mog.apply(params, method="components")
  )
  per_component = stats.norm.logpdf(z64[..., None, :], means, np.exp(log_scales)).sum(-1)
  np.testing.assert_allclose(
      mog.apply(params, z, method="log_prob"),
      special.logsumexp(per_component + log_w, axis=-1),
      rtol=1e-5,
      atol=1e-5,
  )


@pytest.mark.parametrize("latent_dim", [1, D])
def test_sample_shapes(latent_dim):
  for prior in (
      StandardNormal(latent_dim),
      LearnedGaussian(latent_dim),
      MixtureOfGaussians(latent_dim, num_components=3),
  ):
    # Shapes only: traced, not run (eager dispatch of the flows took 8 s).
    params = jax.eval_shape(lambda: prior.init(KEY, KEY, S, method="sample"))
    sample = jax.eval_shape(lambda p: prior.apply(p, KEY, S, method="sample"), params)
    assert sample.shape == (S, latent_dim)
  h = jnp.ones((4, H))
  for name, module in POSTERIOR_MODULES.items():
    module = module.clone(latent_dim=latent_dim)
    params = jax.eval_shape(lambda m=module: _init_posterior(m, h[0]))
    q = jax.eval_shape(module.apply, params, h)
    assert q["mean"].shape == (4, latent_dim), name
    first = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), q)
    z, log_q = jax.eval_shape(
        lambda p, q, m=module: m.apply(p, q, KEY, S, method="sample"), params, first)
    assert z.shape == (S, latent_dim) and log_q.shape == (S,), name
    if name == "full_gaussian":
      assert q["scale_tril"].shape == (4, latent_dim, latent_dim)


def test_mog_samples_follow_the_mixture():
  mog = MixtureOfGaussians(1, num_components=3)
  logits = np.array([0.0, 1.0, 2.0])
  centres = np.array([-4.0, 0.0, 4.0])
  params = {
      "params": {
          "means": jnp.asarray(centres[:, None], jnp.float32),
          "log_scales": jnp.full((3, 1), np.log(0.5)),
          "logits": jnp.asarray(logits, jnp.float32),
      }
  }
  z = np.asarray(mog.apply(params, KEY, N, method="sample"))[:, 0]
  weights = special.softmax(logits)
  assert abs(z.mean() - weights @ centres) < 0.05
  fractions = [(z < -2).mean(), ((z > -2) & (z < 2)).mean(), (z > 2).mean()]
  np.testing.assert_allclose(fractions, weights, atol=0.015)
  counts, edges = np.histogram(z, bins=28, range=(-7, 7))
  cdf = stats.norm.cdf(edges[:, None], centres, 0.5) @ weights
  # About 4.5 binomial standard errors of the fullest bin (p ~ 0.25: sd ~ 0.003).
  np.testing.assert_allclose(counts / N, np.diff(cdf), atol=0.014)


@pytest.mark.parametrize("name", list(POSTERIOR_MODULES))
@pytest.mark.parametrize("extreme", [-50.0, 50.0])
def test_extreme_log_scale_gives_finite_outputs_and_gradients(name, extreme):
  module, params, _ = _posterior(name)
  head = "log_diagonal_head" if name == "full_gaussian" else "log_scale_head"
  bias = params["params"][head]["bias"]
  params = {
      "params": {
          **params["params"],
          head: {"kernel": jnp.zeros((H, D)), "bias": jnp.full_like(bias, extreme)},
      }
  }
  h = _normal(0, (H,))
  # The prior's scale is pushed to the opposite extreme, the worst case for the closed-form KL.
  prior = LearnedGaussian(D)
  prior_params = {"params": {"mean": jnp.zeros(D), "log_scale": jnp.full(D, -extreme)}}

  def loss(params, prior_params):
    q = module.apply(params, h)
    z, log_q = module.apply(params, q, KEY, S, method="sample")
    log_p = prior.apply(prior_params, z, method="log_prob")
    out = jnp.mean(jnp.square(z)) + jnp.mean(log_p - log_q)
    if name in GAUSSIAN:
      out += module.apply(params, jax.lax.stop_gradient(z), q, method="log_prob").mean()
      mean, log_scale = prior.apply(prior_params, method="gaussian_params")
      if name == "diagonal_gaussian":
        out += distributions.kl_diag_normal(q["mean"], q["log_scale"], mean, log_scale).sum()
      else:
        out += distributions.kl_tril_normal_diag_normal(
            q["mean"], q["scale_tril"], mean, log_scale
        )
    return out

  q = module.apply(params, h)
  log_scale = q["log_scale"] if "log_scale" in q else jnp.log(jnp.diagonal(q["scale_tril"]))
  assert np.all(np.abs(np.asarray(log_scale)) <= LOG_SCALE_BOUND)
  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(params, prior_params)
  assert np.isfinite(float(value))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_planar_flow_invertibility_constraint():
  _, _, q = _posterior("planar_flow", batch=(4,))
  wu_hat = (q["w"] * planar_u_hat(q["u"], q["w"])).sum(-1)
  assert np.all(np.asarray(wu_hat) >= -1.0)
  # Adversarial directions: u pointing strongly against w.
  w = _normal(9, (100, D))
  u = -jnp.linspace(0.0, 30.0, 100)[:, None] * w + _normal(10, (100, D))
  wu = (w * u).sum(-1)
  wu_hat = (w * planar_u_hat(u, w)).sum(-1)
  # Recomputing w.u_hat in float32 rounds relative to |w.u| (up to ~100 here); the flow's log-det
  # never recomputes it (it uses softplus(w.u) directly).
  assert np.all(np.asarray(wu_hat) >= -1.0 - 1e-6 * (1.0 + np.abs(np.asarray(wu))))
  np.testing.assert_allclose(wu_hat, jax.nn.softplus(wu) - 1.0, atol=1e-4)


def test_vamp_prior_pseudo_inputs_and_vae_density():
  prior = VampPrior(D, num_pseudo_inputs=7, data_shape=(4,))
  assert prior.mixes_posterior and not prior.is_gaussian
  params = prior.init(KEY, method="pseudo_inputs")
  u = prior.apply(params, method="pseudo_inputs")
  assert u.shape == (7, 4) and np.all((u >= 0) & (u <= 1))
  assert abs(float(u.mean()) - 0.05) < 0.02
  raw = {"params": {"pseudo_inputs": jnp.full((7, 4), 3.0)}}
  np.testing.assert_array_equal(prior.apply(raw, method="pseudo_inputs"), 1.0)
  with pytest.raises(NotImplementedError, match="VAE.prior_log_prob"):
    prior.apply(params, jnp.zeros((D,)), method="log_prob")

  z = _normal(11, (S, D))
  for posterior in (DiagonalGaussian(D), FullGaussian(D)):
    vae = VAE(
        encoder=nn.Dense(H), decoder=nn.Dense(4), likelihood=None, prior=prior, posterior=posterior
    )
    params = vae.init(KEY, z, method="prior_log_prob")
    params = _randomise(params, seed=12)
    out = vae.apply(params, z, method="prior_log_prob")

    def per_pseudo_input(m, z):  # log q(z | u_k), one pseudo-input at a time: [S, K]
      u = m.prior.pseudo_inputs()
      return jnp.stack([m.posterior_log_prob(z, m.encode(u[k])) for k in range(7)], -1)

    per_k = np.asarray(vae.apply(params, z, method=per_pseudo_input), np.float64)
    np.testing.assert_allclose(
        out, special.logsumexp(per_k, -1) - np.log(7), rtol=1e-5, atol=1e-5
    )
    assert vae.apply(params, KEY, 3, method="sample_prior").shape == (3, D)


def test_unknown_names_raise_config_error_listing_allowed():
  assert POSTERIORS.names() == ["diagonal_gaussian", "full_gaussian", "iaf", "planar_flow"]
  assert PRIORS.names() == ["learned_gaussian", "mog", "standard_normal", "vamp"]
  with pytest.raises(
      ConfigError,
      match="posterior.name='gaussian'.*diagonal_gaussian, full_gaussian, iaf, planar_flow",
  ):
    POSTERIORS.get("gaussian")
  with pytest.raises(
      ConfigError, match="prior.name='normal'.*learned_gaussian, mog, standard_normal, vamp"
  ):
    PRIORS.get("normal")
  with pytest.raises(ConfigError, match="posterior.num_flows"):
    PlanarFlow(D, num_flows=0).init(KEY, jnp.ones((H,)))
