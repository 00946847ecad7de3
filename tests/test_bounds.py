"""MIWAE, CIWAE and PIWAE (Rainforth et al. 2018) meet their definitions and their special cases.

On the same key every importance-weighted objective draws the same samples, so the identities
below hold draw by draw, in value and in gradient, not only in expectation:
  MIWAE(1, K) = IWAE(K);  MIWAE(M, 1) = the M-sample ELBO;  ELBO <= MIWAE(M, K) <= IWAE(M*K);
  CIWAE(beta) = beta ELBO + (1 - beta) IWAE(K);
  PIWAE: encoder <- MIWAE(M, K), decoder <- IWAE(M*K).
Most run on the linear-Gaussian VAE of test_objectives; the inference/generative split is also
checked on a VampPrior MLP VAE and on Burda's two-stochastic-layer model.
"""

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

import elbo_jax as ej
from elbo_jax import objectives
from elbo_jax.build import check_config
from elbo_jax.config import default_config
from elbo_jax.likelihoods import Gaussian
from elbo_jax.models import MLPDecoder, MLPEncoder
from elbo_jax.models.hierarchical import TwoLayerVAE
from elbo_jax.posteriors import DiagonalGaussian
from elbo_jax.priors import VampPrior
from elbo_jax.vae import merge_params, split_params
from tests.test_objectives import make_model, set_posterior

ESTIMATORS = objectives.ESTIMATORS


def linear_gaussian():
  vae, params, x, (W, b, s) = make_model()
  params, _ = set_posterior(params, W, b, s, mean_offset=0.6, cov_scale=2.0)
  return vae, params, x


def vamp_mlp():
  vae = ej.VAE(encoder=MLPEncoder(data_shape=(6,), hidden=(8,)),
               decoder=MLPDecoder(out_shape=(6,), hidden=(8,)),
               likelihood=Gaussian(event_shape=(6,), variance="per_pixel", scale=0.5),
               prior=VampPrior(latent_dim=3, num_pseudo_inputs=4, data_shape=(6,)),
               posterior=DiagonalGaussian(latent_dim=3))
  x = jax.random.uniform(jax.random.key(0), (6,))
  return vae, vae.init(jax.random.key(1), x, jax.random.key(2)), x


def two_layer():
  vae = TwoLayerVAE(likelihood=Gaussian(event_shape=(6,), variance="per_pixel", scale=0.5),
                    data_shape=(6,), hidden1=(8,), latent1=3, hidden2=(8,), latent2=2)
  x = jax.random.uniform(jax.random.key(0), (6,))
  return vae, vae.init(jax.random.key(1), x, jax.random.key(2)), x


MODELS = {"linear_gaussian": linear_gaussian, "vamp_mlp": vamp_mlp, "two_layer": two_layer}


@pytest.fixture(scope="module")
def lg():
  return linear_gaussian()


def loss_grad(f, params, x, key):
  return jax.grad(lambda p: f(p, x, key)["loss"])(params)


