"""A convolutional VAE on MNIST with a continuous Bernoulli likelihood on [0, 1] grey levels
(Loaiza-Ganem & Cunningham 2019)."""

from elbo_jax.config import default_config, lock


def get_config(arg=None):
  del arg
  c = default_config()
  c.data.name = "mnist"
  c.data.preprocessing = "float"
  c.model.name = "conv"
  c.model.channels = (32, 64)
  c.model.hidden = (256,)
  c.model.activation = "relu"
  c.model.latent_dim = 32
  c.likelihood.name = "continuous_bernoulli"
  c.training.num_epochs = 20
  c.training.steps_per_call = 100
  return lock(c)
