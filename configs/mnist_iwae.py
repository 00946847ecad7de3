"""Burda et al. 2015's IWAE (one stochastic layer) on dynamically binarised MNIST.

`get_config('k=50')` sets K (default 5) on `mnist_vae`'s default (short) protocol;
`get_config('paper')` or `get_config('paper,k=50')` on the protocol of the paper's text
(`mnist_vae.py:paper`, whose docstring says where the authors' code differs).
`--config.objective.estimator=dreg` picks the doubly-reparameterised gradient (or stl).
Burda et al.'s Table 1, with the paper's protocol: IWAE k=5 85.54, k=50 84.78 nats.
"""

from configs import mnist_vae


def get_config(arg=None):
  k, protocol = 5, None
  for part in (arg or "").split(","):
    if part == "paper":
      protocol = "paper"
    elif part.startswith("k=") and part[2:].isdigit():
      k = int(part[2:])
    elif part:
      raise ValueError(f"configs/mnist_iwae.py: variant {arg!r} must look like k=50, paper or "
                       "paper,k=50")
  c = mnist_vae.get_config(protocol)
  with c.unlocked():
    c.objective.name = "iwae"
    c.objective.num_samples = k
  return c