def assert_trees_close(a, b, rtol=1e-4, atol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


def trees_close(a, b, rtol=1e-4, atol=1e-5):
  return all(np.allclose(u, v, rtol=rtol, atol=atol)
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# The VampPrior and two-layer models (8-9 s each) run with the slow tests.
@pytest.mark.parametrize("name", [
    n if n == "linear_gaussian" else pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def test_split_params_puts_what_q_reads_on_one_side_and_what_p_reads_on_the_other(name):
  vae, params, x = MODELS[name]()
  inference, generative = split_params(vae, params)
  assert_trees_close(merge_params(inference, generative), params, rtol=0, atol=0)
  z = jax.random.normal(jax.random.key(3), (2, vae.latent_dim))

  def grad_split(fn):
    return split_params(vae, jax.grad(lambda p: vae.apply(p, x, method=fn).sum())(params))

  def nonzero(tree):
    return [bool(np.any(leaf != 0)) for leaf in jax.tree.leaves(tree)]

  # log q(z|x) at a fixed z reads every inference parameter and no generative one.
  g_inf, g_gen = grad_split(lambda m, x: m.posterior_log_prob(z, m.encode(x)))
  assert all(nonzero(g_inf)) and not any(nonzero(g_gen))
  # log p(x|z) reads no inference parameter; log p(x, z) reads every generative one (VampPrior's
  # pseudo-inputs included, although p(z) evaluates the encoder at them).
  g_inf, _ = grad_split(lambda m, x: m.likelihood_log_prob(z, x))
  assert not any(nonzero(g_inf))
  _, g_gen = grad_split(lambda m, x: m.likelihood_log_prob(z, x) + m.prior_log_prob(z))
  assert all(nonzero(g_gen)) and jax.tree.leaves(g_gen)
  if name == "vamp_mlp":
    assert "pseudo_inputs" in generative["params"]["prior"]


def test_split_params_refuses_a_submodule_named_on_neither_side(lg):
  vae, params, _ = lg
  with pytest.raises(ValueError, match=r"\['extra'\] in neither"):
    split_params(vae, {"params": params["params"] | {"extra": {}}})


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_miwae_with_one_group_is_iwae_in_value_and_gradient(lg, estimator):
  vae, params, x = lg
  key = jax.random.key(10)
  m = ej.miwae(vae, num_averages=1, num_samples=5, estimator=estimator)
  i = ej.iwae(vae, num_samples=5, estimator=estimator)
  for name, value in i(params, x, key).items():
    np.testing.assert_allclose(m(params, x, key)[name], value, rtol=1e-6, atol=1e-6)
  assert_trees_close(loss_grad(m, params, x, key), loss_grad(i, params, x, key))


def test_miwae_with_groups_of_one_is_the_monte_carlo_elbo_in_value_and_gradient(lg):
  vae, params, x = lg
  key = jax.random.key(11)
  m = ej.miwae(vae, num_averages=6, num_samples=1)
  e = ej.elbo(vae, num_samples=6, kl="mc")
  m_terms, e_terms = m(params, x, key), e(params, x, key)
  for name in ("bound", "elbo", "log_px_given_z", "kl", "loss"):
    np.testing.assert_allclose(m_terms[name], e_terms[name], rtol=1e-5, atol=1e-5)
  assert_trees_close(loss_grad(m, params, x, key), loss_grad(e, params, x, key))


def test_miwae_dreg_normalises_within_groups_so_groups_of_one_stick_the_landing(lg):
  """A group of one has the normalised weight 1, and DReG with w = 1 is STL; weights normalised
  over all M*K samples (IWAE(M*K)'s DReG) give another gradient, so the check can fail."""
  vae, params, x = lg
  key = jax.random.key(12)
  dreg = loss_grad(ej.miwae(vae, num_averages=6, num_samples=1, estimator="dreg"), params, x, key)
  stl = loss_grad(ej.miwae(vae, num_averages=6, num_samples=1, estimator="stl"), params, x, key)
  assert_trees_close(dreg, stl)
  pooled = loss_grad(ej.iwae(vae, num_samples=6, estimator="dreg"), params, x, key)
  assert not trees_close(pooled["params"]["posterior"], stl["params"]["posterior"])


def test_miwae_sees_the_samples_of_iwae_mk_and_lies_between_the_elbo_and_iwae_mk(lg):
  vae, params, x = lg
  m = ej.miwae(vae, num_averages=3, num_samples=4)
  i = ej.iwae(vae, num_samples=12)
  for seed in range(5):
    key = jax.random.key(100 + seed)
    m_terms, i_terms = m(params, x, key), i(params, x, key)
    np.testing.assert_allclose(m_terms["log_weights"], i_terms["log_weights"], rtol=1e-6)
    groups = np.asarray(m_terms["log_weights"], np.float64).reshape(3, 4)
    np.testing.assert_allclose(m_terms["bound"], np.mean(logsumexp(groups, 1) - np.log(4)),
                               rtol=1e-5)
    # Jensen, sample by sample: log of a mean >= mean of logs, within and across groups.
    assert i_terms["elbo"] < m_terms["bound"] < i_terms["bound"]
    np.testing.assert_allclose(m_terms["iwae"], i_terms["bound"], rtol=1e-6)


def test_miwae_dreg_keeps_the_generative_gradient_and_is_unbiased_for_the_encoder(lg):
  vae, params, x = lg
  key = jax.random.key(13)
  f = {e: ej.miwae(vae, num_averages=2, num_samples=3, estimator=e) for e in ("reparam", "dreg")}
  grads = {e: loss_grad(f[e], params, x, key) for e in f}
  assert_trees_close(grads["dreg"]["params"]["decoder"], grads["reparam"]["params"]["decoder"])
  # Over many draws the encoder gradients agree in mean (DReG only removes variance).
  keys = jax.random.split(jax.random.key(14), 3000)
  enc = {e: jax.vmap(lambda k, e=e: loss_grad(f[e], params, x, k))(keys)["params"]["posterior"]
         for e in f}
  for a, b in zip(jax.tree.leaves(enc["dreg"]), jax.tree.leaves(enc["reparam"])):
    se = np.sqrt((a.var(0) + b.var(0)) / len(keys))
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 4.5 * se + 1e-4)
  assert sum(a.var(0).sum() for a in jax.tree.leaves(enc["dreg"])) < sum(
      b.var(0).sum() for b in jax.tree.leaves(enc["reparam"]))


def _elbo_part(vae, num_samples, estimator):
  """The ELBO with the gradient CIWAE uses for it: reparameterised, or sticking the landing."""
  if estimator == "reparam":
    return ej.elbo(vae, num_samples=num_samples, kl="mc")
  return ej.miwae(vae, num_averages=num_samples, num_samples=1, estimator="stl")


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_ciwae_is_beta_elbo_plus_one_minus_beta_iwae_in_value_and_gradient(lg, estimator):
  """beta = 1 is the ELBO (mean of the K log-weights), beta = 0 IWAE(K), and in between the mix."""
  vae, params, x = lg
  key = jax.random.key(15)
  k = 5
  e, i = _elbo_part(vae, k, estimator), ej.iwae(vae, num_samples=k, estimator=estimator)
  e_bound, i_bound = e(params, x, key)["bound"], i(params, x, key)["bound"]
  e_grad, i_grad = loss_grad(e, params, x, key), loss_grad(i, params, x, key)
  for beta in (1.0, 0.3, 0.0):
    c = ej.ciwae(vae, num_samples=k, ciwae_beta=beta, estimator=estimator)
    terms = c(params, x, key)
    np.testing.assert_allclose(terms["bound"], beta * e_bound + (1 - beta) * i_bound, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], -terms["bound"], rtol=1e-6)
    mixed = jax.tree.map(lambda a, b, beta=beta: beta * a + (1 - beta) * b, e_grad, i_grad)
    assert_trees_close(loss_grad(c, params, x, key), mixed)


# The VampPrior model (11 s to compile) runs with the slow tests.
@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n == "vamp_mlp" else n for n in MODELS])
@pytest.mark.parametrize("estimator", ["reparam", "dreg"])
def test_piwae_gives_the_encoder_miwaes_gradient_and_the_decoder_iwae_mks(name, estimator):
  vae, params, x = MODELS[name]()
  m_, k = 3, 4
  key = jax.random.key(16)
  p = ej.piwae(vae, num_averages=m_, num_samples=k, estimator=estimator)
  m = ej.miwae(vae, num_averages=m_, num_samples=k, estimator=estimator)
  i = ej.iwae(vae, num_samples=m_ * k, estimator=estimator)
  p_inf, p_gen = split_params(vae, loss_grad(p, params, x, key))
  m_inf, m_gen = split_params(vae, loss_grad(m, params, x, key))
  i_inf, i_gen = split_params(vae, loss_grad(i, params, x, key))
  assert_trees_close(p_inf, m_inf)
  assert_trees_close(p_gen, i_gen)
  # The two bounds differ in gradient on both networks, so the comparisons above can fail.
  assert not trees_close(m_inf, i_inf) and not trees_close(m_gen, i_gen)
  terms = p(params, x, key)
  np.testing.assert_allclose(terms["bound"], i(params, x, key)["bound"], rtol=1e-5)
  np.testing.assert_allclose(terms["miwae"], m(params, x, key)["bound"], rtol=1e-5)
  np.testing.assert_allclose(terms["loss"], -terms["bound"], rtol=1e-6)


