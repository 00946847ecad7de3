"""A VAE on procedural dSprites-like images (`elbo_jax.data.sprites`), whose five latent factors
(shape, scale, orientation, x, y) are known: results.json adds MIG, SAP, modularity and DCI of
the posterior means, and the KL term taken apart (total correlation, ...). Offline, generated data.
  python -m experiments.train --config=configs/sprites_vae.py --workdir=runs/sprites
  python -m experiments.train --config=configs/sprites_vae.py --workdir=runs/sprites_b4 \
      --config.objective.beta=4
The network and latent size follow the disentanglement papers' MLP (Higgins et al. 2017; Chen
et al. 2018: 1200-1200 units, 10 latents) at 32 x 32 pixels instead of 64 x 64.
`get_config('smoke')`: 16 x 16 pixels, 2,000 images, seconds on a CPU.
"""

from elbo_jax.config import default_config, lock


def get_config(arg=None):
  c = default_config()
  c.data.name = "sprites"
  c.data.resolution = 32
  c.data.num_examples = 40000
  c.model.hidden = (1200, 1200)
  c.model.latent_dim = 10
  c.training.batch_size = 64
  c.training.num_epochs = 20
  c.training.steps_per_call = 25
  c.eval.num_samples = 1000
  if arg == "smoke":
    c.data.resolution = 16
    c.data.num_examples = 2000
    c.model.hidden = (64,)
    c.model.latent_dim = 4
    c.training.num_epochs = 2
    c.training.progress = False
    c.eval.num_samples = 50
    c.eval.chunk_size = 50
    c.eval.num_test = 100
    c.eval.elbo_samples = 2
    c.eval.dci_importance = "logistic"
    c.eval.factor_vae_points = 100
    c.eval.beta_vae_points = 100
  elif arg is not None:
    raise ValueError(f"configs/sprites_vae.py: unknown variant {arg!r}; allowed: smoke")
  return lock(c)
