"""A two-cell ablation of the components in `tests/extension/components.py`, from outside the
library:

  python -m experiments.ablate --config=tests/extension/ablation.py --workdir=runs/renyi \
      --config.base.likelihood.epsilon=0.001
"""

from configs import digits_vae
from elbo_jax import sweep
from tests.extension import components  # noqa: F401  (registers the additions)


def get_config(arg=None):
  del arg
  c = sweep.default_config()
  c.name = "renyi_alpha"
  c.description = "The Rényi bound's alpha, 0 (IWAE) against 0.5, with a robust Bernoulli."
  c.base_config = "configs/digits_vae.py:smoke"
  c.base = digits_vae.get_config("smoke")
  with c.base.unlocked():
    c.base.likelihood.name = "robust_bernoulli"
    c.base.likelihood.epsilon = 0.01
    c.base.objective.name = "renyi"
    c.base.objective.alpha = 0.5
    c.base.objective.num_samples = 5  # with K = 1 every alpha gives log w
  c.axes = (sweep.grid("objective.alpha", (0.0, 0.5)),)
  c.vectorize = "all"  # the cells differ only in the traced alpha: one program
  c.metrics = ("elbo", "reconstruction_mse")
  c.figures = ("mse_by_cell",)
  return c
