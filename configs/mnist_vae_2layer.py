"""Burda et al. 2015's two-stochastic-layer VAE: q 784-200-200-100(z1) then 100-100-50(z2),
p mirrored (z2 -> z1 -> x), dynamically binarised MNIST. Paper: VAE k=1 85.33 nats."""

from configs import mnist_vae


def get_config(arg=None):
  c = mnist_vae.get_config(arg)
  with c.unlocked():
    c.model.name = "two_layer"
    c.model.hidden = (200, 200)
    c.model.latent_dim = 100
    c.model.hidden2 = (100, 100)
    c.model.latent2_dim = 50
  return c
