"""Fully connected encoder and decoder (Kingma & Welling 2013; Burda et al. 2015; VampPrior).

The Burda et al. MNIST model is MLPEncoder/MLPDecoder with hidden=(200, 200), activation="tanh"
and a 50-dimensional diagonal Gaussian posterior. The VampPrior networks (Tomczak & Welling 2018)
are hidden=(300, 300), gated=True.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from elbo_jax.models.activations import ACTIVATIONS


class MLP(nn.Module):
  """A stack of dense layers, each followed by the activation or by a gate.

  x [..., F] -> [..., hidden[-1]] (x unchanged when `hidden` is empty).

  Attributes:
    hidden: units per layer.
    activation: a name in `ACTIVATIONS`.
    gated: Dauphin et al. (2017) gating, h = Dense(x) * sigmoid(Dense'(x)). The gate is the
      nonlinearity, so `activation` is not applied (as in the VampPrior's GatedDense).
  """

  hidden: tuple = (200, 200)
  activation: str = "tanh"
  gated: bool = False

  @nn.compact
  def __call__(self, x):
    act = ACTIVATIONS.get(self.activation)
    for units in self.hidden:
      if self.gated:
        # One Dense of twice the width computes both branches in a single matmul.
        value, gate = jax.numpy.split(nn.Dense(2 * units)(x), 2, axis=-1)
        x = value * nn.sigmoid(gate)
      else:
        x = act(nn.Dense(units)(x))
    return x


class MLPEncoder(nn.Module):
  """x [..., *data_shape] -> features h [..., hidden[-1]]; the data dimensions are flattened.

  Attributes:
    data_shape: the shape of one example; the dimensions before it are batch dimensions.
    hidden, activation, gated: see `MLP`.
  """

  data_shape: tuple
  hidden: tuple = (200, 200)
  activation: str = "tanh"
  gated: bool = False

  @nn.compact
  def __call__(self, x):
    n = len(self.data_shape)
    if tuple(x.shape[x.ndim - n:]) != tuple(self.data_shape):
      raise ValueError(f"MLPEncoder expects [..., {self.data_shape}], got {x.shape}")
    x = x.reshape(x.shape[:x.ndim - n] + (math.prod(self.data_shape),))
    return MLP(self.hidden, self.activation, self.gated)(x)


class MLPDecoder(nn.Module):
  """z [..., D] -> raw likelihood parameters [..., *out_shape] (the last layer is linear).

  Attributes:
    out_shape: the likelihood's `param_shape`.
    hidden, activation, gated: see `MLP`.
  """

  out_shape: tuple
  hidden: tuple = (200, 200)
  activation: str = "tanh"
  gated: bool = False

  @nn.compact
  def __call__(self, z):
    h = MLP(self.hidden, self.activation, self.gated)(z)
    out = nn.Dense(math.prod(self.out_shape))(h)
    return out.reshape(z.shape[:-1] + tuple(self.out_shape))
