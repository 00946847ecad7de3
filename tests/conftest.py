"""Shared test helpers: a tiny config on the offline digits data that trains in seconds, and the
command line that trains it in a subprocess."""

import os
import sys

from elbo_jax import io
from elbo_jax.config import default_config
from elbo_jax.sweep import apply_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
  """digits, a 32-unit MLP with 4 latents; `overrides` maps 'section.field' (or 'seed') to
  values."""
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


def train_command(workdir, epochs, *flags):
  """`python -m experiments.train` of tests/tiny_config.py (run it with cwd=REPO)."""
  return [sys.executable, "-m", "experiments.train", "--config=tests/tiny_config.py",
          f"--workdir={workdir}", f"--config.training.num_epochs={epochs}", *flags]


def train_metrics(workdir):
  """workdir/metrics.jsonl without the wall-clock speed, which differs between runs."""
  records = io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  return [{k: v for k, v in r.items() if k != "train/steps_per_sec"} for r in records]
