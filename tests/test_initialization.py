"""`model.init` and `model.output_bias`: Glorot's and Kingma & Welling's weights, the decoder's
output bias at the logit of the training mean, and Flax's own initialisation left as it was."""

import functools
import math
import re

import flax
import jax
import numpy as np
import pytest

from elbo_jax import batching, initialization, train
from elbo_jax import data as data_lib
from elbo_jax.build import build_trainer, check_config
from elbo_jax.registry import ConfigError
from tests.conftest import tiny_config

KEY = jax.random.key(3)


def _state(overrides, init=None):
  config = tiny_config(**{"model.hidden": (200, 100), **overrides})
  dataset = data_lib.load(config.data)
  trainer = build_trainer([config], dataset)
  return trainer, dataset, flax.traverse_util.flatten_dict(_init(trainer, dataset, init))


def _init(trainer, dataset, init=None, output_bias=None):
  """The initial params, jitted as the trainer does (op by op, the schemes compile ~100 ops)."""
  create = functools.partial(train.create_train_state, trainer.model, trainer.optimizer(),
                             init=init or trainer.init)
  return jax.jit(create)(dataset.train[0], KEY, output_bias=output_bias).params


def _kernels(flat):
  return {path: np.asarray(v) for path, v in flat.items() if path[-1] == "kernel"}


def _fans(kernel):
  field = math.prod(kernel.shape[:-2])
  return field * kernel.shape[-2], field * kernel.shape[-1]


@pytest.mark.parametrize("model", ["mlp", "two_layer"])
def test_glorot_kernels_are_uniform_with_variance_two_over_fan_in_plus_fan_out(model):
  _, _, flat = _state({"model.name": model, "model.hidden2": (100, 50), "model.init": "glorot"})
  kernels = _kernels(flat)
  assert len(kernels) >= 6
  for path, k in kernels.items():
    fan_in, fan_out = _fans(k)
    limit = math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(k).max() <= limit, path
    if k.size >= 2000:  # the sample variance is within 3% of U(-a, a)'s with ~5 sigma margin
      assert k.var() == pytest.approx(2 / (fan_in + fan_out), rel=0.05), path
      assert k.mean() == pytest.approx(0, abs=0.05 * limit), path
      assert np.abs(k).max() > 0.99 * limit, path
  biases = [v for path, v in flat.items() if path[-1] == "bias"]
  assert all(not np.any(b) for b in biases)


@pytest.mark.slow
def test_glorot_conv_kernels_use_the_receptive_field_in_their_fans():
  _, _, flat = _state({"model.name": "conv", "model.hidden": (64,), "model.init": "glorot",
                       "model.channels": (16, 32)})
  kernels = {p: k for p, k in _kernels(flat).items() if k.ndim == 4}
  assert len(kernels) == 5  # two convolutions, two transposed, the output convolution
  for path, k in kernels.items():
    fan_in, fan_out = _fans(k)
    assert np.abs(k).max() <= math.sqrt(6 / (fan_in + fan_out)), path
    if k.size >= 2000:
      assert k.var() == pytest.approx(2 / (fan_in + fan_out), rel=0.05), path


def test_the_default_init_is_flax_init_for_the_same_key():
  trainer, dataset, flat = _state({})
  assert trainer.init == "default" and trainer.output_bias == "zero"
  init_key, sample_key = jax.random.split(KEY)
  flax_params = trainer.model.init(init_key, dataset.train[0], sample_key)
  expected = flax.traverse_util.flatten_dict(flax_params)
  assert expected.keys() == flat.keys()
  for path in expected:
    np.testing.assert_array_equal(flat[path], expected[path])


def test_normal_init_draws_weights_and_biases_with_std_one_hundredth():
  _, _, flat = _state({"model.init": "normal"})
  values = np.concatenate([np.ravel(v) for p, v in flat.items() if p[-1] in ("kernel", "bias")])
  assert values.std() == pytest.approx(initialization.NORMAL_STD, rel=0.02)
  assert values.mean() == pytest.approx(0, abs=1e-3)
  assert all(np.any(v) for p, v in flat.items() if p[-1] == "bias")


@pytest.mark.parametrize("scheme", ["glorot", "normal"])
def test_a_kernel_a_module_starts_at_zero_stays_zero(scheme):
  _, _, flat = _state({"posterior.name": "full_gaussian", "model.init": scheme})
  kernels = _kernels(flat)
  off_diagonal = [k for p, k in kernels.items() if "off_diagonal_head" in p]
  assert len(off_diagonal) == 1 and not np.any(off_diagonal[0])
  assert all(np.any(k) for p, k in kernels.items() if "off_diagonal_head" not in p)


@pytest.mark.parametrize("model,path", [("mlp", ("decoder", "Dense_0")),
                                        ("two_layer", ("decoder_out",))])
def test_the_output_bias_is_the_logit_of_the_clipped_training_mean(model, path):
  config = tiny_config(**{"model.name": model, "model.output_bias": "data_mean"})
  dataset = data_lib.load(config.data)
  trainer = build_trainer([config], dataset)
  # The trainer's path: the mean of the training blocks, padding rows left out.
  bounds = batching.block_bounds(dataset.num_train, config.training.batch_size)
  blocks, sizes = batching.to_blocks(dataset.train, bounds, trainer.steps_per_epoch)
  assert blocks.shape[0] * blocks.shape[1] > dataset.num_train  # there is padding to leave out
  logits = initialization.output_logits(batching.block_mean(blocks, sizes))
  params = _init(trainer, dataset, output_bias=logits)
  bias = np.asarray(flax.traverse_util.flatten_dict(params)[("params", *path, "bias")])
  p = np.clip(dataset.train.astype(np.float64).mean(0), 1e-3, 1 - 1e-3).ravel()
  assert p.min() == 1e-3  # digits has pixels that are never on: the clip matters
  np.testing.assert_allclose(bias, np.log(p / (1 - p)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    ({"model.init": "xavier"}, "model.init='xavier' is not known; allowed values: default, glorot"),
    ({"model.output_bias": "mean"}, "model.output_bias='mean' is not known"),
    ({"model.output_bias": "data_mean", "likelihood.name": "gaussian"},
     "needs likelihood.name='bernoulli'"),
    ({"model.output_bias": "data_mean", "model.name": "conv"}, "model.name in: mlp, two_layer"),
])
def test_unknown_or_unfit_init_choices_are_one_line_errors(overrides, message):
  with pytest.raises(ConfigError, match=re.escape(message)) as e:
    check_config(tiny_config(**overrides))
  assert "\n" not in str(e.value)