@pytest.mark.parametrize("build", [
    lambda vae: ej.miwae(vae, num_averages=2, num_samples=3, estimator="dreg"),
    lambda vae: ej.ciwae(vae, num_samples=3, estimator="dreg"),
    lambda vae: ej.piwae(vae, num_averages=2, num_samples=3, estimator="dreg"),
], ids=["miwae", "ciwae", "piwae"])
def test_new_objectives_under_vmap_and_jit_equal_a_python_loop(lg, build):
  vae, params, _ = lg
  f = build(vae)
  xs = jax.random.normal(jax.random.key(17), (3, 4))
  keys = jax.random.split(jax.random.key(18), 3)
  batched = ej.batched(f)(params, xs, keys, 1.0)
  for n in range(3):
    for term, value in f(params, xs[n], keys[n]).items():
      np.testing.assert_allclose(batched[term][n], value, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,fields,build", [
    ("miwae", {"num_averages": 3, "num_samples": 2, "estimator": "dreg"},
     lambda vae: ej.miwae(vae, num_averages=3, num_samples=2, estimator="dreg")),
    ("ciwae", {"num_samples": 4, "ciwae_beta": 0.25, "estimator": "stl"},
     lambda vae: ej.ciwae(vae, num_samples=4, ciwae_beta=0.25, estimator="stl")),
    ("piwae", {"num_averages": 2, "num_samples": 3},
     lambda vae: ej.piwae(vae, num_averages=2, num_samples=3)),
])
def test_every_new_objective_is_built_from_its_config_fields(lg, name, fields, build):
  vae, params, x = lg
  cfg = default_config()
  cfg.objective.name = name
  for field, value in fields.items():
    cfg.objective[field] = value
  check_config(cfg)
  f = objectives.from_config(vae, cfg.objective)
  key = jax.random.key(19)
  expected = build(vae)
  for term, value in expected(params, x, key).items():
    np.testing.assert_allclose(f(params, x, key)[term], value, rtol=1e-6)
  assert_trees_close(loss_grad(f, params, x, key), loss_grad(expected, params, x, key))


