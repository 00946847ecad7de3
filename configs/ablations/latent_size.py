r"""Kingma & Welling 2013, Figure 2: the training and test ELBO against the number of training
examples seen, for latent sizes 3, 5, 10, 20 and 200, and (Figure 4) the learned 2-D manifold of
a 2-latent model, on MNIST.

Their MNIST model: an MLP encoder and decoder of one hidden layer of 500 tanh units, a Bernoulli
decoder, minibatches of 100, one sample per example, Adagrad, curves up to 10^8 examples. Here:
the same networks and batch on dynamically binarised MNIST (Burda split, 59,600 / 400 / 10,000)
with Adam at a constant learning rate of 1e-3 (elbo_jax has no Adagrad; a constant rate keeps the
curves' shape about the model, not a schedule), so the short run's curves are the first 3.6 million
examples of the paper variant's. The test ELBO is logged after every epoch on the first
`eval.curve_num_test` test images (one sample each), the training ELBO every 298 steps (the mean
over those steps); `elbo_vs_examples` draws both on a log axis, `latent_manifold` decodes the
2-latent model's grid. The table adds the K = 5000 test NLL, the ELBO's KL and active units.

  python -m experiments.ablate --config=configs/ablations/latent_size.py:short \
      --workdir=runs/latent_size --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, latent sizes 2 and 5, seconds; the tests), `short` (MNIST, 20 epochs
= 1.2 million examples, one seed, test curve on the first 1,000 test images, K = 5000 on the
first 1,000), `paper` (the default: 1,678 epochs = 10^8 examples, the test curve and K = 5000 on
all 10,000 test images).

Short wall time, measured on 2026-12-03 on a 2-core CPU with about a quarter of its time stolen
by the host: 11.4 minutes, 1.4-2.2 minutes per latent size for training, the per-epoch test
curve and evaluation (the first two shared the CPU with a two-minute test run).
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep

LATENT_SIZES = (2, 3, 5, 10, 20, 200)
PAPER_EXAMPLES = 10**8


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "latent_size"
  c.description = ("Kingma & Welling 2013, Figures 2 and 4: the ELBO against training examples "
                   "seen for several latent sizes, and a learned 2-D manifold.")
  c.metrics = ("elbo", "nll", "kl", "active_units")
  c.notes = ("Kingma & Welling report figures, not tables, so there is no published column. "
             "Their networks are used with Adam at a constant rate instead of Adagrad, on "
             "dynamically binarised MNIST.")
  c.figures = ("elbo_vs_examples", "latent_manifold")
  sizes = LATENT_SIZES
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
    sizes = (2, 5)
    with c.base.unlocked():
      c.base.eval.curve_num_test = 1000  # all 297 digits test images
  elif arg in ("short", "paper", None):
    c.base_config = "configs/mnist_vae.py"
    c.base = mnist_vae.get_config()
    with c.base.unlocked():
      c.base.model.hidden = (500,)
      c.base.optimizer.schedule = "constant"
      c.base.optimizer.learning_rate = 1e-3
      if arg == "short":
        c.base.training.num_epochs = 20
        c.base.eval.num_test = 1000
        c.base.eval.curve_num_test = 1000
      else:
        c.base.training.num_epochs = -(-PAPER_EXAMPLES // 59_600)  # the Burda split's train set
        c.base.eval.curve_num_test = 10_000
  else:
    raise ValueError(f"configs/ablations/latent_size.py: unknown variant {arg!r}; "
                     "allowed: smoke, short, paper")
  c.axes = (sweep.grid("model.latent_dim", sizes, name="latents"),)
  return c
