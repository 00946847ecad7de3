"""The offline first-run default: a small MLP VAE on scikit-learn's bundled 8x8 digits.

Needs no network and no downloaded data; trains in about 15 seconds on a 2-core CPU.
  python -m experiments.train --config=configs/digits_vae.py --workdir=runs/digits
`get_config('smoke')` is a seconds-long version (2 epochs, a 32-unit network, K=50 on 100 test
images), the base of every ablation's `:smoke` variant.
"""

from elbo_jax.config import default_config, lock


def get_config(arg=None):
  c = default_config()
  c.data.name = "digits"
  c.model.hidden = (128, 128)
  c.model.latent_dim = 8
  c.training.batch_size = 100
  c.training.num_epochs = 100
  c.training.steps_per_call = 14
  c.eval.num_samples = 1000
  if arg == "smoke":
    c.model.hidden = (32,)
    c.model.latent_dim = 4
    c.model.hidden2 = (16,)
    c.model.latent2_dim = 2
    c.training.num_epochs = 2
    c.training.progress = False
    c.eval.num_samples = 50
    c.eval.chunk_size = 50
    c.eval.num_test = 100
    c.eval.elbo_samples = 2
  elif arg is not None:
    raise ValueError(f"configs/digits_vae.py: unknown variant {arg!r}; allowed: smoke")
  return lock(c)
