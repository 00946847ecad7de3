"""Network families selected by `model.name`, and how the trainer builds them.

Every entry of `MODELS` is a builder with one signature:

  build(model_config, data_shape, likelihood, dtype=jnp.float32)

  model_config: the `model` config section (a dict or ml_collections.ConfigDict); only the fields
    listed below are read, each optional (absent -> the module's default); lists become tuples.
  data_shape: the shape of one example, e.g. (28, 28, 1).
  likelihood: the (unbound) likelihood module; its `param_shape` sizes the decoder output.
  dtype: the networks' compute dtype (`accelerator.compute_dtype`); parameters stay float32 and the
    likelihood and posterior parameters they output are float32.

Families in `ENCODER_DECODER_MODELS` return (encoder, decoder), which the trainer wraps as
`vae.VAE(encoder, decoder, likelihood, prior, posterior)` with the configured prior and posterior.
The other families return a complete protocol model with its own prior and posterior; the trainer
uses it as the model directly.

  "mlp"        mlp.MLPEncoder / MLPDecoder; reads hidden=(200, 200), activation="tanh",
               gated=False.
  "conv"       conv.ConvEncoder / ConvDecoder; reads channels=(32, 64), hidden=(256,),
               activation="relu" (the kernel side is ConvEncoder's default, 4).
  "two_layer"  hierarchical.TwoLayerVAE; reads hidden1=(200, 200), latent1=100,
               hidden2=(100, 100), latent2=50, activation="tanh".

Invalid values raise a one-line `ConfigError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from elbo_jax.models.activations import ACTIVATIONS
from elbo_jax.models.conv import ConvDecoder, ConvEncoder
from elbo_jax.models.hierarchical import TwoLayerVAE
from elbo_jax.models.mlp import MLP, MLPDecoder, MLPEncoder
from elbo_jax.registry import ConfigError, Registry, positive_int

__all__ = [
    "ACTIVATIONS", "ENCODER_DECODER_MODELS", "MLP", "MODELS", "ConvDecoder", "ConvEncoder",
    "MLPDecoder", "MLPEncoder", "TwoLayerVAE",
]

MODELS: Registry[Callable[..., Any]] = Registry("model.name")
ENCODER_DECODER_MODELS = frozenset({"mlp", "conv"})


def _units(field: str, value: Any) -> tuple:
  if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
    raise ConfigError(f"{field}={value!r} must be a list of positive integers")
  return tuple(positive_int(field, v) for v in value)


def _nonempty_units(field: str, value: Any) -> tuple:
  units = _units(field, value)
  if not units:
    raise ConfigError(f"{field}={value!r} must not be empty")
  return units


def _flag(field: str, value: Any) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f"{field}={value!r} must be true or false")
  return value


def _activation(field: str, value: Any) -> str:
  ACTIVATIONS.get(value)  # Raises the ConfigError for unknown names.
  return value


def _read(config, validators: dict) -> dict:
  """Validated keyword arguments for the fields of `validators` that `config` sets."""
  return {name: check(f"model.{name}", config[name])
          for name, check in validators.items() if name in config}


@MODELS.register("mlp")
def build_mlp(model_config, data_shape: tuple, likelihood, dtype=jnp.float32):
  """Returns (MLPEncoder, MLPDecoder)."""
  kwargs = _read(model_config, {"hidden": _units, "activation": _activation, "gated": _flag})
  kwargs["dtype"] = dtype
  return (MLPEncoder(data_shape=tuple(data_shape), **kwargs),
          MLPDecoder(out_shape=tuple(likelihood.param_shape), **kwargs))


@MODELS.register("conv")
def build_conv(model_config, data_shape: tuple, likelihood, dtype=jnp.float32):
  """Returns (ConvEncoder, ConvDecoder); needs image data [H, W, C]."""
  if len(data_shape) != 3 or len(likelihood.param_shape) < 3:
    raise ConfigError(
        f"model.name='conv' needs image data [H, W, C] and likelihood parameters [H, W, P]; "
        f"got data shape {tuple(data_shape)}, parameter shape {tuple(likelihood.param_shape)}"
    )
  kwargs = _read(model_config,
                 {"channels": _nonempty_units, "hidden": _units, "activation": _activation})
  kwargs["dtype"] = dtype
  return (ConvEncoder(data_shape=tuple(data_shape), **kwargs),
          ConvDecoder(out_shape=tuple(likelihood.param_shape), **kwargs))


@MODELS.register("two_layer")
def build_two_layer(model_config, data_shape: tuple, likelihood, dtype=jnp.float32):
  """Returns a complete TwoLayerVAE (its own prior and posterior)."""
  kwargs = _read(model_config, {
      "hidden1": _units, "latent1": positive_int, "hidden2": _units, "latent2": positive_int,
      "activation": _activation,
  })
  return TwoLayerVAE(likelihood=likelihood, data_shape=tuple(data_shape), dtype=dtype, **kwargs)
