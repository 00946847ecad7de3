r"""Posterior families q(z|x) and the inference gap: a diagonal Gaussian, a full-covariance
Gaussian, planar flows of 4 and 16 steps (Rezende & Mohamed 2015) and an inverse autoregressive
flow of 4 MADE steps (Kingma et al. 2016), each trained with the ELBO at the same decoder (Burda
et al.'s one-layer MLP, 784-200-200-50 tanh, Bernoulli, N(0, I) prior) on dynamically binarised
MNIST. The table gives the test log-likelihood (K = 5000), the test ELBO and their difference on
the same images, log p(x) - ELBO = E_x KL(q(z|x) || p(z|x)), which a richer q should shrink;
`metric_bars` draws each per family with the seeds as dots.

  python -m experiments.ablate --config=configs/ablations/posteriors.py:short \
      --workdir=runs/posteriors --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, one seed, seconds; the tests), `short` (MNIST, 40 epochs, 2 seeds
trained as one vectorised program per family, K = 5000 on the first 1,000 test images), `paper`
(the default: configs/mnist_vae.py's 450-epoch schedule, 3 seeds, K = 5000 on all 10,000).

Short wall time, estimated at about 47 minutes from timings on this 2-core CPU while another job
shared it (the Burda base model ran at 200-220 steps/s there, 322 on a quiet machine): training
epochs of 2.7 s (diagonal), 3.6 s (full), 4.2 s (16 planar steps), 5.1 s (IAF) and, not timed,
about 3 s (4 planar steps), twice that for two seeds, 70 epochs = 43 min; the K = 5000
log-likelihood of 1,000 images for ten runs, 0.013-0.015 s per image (0.031 s for the IAF),
3 min; compilation, data and figures about a minute.
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
  elif arg in ("short", "paper", None):
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    c.seeds = (0, 1, 2)
    if arg == "short":
      with c.base.unlocked():
        c.base.training.num_epochs = 12
        c.base.eval.num_test = 500
      c.seeds = (0, 1)
  else:
    raise ValueError(f"configs/ablations/posteriors.py: unknown variant {arg!r}; "
                     "allowed: smoke, short, paper")
  return c
