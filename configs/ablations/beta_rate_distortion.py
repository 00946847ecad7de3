r"""beta on the rate-distortion plane (Higgins et al. 2017; Alemi et al. 2018, "Fixing a Broken
ELBO").

Burda et al.'s one-layer MLP VAE (784-200-200-50 tanh, Bernoulli, N(0, I) prior) trained on the
beta-ELBO E_q log p(x|z) - beta KL(q(z|x) || p(z)) for beta in {0.1, 0.25, 0.5, 1, 2, 4, 8} and
three seeds: 21 runs that differ only in beta and seed, so they train as ONE vectorised program.
On the test set, rate = E_x KL(q(z|x) || p(z)) and distortion = -E_x E_q log p(x|z); models with
the same ELBO lie on one line rate + distortion = const, and beta slides along the frontier: the
KL term as a regulariser on how much the latents may carry, measured.

  python -m experiments.ablate --config=configs/ablations/beta_rate_distortion.py:short \
      --workdir=runs/beta_rd --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, seconds; the tests), `short` (MNIST, 30 epochs, under an hour on a
2-core CPU), `full` (the default): the base's 450-epoch schedule (configs/mnist_vae.py).
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep

BETAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "beta_rate_distortion"
  c.description = ("The beta-ELBO's KL weight trades rate against distortion (Alemi et al. 2018); "
                   "beta = 1 is the ELBO.")
  c.axes = (sweep.grid("objective.beta", BETAS),)
  c.seeds = (0, 1, 2)
  c.vectorize = "all"
  c.metrics = ("rate", "distortion", "elbo", "active_units", "log_likelihood")
  c.figures = ("rate_distortion", "metric_bars")
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
  elif arg in ("short", "full", None):
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    if arg == "short":
      with c.base.unlocked():
        c.base.training.num_epochs = 30
        c.base.eval.num_samples = 1000
        c.base.eval.num_test = 1000
  else:
    raise sweep.variant_error("configs/ablations/beta_rate_distortion.py", arg,
                              ("smoke", "short", "full"))
  return c
