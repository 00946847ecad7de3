"""Burda et al. 2015's two-stochastic-layer VAE: q 784-200-200-100(z1) then 100-100-50(z2),
p mirrored (z2 -> z1 -> x), dynamically binarised MNIST.

The variants are `mnist_vae`'s: the default (short) protocol, `paper` (the paper's text: Glorot
initialisation, Adam beta1 = 0.9, batch 20, 3,280 epochs; its docstring says where the authors'
code differs) and `runlocal`. Burda et al.'s Table 1, with the paper's protocol: VAE k=1 85.33 nats.
"""

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
