r"""Rainforth et al. 2018's Gaussian toy ("Tighter variational bounds are not necessarily better",
section 4; also Tucker et al. 2019's Figure 1): z ~ N(mu, I_20), x | z ~ N(z, I),
q(z | x) = N(A x + b, (2/3) I), 1024 data points from mu* ~ N(0, I), parameters at the optimum plus
N(0, 0.01^2) noise. Nothing is trained: the `gaussian_toy_snr` analysis measures the SNR of one
data point's IWAE gradient for the inference network (A, b) and the generative one (mu) against K
for the reparameterised, STL and DReG estimators, with the unbiased SNR estimate
(`snr.unbiased_snr_squared`), and fits log-log slopes (slopes.csv). Expected: reparam inference
-1/2, generative +1/2 (Rainforth et al.), DReG inference rising (Tucker et al.).

  python -m experiments.ablate --config=configs/ablations/gaussian_toy.py:short \
      --workdir=runs/gaussian_toy

Variants: `smoke` (K in {1, 10, 100}, reparam and DReG, 4 points, 400 draws: the tests, about a
minute on 2 busy cores), `short` (K in {1, 3, 10, 30, 100, 300, 1000}, 16 points, 2000 draws),
`full` (the default: as short with 64 points and 10,000 draws; hours on a CPU; ours, the papers
give no draw counts to follow).
"""

import ml_collections

from elbo_jax import sweep
from elbo_jax.config import default_config

NOTES = """\
The generative SNR is the same for the three estimators (they differ only in the inference
network's gradient). The K = 1 reparameterised and STL rows differ because STL drops the score
term even at K = 1.
"""


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "gaussian_toy"
  c.description = ("Rainforth et al. 2018's Gaussian toy: IWAE's gradient SNR against K for the "
                   "reparameterised, STL and DReG estimators, near the optimum.")
  c.analysis = "gaussian_toy_snr"
  c.base = default_config()  # unused but for experiments.ablate's accelerator set-up
  c.notes = NOTES
  c.toy = ml_collections.ConfigDict()
  c.toy.dim = 20
  c.toy.num_data = 1024
  c.toy.noise = 0.01          # std of the perturbation of every parameter at the optimum
  c.toy.seed_data = 1         # data, perturbation and draws
  c.toy.num_points = 16       # data points whose gradients are analysed (SNR averaged over them)
  c.toy.num_draws = 2000      # draws per (K, estimator), split in halves for the unbiased SNR
  c.toy.num_samples = (1, 3, 10, 30, 100, 300, 1000)
  c.toy.estimators = ("reparam", "stl", "dreg")
  c.toy.dtype = "float32"
  c.toy.max_in_flight = 2**17  # samples of z per vmapped chunk of draws
  if arg == "smoke":
    c.toy.num_points = 4
    c.toy.num_draws = 400
    c.toy.num_samples = (1, 10, 100)
    c.toy.estimators = ("reparam", "dreg")
  elif arg == "short":
    pass
  elif arg in ("full", None):
    c.toy.num_points = 64
    c.toy.num_draws = 10000
  else:
    raise sweep.variant_error("configs/ablations/gaussian_toy.py", arg, ("smoke", "short", "full"))
  return c
