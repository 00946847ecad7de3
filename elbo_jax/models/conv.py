"""Convolutional encoder and decoder for images [H, W, C] (e.g. MNIST 28x28x1, CIFAR 32x32x3).

Each of the L = len(channels) convolutions halves the resolution (stride 2, SAME padding). The
decoder starts from ceil(H / 2^L) x ceil(W / 2^L), doubles L times and crops to H x W, so any
image size works: 28 -> 14 -> 7 -> 14 -> 28; 8x8 digits -> 4 -> 2 -> 4 -> 8; odd sizes are cropped.
Leading batch dimensions are flattened into one axis for the convolutions and restored after.
`dtype` is the compute dtype (`accelerator.compute_dtype`); parameters stay float32 and the decoder
returns float32 likelihood parameters.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from elbo_jax.models.activations import ACTIVATIONS
from elbo_jax.models.mlp import MLP


class ConvEncoder(nn.Module):
  """x [..., H, W, C] -> features h [..., hidden[-1]] (or the flattened conv maps if hidden=()).

  Attributes:
    data_shape: (H, W, C) of one example.
    channels: output channels of the stride-2 convolutions, in order.
    hidden: dense layers after the convolutions.
    activation: a name in `ACTIVATIONS`.
    kernel_size: square kernel side; 4 is divisible by the stride, which avoids checkerboarding
      in the mirrored transposed convolutions.
    dtype: compute dtype; the features are in it.
  """

  data_shape: tuple
  channels: tuple = (32, 64)
  hidden: tuple = (256,)
  activation: str = "relu"
  kernel_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if len(self.data_shape) != 3 or tuple(x.shape[x.ndim - 3:]) != tuple(self.data_shape):
      raise ValueError(f"ConvEncoder expects [..., H, W, C] = [..., {self.data_shape}], got "
                       f"{x.shape}")
    act = ACTIVATIONS.get(self.activation)
    lead = x.shape[:-3]
    y = x.reshape((-1,) + tuple(self.data_shape))
    for c in self.channels:
      y = act(nn.Conv(c, (self.kernel_size,) * 2, strides=(2, 2), padding="SAME",
                      dtype=self.dtype)(y))
    y = MLP(self.hidden, self.activation, dtype=self.dtype)(y.reshape(y.shape[0], -1))
    return y.reshape(lead + y.shape[-1:])


class ConvDecoder(nn.Module):
  """z [..., D] -> raw likelihood parameters [..., *out_shape], float32; out_shape = (H, W, *P).

  The trailing dimensions P (e.g. (C,) for Bernoulli, (C * 30,) for a discretized logistic
  mixture) are produced as prod(P) channels by a final linear 3x3 convolution.

  Attributes:
    out_shape: the likelihood's `param_shape`, at least (H, W, P).
    channels, hidden, activation, kernel_size, dtype: as in `ConvEncoder`; the decoder mirrors
      them.
  """

  out_shape: tuple
  channels: tuple = (32, 64)
  hidden: tuple = (256,)
  activation: str = "relu"
  kernel_size: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    if len(self.out_shape) < 3:
      raise ValueError(f"ConvDecoder needs out_shape (H, W, P...), got {self.out_shape}")
    act = ACTIVATIONS.get(self.activation)
    height, width = self.out_shape[:2]
    factor = 2 ** len(self.channels)
    base_h, base_w = -(-height // factor), -(-width // factor)
    lead = z.shape[:-1]
    y = MLP(self.hidden, self.activation, dtype=self.dtype)(z.reshape(-1, z.shape[-1]))
    y = act(nn.Dense(base_h * base_w * self.channels[-1], dtype=self.dtype)(y))
    y = y.reshape(-1, base_h, base_w, self.channels[-1])
    for c in reversed(self.channels):
      y = act(nn.ConvTranspose(c, (self.kernel_size,) * 2, strides=(2, 2), padding="SAME",
                               dtype=self.dtype)(y))
    y = nn.Conv(math.prod(self.out_shape[2:]), (3, 3), padding="SAME",
                dtype=self.dtype)(y)[:, :height, :width]
    return y.astype(jnp.float32).reshape(lead + tuple(self.out_shape))
