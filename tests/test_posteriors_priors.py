"""Checks posterior families and priors against scipy, Jacobians, closed-form KLs and Monte Carlo."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from elbo_jax import distributions
from elbo_jax.posteriors import (
    IAF,
    LOG_SCALE_BOUND,
    POSTERIORS,
    DiagonalGaussian,
    FullGaussian,
    PlanarFlow,
    _MADE,
    planar_u_hat,
)
from elbo_jax.priors import PRIORS, LearnedGaussian, MixtureOfGaussians, StandardNormal, VampPrior
from elbo_jax.registry import ConfigError
from elbo_jax.vae import VAE

D, H = 3, 5
KEY = jax.random.PRNGKey(0)
POSTERIOR_MODULES = {
    "diagonal_gaussian": DiagonalGaussian(D),
    "full_gaussian": FullGaussian(D),
    "planar_flow": PlanarFlow(D, num_flows=4),
    "iaf": IAF(D, num_flows=3, hidden=16),
}
GAUSSIAN = ["diagonal_gaussian", "full_gaussian"]
FLOWS = ["planar_flow", "iaf"]


@functools.partial(jax.jit, static_argnames="scale")
def _randomise(params, key, scale=0.3):
  """Every leaf plus N(0, scale^2) noise, so zero-initialised heads and biases matter too."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
      tree, [leaf + scale * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)]
  )


@functools.cache
def _jitted(module, method, static_argnums):
  return jax.jit(lambda params, *args: module.apply(params, *args, method=method),
                 static_argnums=static_argnums)


def _call(module, params, method, *args):
  """module.apply(params, *args, method=method), jitted: one compile beats op-by-op dispatch."""
  static = tuple(i + 1 for i, a in enumerate(args) if isinstance(a, int))
  return _jitted(module, method, static)(params, *args)


def _init(module, method, *args, key=KEY):
  return jax.jit(lambda key: module.init(key, *args, method=method))(key)


def _init_posterior(module, h, key=KEY):
  # Through sample as well, so the IAF's MADE parameters exist.
  return _init(module, lambda m, h: m.sample(m(h), KEY, 1), h, key=key)


@functools.cache
def _posterior(name, seed=0, h_shape=(H,)):
  """(module, params, q) with random parameters and features h of shape h_shape."""
  module = POSTERIOR_MODULES[name]
  key_h, key_init, key_p = jax.random.split(jax.random.PRNGKey(seed), 3)
  h = jax.random.normal(key_h, h_shape)
  params = _randomise(_init_posterior(module, h.reshape(-1, H)[0], key_init), key_p)
  return module, params, _call(module, params, "__call__", h)


def _learned_gaussian_prior(seed=1):
  prior = LearnedGaussian(D)
  params = _randomise(_init(prior, "gaussian_params", key=jax.random.PRNGKey(seed)),
                      jax.random.PRNGKey(seed + 1))
  return prior, params


def _cov(name, q):
  if name == "diagonal_gaussian":
    return np.diag(np.exp(2.0 * np.asarray(q["log_scale"], np.float64)))
  tril = np.asarray(q["scale_tril"], np.float64)
  return tril @ tril.T


