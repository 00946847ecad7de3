"""Shapes of the encoder/decoder families; the two-stochastic-layer model against the protocol."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from elbo_jax import vae
from elbo_jax.models import (
  ACTIVATIONS,
  ENCODER_DECODER_MODELS,
  MLP,
  MODELS,
  ConvDecoder,
  ConvEncoder,
  MLPDecoder,
  MLPEncoder,
  TwoLayerVAE,
)
from elbo_jax.posteriors import IAF, LOG_SCALE_BOUND, DiagonalGaussian
from elbo_jax.priors import MixtureOfGaussians, StandardNormal
from elbo_jax.registry import ConfigError

IMAGE_SHAPES = [(28, 28, 1), (32, 32, 3), (8, 8, 1)]
LEADS = [(), (3,), (2, 3)]
LATENT = 5


class Bernoulli(nn.Module):
  """Test double for a likelihood from `elbo_jax.likelihoods`: logits of independent pixels."""

  event_shape: tuple

  @property
  def param_shape(self):
    return self.event_shape

  def log_prob(self, raw, x):
    per_pixel = x * raw - jax.nn.softplus(raw)
    return per_pixel.sum(tuple(range(-len(self.event_shape), 0)))

  def mean(self, raw):
    return jax.nn.sigmoid(raw)


def _param_out_shape(data_shape):
  # A channel count different from the data's, as a mixture likelihood would need.
  return data_shape[:-1] + (3 * data_shape[-1],)


def _check_shapes(encoder, decoder, data_shape, out_shape):
  # Shapes only: eval_shape traces without compiling, which keeps the parametrized cases fast.
  key = jax.random.key(0)
  enc_params = jax.eval_shape(encoder.init, key, jnp.zeros(data_shape))
  dec_params = jax.eval_shape(decoder.init, key, jnp.zeros((LATENT,)))
  h_one = jax.eval_shape(encoder.apply, enc_params, jax.ShapeDtypeStruct(data_shape, jnp.float32))
  assert len(h_one.shape) == 1
  for lead in LEADS:
    x = jax.ShapeDtypeStruct(lead + data_shape, jnp.float32)
    assert jax.eval_shape(encoder.apply, enc_params, x).shape == lead + h_one.shape
    z = jax.ShapeDtypeStruct(lead + (LATENT,), jnp.float32)
    assert jax.eval_shape(decoder.apply, dec_params, z).shape == lead + out_shape


def _random_params(module, *args):
  """Parameters shaped like `module.init(key, *args)`, drawn in numpy.

  Compiling `init` (its random initializers) costs seconds per module on CPU; tracing it for the
  shapes and sampling in numpy costs nothing.
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
  rng = np.random.default_rng(0)

  def draw(leaf):
    fan_in = math.prod(leaf.shape[:-1]) if len(leaf.shape) > 1 else 100
    return jnp.asarray(rng.normal(size=leaf.shape) / math.sqrt(fan_in), jnp.float32)

  return jax.tree.map(draw, shapes)


