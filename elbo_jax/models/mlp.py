"""Fully connected encoder and decoder (Kingma & Welling 2013; Burda et al. 2015; VampPrior).

The Burda et al. MNIST model is MLPEncoder/MLPDecoder with hidden=(200, 200), activation="tanh"
and a 50-dimensional diagonal Gaussian posterior. The VampPrior networks (Tomczak & Welling 2018)
are hidden=(300, 300), gated=True.

`dtype` is the compute dtype of the matmuls and activations (`accelerator.compute_dtype`); the
parameters stay float32 whatever it is, and the decoder returns float32 likelihood parameters.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from elbo_jax.models.activations import ACTIVATIONS


class MLP(nn.Module):
  """A stack of dense layers, each followed by the activation or by a gate.

  x [..., F] -> [..., hidden[-1]] (x unchanged when `hidden` is empty).

  Attributes:
    hidden: units per layer.
    activation: a name in `ACTIVATIONS`.
    gated: Dauphin et al. (2017) gating, h = Dense(x) * sigmoid(Dense'(x)). The gate is the
      nonlinearity, so `activation` is not applied (as in the VampPrior's GatedDense).
    dtype: compute dtype; the output is in it.
  """

  hidden: tuple = (200, 200)
  activation: str = "tanh"
  gated: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS.get(self.activation)
    for units in self.hidden:
      if self.gated:
        # One Dense of twice the width computes both branches in a single matmul.
        value, gate = jax.numpy.split(nn.Dense(2 * units, dtype=self.dtype)(x), 2, axis=-1)
        x = value * nn.sigmoid(gate)
      else:
        x = act(nn.Dense(units, dtype=self.dtype)(x))
    return x


class MLPEncoder(nn.Module):
  """x [..., *data_shape] -> features h [..., hidden[-1]]; the data dimensions are flattened.

  Attributes:
    data_shape: the shape of one example; the dimensions before it are batch dimensions.
    hidden, activation, gated, dtype: see `MLP`; the features are in `dtype`.
  """

  data_shape: tuple
  hidden: tuple = (200, 200)
  activation: str = "tanh"
  gated: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n = len(self.data_shape)
    if tuple(x.shape[x.ndim - n:]) != tuple(self.data_shape):
      raise ValueError(f"MLPEncoder expects [..., {self.data_shape}], got {x.shape}")
    x = x.reshape(x.shape[:x.ndim - n] + (math.prod(self.data_shape),))
    return MLP(self.hidden, self.activation, self.gated, self.dtype)(x)


class MLPDecoder(nn.Module):
  """z [..., D] -> raw likelihood parameters [..., *out_shape], float32 (the last layer is linear).

  Attributes:
    out_shape: the likelihood's `param_shape`.
    hidden, activation, gated, dtype: see `MLP`.
  """

  output_layer = "Dense_0"  # Flax's name for the final layer, whose bias `model.output_bias` sets

  out_shape: tuple
  hidden: tuple = (200, 200)
  activation: str = "tanh"
  gated: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    h = MLP(self.hidden, self.activation, self.gated, self.dtype)(z)
    out = nn.Dense(math.prod(self.out_shape), dtype=self.dtype)(h)
    # Likelihoods sum hundreds of terms per example: they are evaluated in float32.
    return out.astype(jnp.float32).reshape(z.shape[:-1] + tuple(self.out_shape))