@pytest.mark.parametrize("name", GAUSSIAN)
@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_log_q_matches_scipy(name, seed):
  module, params, q = _posterior(name, seed)
  z, log_q = _call(module, params, "sample", q, jax.random.PRNGKey(seed + 10), 16)
  assert z.shape == (16, D) and log_q.shape == (16,)
  expected = stats.multivariate_normal(np.asarray(q["mean"], np.float64), _cov(name, q)).logpdf(
      np.asarray(z, np.float64)
  )
  np.testing.assert_allclose(log_q, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(_call(module, params, "log_prob", z, q), expected, rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_log_prob_broadcasts_over_q_leading_dims(name):
  module, params, q = _posterior(name, h_shape=(4, H))  # leaves: [K=4, ...]
  z = jax.random.normal(jax.random.PRNGKey(3), (6, 1, D))
  out = _call(module, params, "log_prob", z, q)
  assert out.shape == (6, 4)
  for k in range(4):
    q_k = jax.tree.map(lambda a: a[k], q)
    np.testing.assert_allclose(out[:, k], _call(module, params, "log_prob", z[:, 0], q_k),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(POSTERIOR_MODULES))
def test_sample_is_reparameterize_of_standard_normal_noise(name):
  module, params, q = _posterior(name)
  key = jax.random.PRNGKey(4)
  z, log_q = _call(module, params, "sample", q, key, 7)
  eps = jax.random.normal(key, (7, D))
  z2, log_q2 = _call(module, params, "reparameterize", q, eps)
  np.testing.assert_allclose(z, z2, rtol=1e-6)
  np.testing.assert_allclose(log_q, log_q2, rtol=1e-6)
  assert np.isfinite(np.asarray(log_q)).all()


@pytest.mark.parametrize("name", FLOWS)
@pytest.mark.parametrize("seed", [0, 1])
def test_flow_log_q_is_base_density_minus_numerical_log_det(name, seed):
  module, params, q = _posterior(name, seed)
  eps = jax.random.normal(jax.random.PRNGKey(seed + 20), (5, D))
  _, log_q = _call(module, params, "reparameterize", q, eps)

  def flow(e):
    return module.apply(params, q, e[None], method="reparameterize")[0][0]

  jacobians = np.asarray(jax.jit(jax.vmap(jax.jacfwd(flow)))(eps), np.float64)  # [5, D, D]
  sign, log_det = np.linalg.slogdet(jacobians)
  assert np.all(sign > 0)  # both flows preserve orientation
  expected = stats.norm.logpdf(np.asarray(eps, np.float64)).sum(-1) - log_det
  np.testing.assert_allclose(log_q, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FLOWS)
def test_flow_log_prob_raises_clear_error(name):
  module, params, q = _posterior(name)
  with pytest.raises(NotImplementedError, match="inverse"):
    _call(module, params, "log_prob", jnp.zeros((D,)), q)


@pytest.mark.parametrize("latent_dim", [1, 4])
def test_made_is_autoregressive(latent_dim):
  made = _MADE(latent_dim, hidden=12)
  context = jax.random.normal(KEY, (6,))
  z = jax.random.normal(jax.random.PRNGKey(1), (1, latent_dim))
  params = _randomise(_init(made, "__call__", z, context), jax.random.PRNGKey(2), scale=1.0)
  jacobians = jax.jit(jax.jacfwd(lambda x: made.apply(params, x[None], context)))(z[0])
  for jac in jacobians:  # d m / d z and d s / d z: [1, D, D]
    jac = np.asarray(jac)[0]
    # Output d may depend on inputs before d only: strictly lower triangular.
    np.testing.assert_array_equal(np.triu(jac), 0.0)
    if latent_dim > 1:
      assert np.abs(jac[np.tril_indices(latent_dim, -1)]).min() > 0


@pytest.mark.parametrize("name", GAUSSIAN)
def test_gaussian_samples_have_right_moments(name):
  module, params, q = _posterior(name)
  n = 20_000
  z, _ = _call(module, params, "sample", q, jax.random.PRNGKey(5), n)
  z = np.asarray(z, np.float64)
  cov = _cov(name, q)
  scale = np.sqrt(np.diag(cov))
  np.testing.assert_allclose(z.mean(0), q["mean"], atol=float(5 * scale.max() / np.sqrt(n)))
  np.testing.assert_allclose(np.cov(z.T), cov, atol=0.05 * float(np.max(np.abs(cov))))


@pytest.mark.parametrize("name", GAUSSIAN)
@pytest.mark.parametrize("prior_name", ["standard_normal", "learned_gaussian"])
def test_monte_carlo_kl_matches_analytic(name, prior_name):
  module, params, q = _posterior(name)
  if prior_name == "standard_normal":
    prior, prior_params = StandardNormal(D), {}
  else:
    prior, prior_params = _learned_gaussian_prior()
  prior_mean, prior_log_scale = _call(prior, prior_params, "gaussian_params")
  if name == "diagonal_gaussian":
    kl = distributions.kl_diag_normal(q["mean"], q["log_scale"], prior_mean, prior_log_scale).sum()
  else:
    kl = distributions.kl_tril_normal_diag_normal(q["mean"], q["scale_tril"], prior_mean,
                                                  prior_log_scale)
  n = 20_000
  z, log_q = _call(module, params, "sample", q, jax.random.PRNGKey(6), n)
  terms = np.asarray(log_q - _call(prior, prior_params, "log_prob", z), np.float64)
  stderr = terms.std() / np.sqrt(n)
  assert abs(terms.mean() - float(kl)) < 4 * stderr + 1e-4, (terms.mean(), float(kl), stderr)


def test_prior_log_probs_match_scipy():
  z = jax.random.normal(KEY, (5, 4, D)) * 2.0
  z64 = np.asarray(z, np.float64)

  out = _call(StandardNormal(D), {}, "log_prob", z)
  assert out.shape == (5, 4)
  np.testing.assert_allclose(out, stats.norm.logpdf(z64).sum(-1), rtol=1e-5, atol=1e-5)

  prior, params = _learned_gaussian_prior()
  mean, log_scale = (np.asarray(a, np.float64) for a in _call(prior, params, "gaussian_params"))
  np.testing.assert_allclose(_call(prior, params, "log_prob", z),
                             stats.norm.logpdf(z64, mean, np.exp(log_scale)).sum(-1),
                             rtol=1e-5, atol=1e-5)

  mog = MixtureOfGaussians(D, num_components=4)
  params = _randomise(_init(mog, "components"), jax.random.PRNGKey(7), scale=1.0)
  log_w, means, log_scales = (np.asarray(a, np.float64)
                              for a in _call(mog, params, "components"))
  per_component = stats.norm.logpdf(z64[..., None, :], means, np.exp(log_scales)).sum(-1)
  np.testing.assert_allclose(_call(mog, params, "log_prob", z),
                             special.logsumexp(per_component + log_w, axis=-1),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("latent_dim", [1, D])
def test_sample_shapes(latent_dim):
  for prior in (StandardNormal(latent_dim), LearnedGaussian(latent_dim),
                MixtureOfGaussians(latent_dim, num_components=3)):
    params = _init(prior, "sample", KEY, 2)
    assert _call(prior, params, "sample", KEY, 11).shape == (11, latent_dim)
  for name, module in POSTERIOR_MODULES.items():
    module = module.clone(latent_dim=latent_dim)
    h = jnp.ones((2, H))
    params = _init_posterior(module, h[0])
    q = _call(module, params, "__call__", h)
    assert q["mean"].shape == (2, latent_dim), name
    z, log_q = _call(module, params, "sample", jax.tree.map(lambda a: a[0], q), KEY, 9)
    assert z.shape == (9, latent_dim) and log_q.shape == (9,), name
    if name == "full_gaussian":
      assert q["scale_tril"].shape == (2, latent_dim, latent_dim)


def test_mog_samples_follow_the_mixture():
  mog = MixtureOfGaussians(1, num_components=3)
  params = {"params": {"means": jnp.array([[-4.0], [0.0], [4.0]]),
                       "log_scales": jnp.full((3, 1), np.log(0.5)),
                       "logits": jnp.array([0.0, 1.0, 2.0])}}
  z = np.asarray(_call(mog, params, "sample", KEY, 40_000))[:, 0]
  weights = special.softmax([0.0, 1.0, 2.0])
  assert abs(z.mean() - weights @ np.array([-4.0, 0.0, 4.0])) < 0.05
  np.testing.assert_allclose([(z < -2).mean(), ((z > -2) & (z < 2)).mean(), (z > 2).mean()],
                             weights, atol=0.01)
  density, edges = np.histogram(z, bins=40, range=(-7, 7), density=True)
  centres = jnp.asarray((edges[:-1] + edges[1:]) / 2)[:, None]
  expected = np.exp(np.asarray(_call(mog, params, "log_prob", centres)))
  # The histogram averages the density over a bin of width 0.35; the tolerance allows for that.
  np.testing.assert_allclose(density, expected, atol=0.03)


@pytest.mark.parametrize("name", list(POSTERIOR_MODULES))
@pytest.mark.parametrize("extreme", [-50.0, 50.0])
def test_extreme_log_scale_gives_finite_outputs_and_gradients(name, extreme):
  module, params, _ = _posterior(name)
  head = "log_diagonal_head" if name == "full_gaussian" else "log_scale_head"
  p = params["params"][head]
  params = {"params": {**params["params"],
                       head: {"kernel": jnp.zeros_like(p["kernel"]),
                              "bias": jnp.full_like(p["bias"], extreme)}}}
  h = jax.random.normal(KEY, (H,))
  prior, prior_params = LearnedGaussian(D), {"params": {"mean": jnp.zeros(D),
                                                        "log_scale": jnp.full(D, -extreme)}}

  def loss(params, prior_params):
    q = module.apply(params, h)
    z, log_q = module.apply(params, q, jax.random.PRNGKey(8), 4, method="sample")
    out = jnp.mean(jnp.square(z)) - log_q.mean() + prior.apply(prior_params, z, method="log_prob")
    if name in GAUSSIAN:
      out += module.apply(params, jax.lax.stop_gradient(z), q, method="log_prob").mean()
      mean, log_scale = prior.apply(prior_params, method="gaussian_params")
      if name == "diagonal_gaussian":
        out += distributions.kl_diag_normal(q["mean"], q["log_scale"], mean, log_scale).sum()
      else:
        out += distributions.kl_tril_normal_diag_normal(q["mean"], q["scale_tril"], mean,
                                                        log_scale)
    return out

  q = _call(module, params, "__call__", h)
  log_scale = q["log_scale"] if "log_scale" in q else jnp.log(jnp.diagonal(q["scale_tril"]))
  assert np.all(np.abs(np.asarray(log_scale)) <= LOG_SCALE_BOUND)
  value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, prior_params)
  assert np.isfinite(float(value))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_planar_flow_invertibility_constraint():
  _, _, q = _posterior("planar_flow", h_shape=(8, H))
  wu_hat = (q["w"] * planar_u_hat(q["u"], q["w"])).sum(-1)
  assert np.all(np.asarray(wu_hat) >= -1.0)
  # Adversarial directions: u pointing against w, strongly.
  w = jax.random.normal(KEY, (100, D))
  u = -jnp.linspace(0.0, 30.0, 100)[:, None] * w + jax.random.normal(jax.random.PRNGKey(9),
                                                                      (100, D))
  wu = (w * u).sum(-1)
  wu_hat = (w * planar_u_hat(u, w)).sum(-1)
  # Recomputing w.u_hat in float32 rounds relative to |w.u| (up to ~100 here); the flow's log-det
  # never recomputes it (it uses softplus(w.u) directly).
  assert np.all(np.asarray(wu_hat) >= -1.0 - 1e-6 * (1.0 + np.abs(np.asarray(wu))))
  np.testing.assert_allclose(wu_hat, jax.nn.softplus(wu) - 1.0, atol=1e-4)


def test_vamp_prior_pseudo_inputs_and_vae_density():
  prior = VampPrior(D, num_pseudo_inputs=7, data_shape=(4,))
  assert prior.mixes_posterior and not prior.is_gaussian
  params = _init(prior, "pseudo_inputs")
  u = _call(prior, params, "pseudo_inputs")
  assert u.shape == (7, 4) and np.all((u >= 0) & (u <= 1))
  assert abs(float(u.mean()) - 0.05) < 0.02
  clipped = _call(prior, {"params": {"pseudo_inputs": jnp.full((7, 4), 3.0)}}, "pseudo_inputs")
  np.testing.assert_array_equal(clipped, 1.0)
  with pytest.raises(NotImplementedError, match="VAE.prior_log_prob"):
    _call(prior, params, "log_prob", jnp.zeros((D,)))

  for posterior in (DiagonalGaussian(D), FullGaussian(D)):
    vae = VAE(encoder=nn.Dense(H), decoder=nn.Dense(4), likelihood=None, prior=prior,
              posterior=posterior)
    x = jnp.full((4,), 0.5)
    params = _init(vae, lambda m, x: m.prior_log_prob(m.sample_posterior(m.encode(x), KEY, 2)[0]),
                   x)
    params = _randomise(params, jax.random.PRNGKey(10))
    z = jax.random.normal(KEY, (5, D))
    out = _call(vae, params, "prior_log_prob", z)

    def per_pseudo_input(m, z):  # log q(z | u_k) for each k, one pseudo-input at a time: [5, K]
      u = m.prior.pseudo_inputs()
      return jnp.stack([m.posterior_log_prob(z, m.encode(u[k])) for k in range(7)], -1)

    per_k = np.asarray(_call(vae, params, per_pseudo_input, z), np.float64)
    np.testing.assert_allclose(out, special.logsumexp(per_k, -1) - np.log(7), rtol=1e-5,
                               atol=1e-5)
    assert _call(vae, params, "sample_prior", KEY, 3).shape == (3, D)


def test_unknown_names_raise_config_error_listing_allowed():
  assert POSTERIORS.names() == ["diagonal_gaussian", "full_gaussian", "iaf", "planar_flow"]
  assert PRIORS.names() == ["learned_gaussian", "mog", "standard_normal", "vamp"]
  with pytest.raises(ConfigError, match="posterior.name='gaussian'.*diagonal_gaussian, "
                     "full_gaussian, iaf, planar_flow"):
    POSTERIORS.get("gaussian")
  with pytest.raises(ConfigError, match="prior.name='normal'.*learned_gaussian, mog, "
                     "standard_normal, vamp"):
    PRIORS.get("normal")
  with pytest.raises(ConfigError, match="posterior.num_flows"):
    PlanarFlow(D, num_flows=0).init(KEY, jnp.ones((H,)))