def _check_batch_equals_examples(module, inputs):
  # Flattening leading dims must not mix examples: a batch equals its examples one at a time.
  params = _random_params(module, inputs[0])
  apply = jax.jit(module.apply)
  looped = jnp.stack([apply(params, inputs[i]) for i in range(inputs.shape[0])])
  np.testing.assert_allclose(apply(params, inputs), looped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("data_shape", IMAGE_SHAPES)
def test_mlp_shapes(data_shape, gated):
  out_shape = _param_out_shape(data_shape)
  _check_shapes(
      MLPEncoder(data_shape=data_shape, hidden=(16, 8), gated=gated),
      MLPDecoder(out_shape=out_shape, hidden=(8, 16), gated=gated),
      data_shape,
      out_shape,
  )


@pytest.mark.parametrize("data_shape", IMAGE_SHAPES + [(7, 5, 2)])
def test_conv_shapes(data_shape):
  out_shape = _param_out_shape(data_shape)
  _check_shapes(
      ConvEncoder(data_shape=data_shape, channels=(4, 8), hidden=(16,)),
      ConvDecoder(out_shape=out_shape, channels=(4, 8), hidden=(16,)),
      data_shape,
      out_shape,
  )


@pytest.mark.parametrize("family", ["mlp", "conv"])
def test_batch_equals_examples(family):
  data_shape, out_shape = (7, 5, 2), (7, 5, 6)
  if family == "mlp":
    encoder = MLPEncoder(data_shape=data_shape, hidden=(16, 8))
    decoder = MLPDecoder(out_shape=out_shape, hidden=(8, 16))
  else:
    encoder = ConvEncoder(data_shape=data_shape, channels=(4, 8), hidden=(16,))
    decoder = ConvDecoder(out_shape=out_shape, channels=(4, 8), hidden=(16,))
  _check_batch_equals_examples(encoder, jax.random.uniform(jax.random.key(1), (2, 3) + data_shape))
  _check_batch_equals_examples(decoder, jax.random.normal(jax.random.key(2), (2, 3, LATENT)))


def test_conv_decoder_extra_parameter_dims():
  decoder = ConvDecoder(out_shape=(8, 8, 1, 3), channels=(4,), hidden=())
  params = jax.eval_shape(decoder.init, jax.random.key(0), jnp.zeros((LATENT,)))
  out = jax.eval_shape(decoder.apply, params, jax.ShapeDtypeStruct((2, LATENT), jnp.float32))
  assert out.shape == (2, 8, 8, 1, 3)


def test_burda_mlp_sizes():
  encoder = MLPEncoder(data_shape=(28, 28, 1))
  params = jax.eval_shape(encoder.init, jax.random.key(0), jnp.zeros((28, 28, 1)))
  kernels = [p["kernel"].shape for p in params["params"]["MLP_0"].values()]
  assert kernels == [(784, 200), (200, 200)]


def test_gated_layer_is_value_times_sigmoid_gate():
  mlp = MLP(hidden=(3,), gated=True)
  x = jax.random.normal(jax.random.key(0), (4, 5))
  params = _random_params(mlp, x)
  dense = params["params"]["Dense_0"]
  pre = x @ dense["kernel"] + dense["bias"]
  expected = pre[:, :3] * jax.nn.sigmoid(pre[:, 3:])
  np.testing.assert_allclose(mlp.apply(params, x), expected, rtol=1e-5, atol=1e-6)


def test_activations():
  assert ACTIVATIONS.names() == ["elu", "gelu", "relu", "softplus", "swish", "tanh"]
  with pytest.raises(ConfigError, match="model.activation"):
    jax.eval_shape(MLP(activation="sigmoidal").init, jax.random.key(0), jnp.zeros((2,)))


def test_encoder_rejects_wrong_data_shape():
  with pytest.raises(ValueError, match="expects"):
    encoder = MLPEncoder(data_shape=(8, 8, 1))
    jax.eval_shape(encoder.init, jax.random.key(0), jnp.zeros((28, 28, 1)))


def test_registry_builds_each_family():
  assert MODELS.names() == ["conv", "mlp", "two_layer"]
  assert ENCODER_DECODER_MODELS == {"mlp", "conv"}
  likelihood = Bernoulli((28, 28, 1))
  config = ml_collections.ConfigDict(
      {"name": "mlp", "hidden": [300, 300], "activation": "relu", "gated": True}
  )
  encoder, decoder = MODELS.get("mlp")(config, (28, 28, 1), likelihood)
  assert encoder == MLPEncoder(data_shape=(28, 28, 1), hidden=(300, 300), activation="relu",
                               gated=True)
  assert decoder.out_shape == (28, 28, 1) and decoder.hidden == (300, 300)
  encoder, decoder = MODELS.get("conv")({"channels": [16, 32]}, (28, 28, 1), likelihood)
  assert isinstance(encoder, ConvEncoder) and encoder.channels == (16, 32)
  assert isinstance(decoder, ConvDecoder) and decoder.hidden == ConvDecoder.hidden
  model = MODELS.get("two_layer")({"latent1": 20, "latent2": 10}, (28, 28, 1), likelihood)
  assert isinstance(model, TwoLayerVAE) and model.latent_dim == 30


@pytest.mark.parametrize(
    "name, config, data_shape, match",
    [
        ("mlp", {"activation": "sigmoidal"}, (8, 8, 1), "model.activation"),
        ("mlp", {"hidden": [200, 0]}, (8, 8, 1), "model.hidden"),
        ("mlp", {"hidden": 200}, (8, 8, 1), "model.hidden"),
        ("mlp", {"gated": "yes"}, (8, 8, 1), "model.gated"),
        ("conv", {"channels": []}, (8, 8, 1), "model.channels"),
        ("conv", {}, (64,), "needs image data"),
        ("two_layer", {"latent1": 2.5}, (8, 8, 1), "model.latent1"),
    ],
)
def test_registry_config_errors(name, config, data_shape, match):
  with pytest.raises(ConfigError, match=match):
    MODELS.get(name)(config, data_shape, Bernoulli(data_shape))


def test_unknown_model_name():
  with pytest.raises(ConfigError, match="model.name='resnet'"):
    MODELS.get("resnet")


# --- TwoLayerVAE ------------------------------------------------------------------------------

DATA_SHAPE = (28, 28, 1)
D1, D2 = 100, 50


@pytest.fixture(scope="module")
def two_layer():
  model = TwoLayerVAE(likelihood=Bernoulli(DATA_SHAPE), data_shape=DATA_SHAPE)
  x = (jax.random.uniform(jax.random.key(0), (4,) + DATA_SHAPE) < 0.3).astype(jnp.float32)
  params = _random_params(model, x[0], jax.random.key(2))
  return model, params, x


def _single_sample_elbo(model, params, x, key):
  def elbo(m):
    z, log_q = m.sample_posterior(m.encode(x), key, 1)
    return (m.likelihood_log_prob(z, x) + m.prior_log_prob(z) - log_q)[0]

  return nn.apply(elbo, model)(params)


def test_both_model_kinds_satisfy_the_model_protocol_and_declare_capabilities(two_layer):
  likelihood = Bernoulli(DATA_SHAPE)
  encoder, decoder = MODELS.get("mlp")({"hidden": [8]}, DATA_SHAPE, likelihood)
  model = vae.VAE(encoder, decoder, likelihood, StandardNormal(4), DiagonalGaussian(4))
  assert isinstance(model, vae.Model) and isinstance(two_layer[0], vae.Model)
  assert not isinstance(likelihood, vae.Model)
  assert model.has_analytic_kl and model.has_posterior_density
  flow = model.clone(posterior=IAF(4))
  assert not flow.has_analytic_kl and not flow.has_posterior_density
  assert not model.clone(prior=MixtureOfGaussians(4)).has_analytic_kl


def test_two_layer_protocol_shapes(two_layer):
  model, params, x = two_layer
  assert isinstance(model, vae.Model)
  assert model.latent_dim == D1 + D2 and not model.has_analytic_kl and model.has_posterior_density

  def shape(fn, *args):
    return jax.eval_shape(lambda p, *a: nn.apply(fn, model)(p, *a), params, *args).shape

  key = jax.random.key(3)
  z_any = jnp.zeros((2, 3, D1 + D2))
  assert shape(lambda m: m.encode(x[0])["mean"]) == (D1,)
  assert shape(lambda m: m.encode(x[0])["log_scale"]) == (D1,)
  assert shape(lambda m: m.sample_posterior(m.encode(x[0]), key, 7)[0]) == (7, D1 + D2)
  assert shape(lambda m: m.sample_posterior(m.encode(x[0]), key, 7)[1]) == (7,)
  assert shape(lambda m: m.posterior_log_prob(z_any, m.encode(x[0]))) == (2, 3)
  assert shape(lambda m: m.prior_log_prob(z_any)) == (2, 3)
  assert shape(lambda m: m.likelihood_log_prob(z_any, x[0])) == (2, 3)
  assert shape(lambda m: m.sample_prior(key, 6)) == (6, D1 + D2)
  assert shape(lambda m: m.posterior_mean(m.encode(x[0]), key, 7)) == (D1 + D2,)
  assert shape(lambda m: m.likelihood.mean(m.decode(m.sample_prior(key, 6)))) == (6,) + DATA_SHAPE


def test_two_layer_sampled_log_q_is_exact(two_layer):
  model, params, x = two_layer

  @jax.jit
  def both(p):
    def fn(m):
      q = m.encode(x[1])
      z, log_q = m.sample_posterior(q, jax.random.key(6), 5)
      return log_q, m.posterior_log_prob(z, q)

    return nn.apply(fn, model)(p)

  sampled, evaluated = both(params)
  np.testing.assert_allclose(sampled, evaluated, rtol=1e-5, atol=1e-4)


def test_two_layer_prior_matches_numpy(two_layer):
  model, params, _ = two_layer
  z = np.asarray(jax.random.normal(jax.random.key(7), (3, D1 + D2)), np.float64)
  net = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"]["p_z1"])
  h = z[:, D1:]
  for layer in ("Dense_0", "Dense_1"):
    h = np.tanh(h @ net["MLP_0"][layer]["kernel"] + net["MLP_0"][layer]["bias"])
  out = h @ net["Dense_0"]["kernel"] + net["Dense_0"]["bias"]
  mean, log_scale = out[:, :D1], LOG_SCALE_BOUND * np.tanh(out[:, D1:] / LOG_SCALE_BOUND)
  expected = (stats.norm.logpdf(z[:, D1:]).sum(-1)
              + stats.norm.logpdf(z[:, :D1], mean, np.exp(log_scale)).sum(-1))
  prior = jax.jit(lambda p, z: model.apply(p, z, method="prior_log_prob"))
  np.testing.assert_allclose(prior(params, jnp.asarray(z, jnp.float32)), expected,
                             rtol=1e-5, atol=1e-3)


def test_two_layer_vmapped_elbo_equals_loop(two_layer):
  model, params, x = two_layer
  keys = jax.random.split(jax.random.key(8), x.shape[0])
  single = jax.jit(lambda xi, ki: _single_sample_elbo(model, params, xi, ki))
  batched = jax.jit(jax.vmap(single))(x, keys)
  looped = [single(x[i], keys[i]) for i in range(x.shape[0])]
  np.testing.assert_allclose(batched, np.array(looped), rtol=1e-5, atol=1e-3)


@pytest.mark.slow  # 8 s of eager dispatch; the jitted two-layer model trains in the default suite
def test_two_layer_jit_matches_eager_and_grads_finite(two_layer):
  model, params, x = two_layer
  key = jax.random.key(9)
  eager = _single_sample_elbo(model, params, x[2], key)
  # One compiled value_and_grad serves both checks; compiling on CPU dominates this file's time.
  value_and_grad = jax.jit(jax.value_and_grad(lambda p: _single_sample_elbo(model, p, x[2], key)))
  value, grads = value_and_grad(params)
  np.testing.assert_allclose(value, eager, rtol=1e-5, atol=1e-3)
  assert jax.tree.structure(grads) == jax.tree.structure(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_two_layer_extreme_inputs_stay_finite(two_layer):
  model, params, x = two_layer

  @jax.jit
  def run(p, x):
    def fn(m):
      q = m.encode(x)
      z, log_q = m.sample_posterior(q, jax.random.key(10), 2)
      return q["log_scale"], log_q, m.prior_log_prob(z)

    return nn.apply(fn, model)(p)

  log_scale, *log_probs = run(jax.tree.map(lambda a: a * 1e3, params), x[0] * 1e3)
  assert -LOG_SCALE_BOUND <= float(log_scale.min()) and float(log_scale.max()) <= LOG_SCALE_BOUND
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in log_probs)
