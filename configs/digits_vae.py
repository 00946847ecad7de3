"""The offline first-run default: a small MLP VAE on scikit-learn's bundled 8x8 digits.

Needs no network and no downloaded data; trains in about a minute on a laptop CPU.
  python -m experiments.train --config=configs/digits_vae.py --workdir=runs/digits
"""

from elbo_jax.config import default_config, lock


def get_config(arg=None):
  del arg
  c = default_config()
  c.data.name = "digits"
  c.model.hidden = (128, 128)
  c.model.latent_dim = 8
  c.training.batch_size = 100
  c.training.num_epochs = 100
  c.training.steps_per_call = 14
  c.eval.num_samples = 1000
  return lock(c)
