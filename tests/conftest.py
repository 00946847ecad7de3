"""Shared test helpers: a tiny config on the offline digits data that trains in seconds."""

import pytest

from elbo_jax.config import default_config
from elbo_jax.sweep import apply_overrides


def tiny_config(**overrides):
  """digits, a 32-unit MLP with 4 latents; `overrides` maps 'section.field' (or 'seed') to values."""
  c = default_config()
  c.model.hidden = (32,)
  c.model.latent_dim = 4
  c.training.batch_size = 100
  c.training.num_epochs = 3
  c.training.steps_per_call = 5
  c.training.checkpoint_every = 10
  c.training.progress = False
  c.eval.num_samples = 20
  c.eval.chunk_size = 10
  c.eval.num_test = 30
  c.eval.elbo_samples = 2
  return apply_overrides(c, overrides, "tiny_config")


@pytest.fixture
def tiny():
  return tiny_config
