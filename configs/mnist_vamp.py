"""Tomczak & Welling 2018's VAE with a VampPrior on statically binarised MNIST: 40 latents, two
gated dense layers of 300 units, 500 pseudo-inputs, Adam lr 5e-4, batch 100, KL warm-up over 100
epochs. Paper: 85.57 nats (VampPrior); `--config.prior.name=standard_normal` for the baseline."""

from elbo_jax.config import default_config, lock


def get_config(arg=None):
  del arg
  c = default_config()
  c.data.name = "mnist"
  c.data.preprocessing = "static_binarization"
  c.data.split = "standard"
  c.model.hidden = (300, 300)
  c.model.gated = True
  c.model.activation = "relu"
  c.model.latent_dim = 40
  c.prior.name = "vamp"
  c.prior.num_pseudo_inputs = 500
  c.optimizer.learning_rate = 5e-4
  c.objective.warmup_epochs = 100
  c.training.num_epochs = 200
  c.training.steps_per_call = 250
  c.training.checkpoint_every = 5000
  return lock(c)