@pytest.mark.parametrize("fields,message", [
    ({"name": "miwae", "num_averages": 0}, "objective.num_averages=0 must be a positive integer"),
    ({"name": "piwae", "num_averages": -2}, "objective.num_averages=-2 must be a positive integer"),
    ({"name": "ciwae", "ciwae_beta": 1.5}, "objective.ciwae_beta=1.5 must be a number in [0, 1]"),
    ({"name": "ciwae", "ciwae_beta": -0.1}, "objective.ciwae_beta=-0.1 must be a number in [0, 1]"),
    ({"name": "miwae", "estimator": "score"},
     "objective.estimator='score' is not known; allowed values: reparam, stl, dreg"),
    ({"name": "ciwae", "estimator": "vimco"}, "objective.estimator='vimco' is not known"),
    ({"name": "piwae", "estimator": "DReG"}, "objective.estimator='DReG' is not known"),
])
def test_bad_objective_fields_are_one_line_config_errors(lg, fields, message):
  cfg = default_config()
  for field, value in fields.items():
    cfg.objective[field] = value
  for check in (check_config, lambda c: objectives.from_config(lg[0], c.objective)):
    with pytest.raises(ej.ConfigError) as error:
      check(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("fields,message", [
    ({"name": "iwae", "num_averages": 4},
     "objective.num_averages=4 applies to objective.name in: miwae, piwae"),
    ({"name": "elbo", "estimator": "dreg"},
     "objective.estimator='dreg' applies to objective.name in: iwae, miwae, ciwae, piwae"),
])
def test_fields_of_other_objectives_are_refused_with_one_line_errors(lg, fields, message):
  cfg = default_config()
  for field, value in fields.items():
    cfg.objective[field] = value
  with pytest.raises(ej.ConfigError) as error:
    objectives.from_config(lg[0], cfg.objective)
  assert message in str(error.value) and "\n" not in str(error.value)
