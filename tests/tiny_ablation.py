"""A two-cell, two-seed ablation on the tiny digits config, for subprocess tests of the runner."""

from elbo_jax import sweep
from tests.conftest import tiny_config


def get_config(arg=None):
  del arg
  c = sweep.default_config()
  c.name = "tiny"
  c.base = tiny_config()
  c.axes = (sweep.grid("objective.beta", (0.5, 1.0)),)
  c.seeds = (0, 1)
  c.metrics = ("elbo", "rate", "distortion")
  c.figures = ()
  return c
