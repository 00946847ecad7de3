"""Activation functions by config name (`model.activation`)."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax

from elbo_jax.registry import Registry

ACTIVATIONS: Registry[Callable[[jax.Array], jax.Array]] = Registry("model.activation")

for _name, _fn in (
    ("tanh", nn.tanh),
    ("relu", nn.relu),
    ("elu", nn.elu),
    ("softplus", nn.softplus),
    ("gelu", nn.gelu),
    ("swish", nn.swish),
):
  ACTIVATIONS.register(_name)(_fn)
