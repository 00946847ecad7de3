"""Data a likelihood cannot score is refused: shape and dtype while tracing, on every path that
scores x (objectives, the evaluator); values with `ej.batched(..., checked=True)`."""

import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import elbo_jax as ej
from elbo_jax import evaluation, likelihoods, models, posteriors, priors
from elbo_jax.registry import ConfigError
from tests.conftest import REPO, train_command

SHAPE = (8, 8, 1)
BATCH = 4


class FlatEncoder(nn.Module):
  """A user's encoder that takes any example whose size is 64, e.g. [64] as well as [8, 8, 1]."""

  @nn.compact
  def __call__(self, x):
    return nn.tanh(nn.Dense(16)(jnp.reshape(x, (-1,))))


def _vae(likelihood):
  vae = ej.VAE(encoder=FlatEncoder(), decoder=models.MLPDecoder(likelihood.param_shape, (16,)),
               likelihood=likelihood, prior=priors.StandardNormal(latent_dim=2),
               posterior=posteriors.DiagonalGaussian(latent_dim=2))
  return vae, vae.init(jax.random.key(0), jnp.zeros(SHAPE), jax.random.key(1))


def _images(dtype=np.uint8, shape=SHAPE):
  """BATCH images of levels 0..255 with the given dtype and per-example shape."""
  levels = np.random.default_rng(0).integers(0, 256, (BATCH, *SHAPE))
  return levels.reshape(BATCH, *shape).astype(dtype)


def _keys():
  return jax.random.split(jax.random.key(2), BATCH)


ENTRY_POINTS = {
    "ej.batched(ej.elbo)": lambda vae, p, x: ej.batched(ej.elbo(vae))(p, x, _keys(), 1.0),
    "jit(vmap(ej.elbo))": lambda vae, p, x: jax.jit(
        jax.vmap(ej.elbo(vae), in_axes=(None, 0, 0)))(p, x, _keys()),
    "ej.iwae": lambda vae, p, x: ej.batched(ej.iwae(vae, num_samples=3))(p, x, _keys(), 1.0),
    "evaluator": lambda vae, p, x: evaluation.log_likelihood(
        vae, p, x, jax.random.key(3), num_samples=4, chunk_size=2, batch_size=BATCH),
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("likelihood", [likelihoods.Bernoulli, likelihoods.ContinuousBernoulli])
def test_8_bit_images_are_refused_by_a_likelihood_over_the_unit_interval(entry, likelihood):
  vae, params = _vae(likelihood(event_shape=SHAPE))
  with pytest.raises(ConfigError, match=rf"^the {likelihood.__name__} likelihood scores values "
                                        r"in \[0, 1\], but x has integer dtype uint8; scale x to "
                                        r"\[0, 1\] \(x / 255.*'categorical'"):
    ENTRY_POINTS[entry](vae, params, _images())


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("likelihood", [
    likelihoods.Bernoulli(event_shape=SHAPE), likelihoods.Categorical(event_shape=SHAPE)])
def test_examples_whose_shape_does_not_end_with_the_event_shape_are_refused(entry, likelihood):
  vae, params = _vae(likelihood)
  # Flattened images: the encoder takes them, and without the check the likelihood's broadcast
  # would score them silently.
  with pytest.raises(ConfigError, match=r"has event_shape \(8, 8, 1\), but x has shape \(64,\); "
                                        r"reshape each example to \(8, 8, 1\)"):
    ENTRY_POINTS[entry](vae, params, _images(np.float32, (64,)) / 255)


def test_the_8_bit_likelihoods_take_integer_and_float_levels_alike():
  vae, params = _vae(likelihoods.Categorical(event_shape=SHAPE))
  as_uint8, as_float = (ENTRY_POINTS["ej.batched(ej.elbo)"](vae, params, _images(dtype))
                        for dtype in (np.uint8, np.float32))
  np.testing.assert_allclose(as_uint8["elbo"], as_float["elbo"], rtol=1e-6)


@pytest.mark.parametrize("likelihood", [likelihoods.Bernoulli, likelihoods.ContinuousBernoulli])
def test_checked_refuses_float_data_outside_the_unit_interval(likelihood):
  vae, params = _vae(likelihood(event_shape=SHAPE))
  checked = ej.batched(ej.elbo(vae), checked=True)
  with pytest.raises(ConfigError, match=r"^the \w+ likelihood scores values in \[0, 1\], but x "
                                        r"holds values from \d+ to \d+; scale x to \[0, 1\]"):
    checked(params, _images(np.float32), _keys(), 1.0)
  unit = _images(np.float32) / 255
  np.testing.assert_array_equal(checked(params, unit, _keys(), 1.0)["elbo"],
                                ej.batched(ej.elbo(vae))(params, unit, _keys(), 1.0)["elbo"])


@pytest.mark.parametrize("x,problem", [
    (_images(np.float32) / 255, r"holds values from [\d.]+ to [\d.]+, not all of them whole; "),
    (_images(np.float32) + 100, r"holds values from \d+ to \d+; "),
    (_images(np.int32) - 1, r"holds values from -1 to \d+; "),
], ids=["scaled_to_unit_interval", "above_255", "negative"])
def test_checked_refuses_8_bit_levels_outside_0_to_255_or_not_whole(x, problem):
  vae, params = _vae(likelihoods.Categorical(event_shape=SHAPE))
  checked = ej.batched(ej.iwae(vae, num_samples=2), checked=True)
  with pytest.raises(ConfigError, match=r"^the Categorical likelihood scores 8-bit levels, "
                                        rf"whole numbers 0..255, but x {problem}pass the images "
                                        "as uint8"):
    checked(params, x, _keys(), 1.0)
  for valid in (_images(np.uint8), _images(np.float32)):
    assert np.isfinite(checked(params, valid, _keys(), 1.0)["bound"]).all()


def test_training_on_float_images_of_0_to_255_under_a_bernoulli_is_refused_in_one_line(tmp_path):
  levels = np.random.default_rng(0).integers(0, 256, (300, 8, 8)).astype(np.float32)
  np.savez(tmp_path / "images.npz", x_train=levels[:250], x_test=levels[250:])
  run = tmp_path / "run"
  out = subprocess.run(train_command(run, 1, f"--config.data.path={tmp_path / 'images.npz'}"),
                       cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [out.stderr.strip()]
  assert ("array 'x_train' has values in [0.0, 255.0]; floats must lie in [0, 1]: store 8-bit "
          "images as uint8, or divide them by 255") in out.stderr
  assert not run.exists()
