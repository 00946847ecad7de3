"""Burda et al. 2015's IWAE (one stochastic layer) on dynamically binarised MNIST.

`get_config('k=50')` sets K (default 5); `--config.objective.estimator=dreg` picks the
doubly-reparameterised gradient (or stl). Paper: IWAE k=5 85.54, k=50 84.78 nats.
"""

from configs import mnist_vae


def get_config(arg=None):
  k = 5
  if arg:
    if not arg.startswith("k="):
      raise ValueError(f"configs/mnist_iwae.py: variant {arg!r} must look like k=50")
    k = int(arg[2:])
  c = mnist_vae.get_config()
  with c.unlocked():
    c.objective.name = "iwae"
    c.objective.num_samples = k
  return c
