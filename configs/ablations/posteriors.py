r"""Posterior families q(z|x) and the inference gap: a diagonal Gaussian, a full-covariance
Gaussian, planar flows of 4 and 16 steps (Rezende & Mohamed 2015) and an inverse autoregressive
flow of 4 MADE steps (Kingma et al. 2016), each trained with the ELBO at the same decoder (Burda
et al.'s one-layer MLP, 784-200-200-50 tanh, Bernoulli, N(0, I) prior) on dynamically binarised
MNIST. The table gives the test log-likelihood (K = 5000), the test ELBO and their difference on
the same images, log p(x) - ELBO = E_x KL(q(z|x) || p(z|x)), which a richer q should shrink;
`metric_bars` draws each per family with the seeds as dots.

  python -m experiments.ablate --config=configs/ablations/posteriors.py:short \
      --workdir=runs/posteriors --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, one seed, seconds; the tests), `short` (MNIST, 12 epochs, 2 seeds
trained as one vectorised program per family, K = 5000 on the first 500 test images), `full`
(the default, our protocol: configs/mnist_vae.py's 450-epoch schedule, 3 seeds, K = 5000 on all
10,000; called `paper` before 0.2.0).
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep

POSTERIORS = sweep.axis("posterior", [
    ("diagonal_gaussian", {"posterior.name": "diagonal_gaussian"}),
    ("full_gaussian", {"posterior.name": "full_gaussian"}),
    ("planar_4", {"posterior.name": "planar_flow", "posterior.num_flows": 4}),
    ("planar_16", {"posterior.name": "planar_flow", "posterior.num_flows": 16}),
    ("iaf", {"posterior.name": "iaf", "posterior.num_flows": 4}),
])

NOTES = """\
The gap is log p(x) - ELBO on the same test images (those of the log-likelihood column), with
log p(x) the K-sample importance estimate and the ELBO averaged over `eval.elbo_samples` draws:
in expectation KL(q(z|x) || p(z|x)), read slightly low because the K-sample estimate itself sits
below log p(x). Each family trains its own decoder, which also adapts to q (Cremer et al. 2018),
so a smaller gap need not mean a better log p(x). The Gaussian rows train with the analytic KL,
the flows with a one-sample Monte Carlo KL. No published column: the papers use other models.
"""


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "posteriors"
  c.description = ("Posterior families at one decoder: diagonal and full Gaussians, planar "
                   "flows, IAF; test log p(x), ELBO and the gap between them.")
  c.axes = (POSTERIORS,)
  c.metrics = ("nll", "elbo", "gap", "active_units")
  c.notes = NOTES
  c.figures = ("metric_bars",)
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
  elif arg in ("short", "full", None):
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    c.seeds = (0, 1, 2)
    if arg == "short":
      with c.base.unlocked():
        c.base.training.num_epochs = 12
        c.base.eval.num_test = 500
      c.seeds = (0, 1)
  else:
    raise sweep.variant_error("configs/ablations/posteriors.py", arg, ("smoke", "short", "full"))
  return c
