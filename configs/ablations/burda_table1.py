r"""Burda, Grosse & Salakhutdinov 2015 (IWAE), Table 1: VAE and IWAE trained with k = 1, 5, 50
samples, one and two stochastic layers, on dynamically binarised MNIST (59,600 / 400 / 10,000),
plus IWAE k=50 with the doubly-reparameterised gradient (DReG, Tucker et al. 2019). Test
negative log-likelihood with K = 5000 importance samples, test ELBO and active units.

The VAE columns train the k-sample ELBO with a Monte Carlo KL, (1/k) sum_i log w_i, as the paper
does. Cells that differ only in seed train as one vectorised program.

  python -m experiments.ablate --config=configs/ablations/burda_table1.py:short \
      --workdir=runs/burda --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, seconds; the tests; the VAE k=5, IWAE k=5 and DReG columns), `short`
(one-layer row, 2 seeds, 10 epochs, K = 5000 on the first 1,000 test images), default (also
named `paper`): the protocol of the paper's text, `configs/mnist_vae.py:paper` (Glorot
initialisation, Adam beta1 = 0.9, beta2 = 0.999, eps = 1e-4, batch 20, 3,280 epochs), with the whole
test set; weeks on a CPU. That config's docstring says where the authors' code differs (beta1 =
0.99, the output bias at the logit of the training mean: `--config.base.optimizer.b1=0.99
--config.base.model.output_bias=data_mean`).
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep

# Negative log-likelihood in nats, Burda et al. 2015, Table 1 (../shared/PAPER_NUMBERS.md).
PAPER_NLL = {
    "1-vae_k1": 86.76, "1-vae_k5": 86.47, "1-vae_k50": 86.35, "1-iwae_k5": 85.54,
    "1-iwae_k50": 84.78,
    "2-vae_k1": 85.33, "2-vae_k5": 85.01, "2-vae_k50": 84.78, "2-iwae_k5": 83.89,
    "2-iwae_k50": 82.90,
}
OBJECTIVES = sweep.axis("objective", [
    ("vae_k1", {"objective.name": "elbo", "objective.num_samples": 1, "objective.kl": "mc"}),
    ("vae_k5", {"objective.name": "elbo", "objective.num_samples": 5, "objective.kl": "mc"}),
    ("vae_k50", {"objective.name": "elbo", "objective.num_samples": 50, "objective.kl": "mc"}),
    ("iwae_k5", {"objective.name": "iwae", "objective.num_samples": 5}),
    ("iwae_k50", {"objective.name": "iwae", "objective.num_samples": 50}),
    ("iwae_k50_dreg", {"objective.name": "iwae", "objective.num_samples": 50,
                       "objective.estimator": "dreg"}),
])


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "burda_table1"
  c.description = ("Burda et al. 2015, Table 1: importance-weighted training (IWAE) against the "
                   "k-sample ELBO (VAE); test NLL with K = {K}.")
  c.metrics = ("nll", "elbo", "active_units")
  c.references = {cell: {"nll": nll} for cell, nll in PAPER_NLL.items()}
  c.reference_source = ("Burda, Grosse & Salakhutdinov 2015, Table 1 (dynamically binarised "
                        "MNIST, 3,280 epochs at batch 20, K = 5000 on all 10,000 test images).")
  # Shown beside runs on the paper's data and estimator; the header states the schedule and how
  # many test images the runs evaluated.
  c.reference_setup = {"data": {"name": "mnist", "preprocessing": "dynamic_binarization",
                                "split": "burda"},
                       "test": {"num_importance_samples": 5000}}
  c.figures = ("metric_bars",)
  two_layers = {"model.name": "two_layer", "model.latent_dim": 100}
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
    two_layers = {"model.name": "two_layer"}  # the smoke base's small z1 and z2
    c.seeds = (0, 1)
  elif arg == "short":
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    with c.base.unlocked():
      c.base.training.num_epochs = 10
      c.base.eval.num_test = 1000
    c.seeds = (0, 1)
  elif arg in (None, "paper"):
    c.base_config = "configs/mnist_vae.py:paper"
    c.base = mnist_vae.get_config("paper")
  else:
    raise ValueError(f"configs/ablations/burda_table1.py: unknown variant {arg!r}; "
                     "allowed: smoke, short, paper")
  layers = [("1", {})] if arg == "short" else [("1", {}), ("2", two_layers)]
  objectives = OBJECTIVES
  if arg == "smoke":  # one column of each kind: every distinct program costs seconds to compile
    name, values = OBJECTIVES
    objectives = (name, tuple(v for v in values if v[0] in ("vae_k5", "iwae_k5", "iwae_k50_dreg")))
  c.axes = (sweep.axis("layers", layers), objectives)
  return c
