r"""Likelihoods p(x|z) on grey-scale MNIST at one model: a Bernoulli on dynamically binarised
pixels; a continuous Bernoulli and Gaussians with a fixed, a global learned and a per-pixel learned
variance on grey levels in [0, 1]; a discretised mixture of 10 logistics and a free 256-way
categorical on the 8-bit levels. Burda et al.'s one-layer MLP (784-200-200-50 tanh, N(0, I)
prior) throughout; only the decoder's output layer changes size with the likelihood (784 values,
784 x 30 for the mixture, 784 x 256 for the categorical). The table gives each in the units where
it compares (nats; bits/dim for the 8-bit ones) and says under it which rows compare with which;
`samples_and_reconstructions` shows one column per likelihood.

  python -m experiments.ablate --config=configs/ablations/likelihoods.py:short \
      --workdir=runs/likelihoods --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, one seed, seconds; the tests), `short` (MNIST, 2 epochs, one seed,
K = 1000 on the first 100 test images), `full` (the default, our protocol: configs/mnist_vae.py's
450-epoch schedule, K = 5000 on all 10,000 test images; the categorical alone then takes about 34
hours to train and 15 to evaluate on 2 CPU cores; called `paper` before 0.2.0).

The categorical's decoder sizes the short schedule: its output layer is 200 x 200,704 weights,
about 40 M multiply-adds per decoded sample (150 times the rest of the model), so an epoch takes
274 s against 35 s for the logistic mixture and about 2.7 s for the others, and the K = 5000
log-likelihood would take 5.6 s per test image (K = 1000: 1.1 s). The MNIST variants evaluate 5
images x 200 samples per call: the categorical's logits for the default 20 x 500 take 8 GB.
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep

# The fixed standard deviation of the Gaussian on [0, 1] grey levels, and where the learned
# global and per-pixel ones start.
GAUSSIAN_SCALE = 0.1


def _cell(name: str, preprocessing: str, likelihood: str, **fields) -> tuple:
  return (name, {"data.preprocessing": preprocessing, "likelihood.name": likelihood,
                 **{f"likelihood.{k}": v for k, v in fields.items()}})


LIKELIHOODS = sweep.axis("likelihood", [
    _cell("bernoulli", "dynamic_binarization", "bernoulli"),
    _cell("continuous_bernoulli", "float", "continuous_bernoulli"),
    *[_cell(f"gaussian_{variance}", "float", "gaussian", variance=variance,
            scale=GAUSSIAN_SCALE) for variance in ("fixed", "global", "per_pixel")],
    _cell("logistic_mixture", "uint8", "discretized_logistic_mixture"),
    _cell("categorical", "uint8", "categorical"),
])

NOTES = """\
Which numbers compare. The rows model three kinds of data, so their log-likelihoods are in three
units that cannot be compared across groups:
- `bernoulli`: probabilities of binarised pixels (nats); comparable only with other results on
  binarised MNIST (e.g. the burda_table1 ablation).
- `continuous_bernoulli` and the three `gaussian_*` rows: densities on [0, 1]^784 of the grey
  levels (nats; a density can exceed 1, so these NLLs can be negative). They compare with each
  other: the same data under the same measure. The Gaussian spends probability outside [0, 1],
  and its learned variances can shrink on MNIST's constant background pixels, which alone can
  make its log-density large without better images.
- `logistic_mixture` and `categorical`: probabilities of the 256 levels of each 8-bit pixel, in
  bits/dim; they compare with each other and with published bits/dim on 8-bit MNIST.

A density on [0, 1] is not a probability of 256 bins: relating them would need a density of
uniformly dequantised data (log P(bin) = log p(x) - 784 log 256 holds only then), which these
models were not trained on; nor is either a probability of binarised pixels.
"""


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "likelihoods"
  c.description = ("Likelihoods p(x|z) at one encoder, decoder body and prior: Bernoulli "
                   "(binarised), continuous Bernoulli and Gaussians ([0, 1] grey levels), "
                   "discretised logistic mixture and 256-way categorical (8-bit levels).")
  c.axes = (LIKELIHOODS,)
  c.metrics = ("nll", "bpd", "elbo", "active_units")
  c.notes = NOTES
  c.figures = ("samples_and_reconstructions",)
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
  elif arg in ("short", "full", None):
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    with c.base.unlocked():
      # The categorical's logits, 784 x 256 floats per sample, for 5 x 200 samples: 0.8 GB.
      c.base.eval.batch_size = 5
      c.base.eval.chunk_size = 200
    if arg == "short":
      with c.base.unlocked():
        c.base.training.num_epochs = 2
        c.base.eval.num_samples = 1000
        c.base.eval.num_test = 100
  else:
    raise sweep.variant_error("configs/ablations/likelihoods.py", arg, ("smoke", "short", "full"))
  return c
