r"""Tighter variational bounds are not necessarily better (Rainforth et al. 2018; Tucker et al.
2019): Burda et al.'s one-layer MLP VAE (784-200-200-50 tanh, Bernoulli, N(0, I) prior) trained on
dynamically binarised MNIST with the same budget of 64 samples of z per example by the ELBO
(S = 64, Monte Carlo KL, i.e. MIWAE(64, 1)), IWAE (K = 64), IWAE with the doubly-reparameterised
gradient (DReG), MIWAE(M = 8, K = 8), CIWAE(beta = 0.5, K = 64) and PIWAE(M = 8, K = 8). The table
gives the test log-likelihood (K = 5000), the test ELBO and active units.

The `gradient_snr` figure explains the papers' finding at the trained IWAE model: IWAE's gradient
SNR (|E g| / std g per parameter over draws on a fixed minibatch) against K in {1, 3, 10, 30, 100,
300, 1000} for the reparameterised, STL and DReG estimators, inference and generative networks
apart. Expected: the inference network's SNR falls like 1/sqrt(K) with the reparameterised
gradient and not with DReG; the generative network's rises like sqrt(K). Sizes are the `snr`
fields (10 test images, 200 draws: about 2 minutes); rows in snr.csv.

  python -m experiments.ablate --config=configs/ablations/bounds.py:short \
      --workdir=runs/bounds --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, 4 samples per example, one seed, an SNR sweep over K in {1, 30} with
10 draws; the tests), `short` (MNIST, 3 epochs, one seed, K = 5000 on the first 1,000 test
images), `full` (the default: configs/mnist_vae.py's 450-epoch schedule, K = 5000 on all 10,000;
about 37 hours of training on 2 CPU cores; our protocol, not the papers' own schedules; it was
called `paper` before 0.2.0).
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep


def objectives(m: int, k: int) -> tuple:
  """The objective axis at a budget of m * k samples of z per example (M groups of K)."""
  n = m * k
  return sweep.axis("objective", [
      ("vae", {"objective.name": "elbo", "objective.num_samples": n, "objective.kl": "mc"}),
      ("iwae", {"objective.name": "iwae", "objective.num_samples": n}),
      ("iwae_dreg", {"objective.name": "iwae", "objective.num_samples": n,
                     "objective.estimator": "dreg"}),
      ("miwae", {"objective.name": "miwae", "objective.num_averages": m,
                 "objective.num_samples": k}),
      ("ciwae", {"objective.name": "ciwae", "objective.num_samples": n,
                 "objective.ciwae_beta": 0.5}),
      ("piwae", {"objective.name": "piwae", "objective.num_averages": m,
                 "objective.num_samples": k}),
  ])


NOTES = """\
No published column: Rainforth et al. 2018 and Tucker et al. 2019 report MNIST numbers for their
own architectures and schedules, which we have not checked against this setup, so none is quoted.
Every cell draws the same number of samples of z per training example; the test ELBO is the
ordinary ELBO whatever bound trained the model, and the log-likelihood the same K-sample estimate
for all. gradient_snr.png (rows in snr.csv): IWAE's gradient SNR at the trained `iwae` model.
"""


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "bounds"
  c.description = ("ELBO, IWAE, IWAE-DReG, MIWAE, CIWAE and PIWAE trained with the same number "
                   "of samples per example; test NLL with K = {K} and IWAE's gradient SNR.")
  c.metrics = ("nll", "elbo", "active_units")
  c.notes = NOTES
  c.figures = ("metric_bars", "gradient_snr")
  c.snr.cell = "iwae"
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
    c.axes = (objectives(2, 2),)
    c.snr.batch_size = 8
    c.snr.num_draws = 10
    c.snr.num_samples = (1, 30)  # K = 30: enough weights for a k-hat
  elif arg in ("short", "full", None):
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    c.axes = (objectives(8, 8),)
    if arg == "short":
      with c.base.unlocked():
        c.base.training.num_epochs = 3
        c.base.eval.num_test = 1000
  else:
    raise sweep.variant_error("configs/ablations/bounds.py", arg, ("smoke", "short", "full"))
  return c
