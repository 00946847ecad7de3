r"""Kingma & Welling 2013, Figure 2: the training and test ELBO against the number of training
examples seen, for latent sizes 3, 5, 10, 20 and 200, and (Figure 4) the learned 2-D manifold of
a 2-latent model, on MNIST.

Their MNIST model: an MLP encoder and decoder of one hidden layer of 500 tanh units, a Bernoulli
decoder, minibatches of 100, one sample per example, curves up to 10^8 examples. Their protocol
(section 5): Adagrad with a global step size from {0.01, 0.02, 0.1} (picked by the training bound
of the first iterations; the paper does not say which), weight decay corresponding to a prior
p(theta) = N(0, I), parameters initialised by sampling from N(0, 0.01). The `paper` variant is that
protocol: Adagrad (its sum of squares started at zero) at 0.02, the middle of the three, with an L2
penalty of |theta|^2 / (2 N) added to the per-example loss (the prior's log-density shared over the
N = 59,600 training images, on every parameter), and every weight and bias drawn from N(0, 0.01^2)
(`model.init='normal'`, reading 0.01 as the standard deviation). The paper does not say how MNIST
was binarised; dynamic binarisation here.

The `short` and `full` variants are our protocol: the same networks and batch on dynamically
binarised MNIST (Burda split, 59,600 / 400 / 10,000) with Adam at a constant learning rate of
1e-3 and Flax's initialisation (a constant rate keeps the curves' shape about the model, not a
schedule), so the short run's curves are the first 1.2 million examples of the full variant's.
The test ELBO is logged after every epoch on the first `eval.curve_num_test` test images (one
sample each), the training ELBO every 298 steps (the mean over those steps); `elbo_vs_examples`
draws both on a log axis, `latent_manifold` decodes the 2-latent model's grid. The table adds the
K = 5000 test NLL, the ELBO's KL and active units.

  python -m experiments.ablate --config=configs/ablations/latent_size.py:short \
      --workdir=runs/latent_size --config.base.data.path=../shared/data/mnist.pkl.gz

Variants: `smoke` (digits, latent sizes 2 and 5, seconds; the tests), `short` (MNIST, 20 epochs
= 1.2 million examples, one seed, test curve on the first 1,000 test images, K = 5000 on the
first 1,000), `full` (the default; called `paper` before 0.2.0: our protocol for 1,678 epochs =
10^8 examples, the test curve and K = 5000 on all 10,000 test images), `paper` (Kingma & Welling's
protocol above, as long as `full`).
"""

from configs import digits_vae, mnist_vae
from elbo_jax import sweep

LATENT_SIZES = (2, 3, 5, 10, 20, 200)
PAPER_EXAMPLES = 10**8
BURDA_TRAIN = 59_600  # the training images of the Burda split


def get_config(arg=None):
  c = sweep.default_config()
  c.name = "latent_size"
  c.description = ("Kingma & Welling 2013, Figures 2 and 4: the ELBO against training examples "
                   "seen for several latent sizes, and a learned 2-D manifold.")
  c.metrics = ("elbo", "nll", "kl", "active_units")
  c.notes = ("Kingma & Welling report figures, not tables, so there is no published column. "
             "Their networks; the optimiser, initialisation and weight decay are theirs only in "
             "the `paper` variant (Adam at a constant rate otherwise), on dynamically binarised "
             "MNIST.")
  c.figures = ("elbo_vs_examples", "latent_manifold")
  sizes = LATENT_SIZES
  if arg == "smoke":
    c.base_config = "configs/digits_vae.py:smoke"
    c.base = digits_vae.get_config("smoke")
    sizes = (2, 5)
    with c.base.unlocked():
      c.base.eval.curve_num_test = 1000  # all 297 digits test images
  elif arg in ("short", "full", "paper", None):
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
        c.base.training.num_epochs = -(-PAPER_EXAMPLES // BURDA_TRAIN)
        c.base.eval.curve_num_test = 10_000
      if arg == "paper":
        c.base.optimizer.name = "adagrad"
        c.base.optimizer.learning_rate = 0.02
        c.base.optimizer.weight_decay = 1 / BURDA_TRAIN
        c.base.model.init = "normal"
  else:
    raise sweep.variant_error("configs/ablations/latent_size.py", arg,
                              ("smoke", "short", "full", "paper"))
  c.axes = (sweep.grid("model.latent_dim", sizes, name="latents"),)
  return c
