r"""Priors p(z) at one model (Tomczak & Welling 2018, VAE with a VampPrior): the standard normal, a
learned diagonal Gaussian, a mixture of learned Gaussians and the VampPrior (a mixture of the
encoder's posteriors at learned pseudo-inputs), with the paper's networks (configs/mnist_vamp.py:
40 latents, two gated dense layers of 300 units, 500 pseudo-inputs, lr 5e-4, batch 100, KL
warm-up). The mixture has as many components as the VampPrior has pseudo-inputs (500), so the two
differ only in how the components are tied. Test NLL with K = 5000 importance samples, test ELBO,
KL and active units; the `prior_samples` figure shows decoded samples from each prior beside the
VampPrior's learned pseudo-inputs.

  python -m experiments.ablate --config=configs/ablations/priors.py:short \
      --workdir=runs/priors --config.base.data.path=../shared/data/mnist.pkl.gz

Variants:
  `paper`: the authors' protocol (configs/mnist_vamp.py:paper, whose docstring lists what was
    checked in their code and the details that still differ): Larochelle & Murray's fixed
    binarisation (`binarized_mnist`: --config.base.data.data_dir=<TFDS data> or
    --config.base.data.path=<directory of the .amat files>), normalised-gradient Adam, up to
    2,000 epochs with early stopping (patience 50) on the validation bound, the best-validation
    parameters tested, K = 5000 on all 10,000 test images. The only variant that follows the paper.
  `full` (the default): NOT the paper's protocol: mnist_vamp's default, our own static
    binarisation of MNIST, plain Adam, a fixed 200 epochs with the warm-up over 100, the last
    parameters tested, K = 5000 on all 10,000 test images. (Named `paper` before.)
  `short`: `full` cut to 12 epochs with the warm-up over the first 6, one seed, K = 5000 on the
    first 300 test images (the runs in docs/ablations.md).
  `smoke`: digits, one seed, seconds; the tests.
"""

from configs import digits_vae, mnist_vamp
from elbo_jax import data, sweep

PRIORS = ("standard_normal", "learned_gaussian", "mog", "vamp")


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "priors"
  c.description = ("Priors p(z) at one model and schedule (Tomczak & Welling 2018): standard "
                   "normal, learned Gaussian, mixture of Gaussians, VampPrior; test NLL with "
                   "K = {K}.")
  c.axes = (sweep.axis("prior", [(name, {"prior.name": name}) for name in PRIORS]),)
  c.metrics = ("nll", "elbo", "kl", "active_units")
  c.references = {"vamp": {"nll": 85.57}}
  c.reference_source = (
      "Tomczak & Welling 2018 (Larochelle & Murray's fixed binarisation of MNIST, one stochastic "
      "layer, 40 latents, gated 300-unit layers, 500 pseudo-inputs, normalised-gradient Adam, up "
      "to 2,000 epochs with early stopping, best-validation parameters; K = 5000): VampPrior "
      "85.57 nats. "
      "Their standard-normal baseline, quoted from memory as 88.56, is unconfirmed and so not "
      "used as a reference.")
  # The paper's data: Larochelle & Murray's fixed binarisation, not a static draw of our own.
  c.reference_setup = {"data": {"binarization": data.FIXED_BINARIZATION},
                       "test": {"num_importance_samples": 5000}}
  c.figures = ("prior_samples", "metric_bars")
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
    with c.base.unlocked():
      c.base.data.preprocessing = "static_binarization"
      c.base.model.gated = True
      c.base.prior.num_pseudo_inputs = 20
      c.base.objective.warmup_epochs = 1
  elif arg in ("short", "full", None):
    c.base_config = "configs/mnist_vamp.py"
    c.base = mnist_vamp.get_config()
    if arg == "short":
      with c.base.unlocked():
        c.base.training.num_epochs = 12
        c.base.objective.warmup_epochs = 6
        c.base.eval.num_test = 300
  elif arg == "paper":
    c.base_config = "configs/mnist_vamp.py:paper"
    c.base = mnist_vamp.get_config("paper")
  else:
    raise ValueError(f"configs/ablations/priors.py: unknown variant {arg!r}; "
                     "allowed: smoke, short, full, paper")
  with c.base.unlocked():
    c.base.prior.num_components = c.base.prior.num_pseudo_inputs
  return c
