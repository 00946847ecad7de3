"""Burda et al. 2015's one-stochastic-layer VAE on dynamically binarised MNIST.

Encoder 784-200-200 (tanh) -> 50 Gaussian latents, mirrored Bernoulli decoder, standard normal
prior, 59,600 / 400 / 10,000 split, test log-likelihood with K = 5000. The default is our short
protocol (450 epochs at batch 100, Adam at 1.5e-3 on a cosine schedule, Flax's initialisation).
  python -m experiments.train --config=configs/mnist_vae.py --workdir=runs/mnist \\
      --config.data.path=../shared/data/mnist.pkl.gz

`get_config('paper')` is the protocol of the paper's text (section 5.1): Glorot & Bengio's uniform
initialisation; Adam with beta1 = 0.9, beta2 = 0.999, epsilon = 1e-4; minibatches of 20; for
i = 0..7, 3^i epochs at learning rate 1e-3 * 10^(-i/7) (3,280 epochs). The authors' code
(yburda/iwae) differs from the text: Adam's beta1 is 0.99 (its second moment starts at ones and
epsilon is added to the uncorrected sqrt(v)), the decoder's output bias starts at the logit of the
training mean (clipped to [0.001, 0.999]), each stage's rate is rounded to a multiple of 1e-5,
the minibatches come in file order every epoch, and the validation set is the last 400 training
images (here 400 drawn at random). `--config.optimizer.b1=0.99
--config.model.output_bias=data_mean` gives its beta1 and output bias; the rest are not options
here (optax's Adam starts v at zeros and adds epsilon to the bias-corrected sqrt(v)).
`get_config('runlocal')` is a one-epoch smoke run of the default.
"""

from elbo_jax.config import default_config, lock
from elbo_jax.optim import burda_num_epochs


def get_config(arg=None):
  c = default_config()
  c.data.name = "mnist"
  c.data.preprocessing = "dynamic_binarization"
  c.data.split = "burda"
  c.model.name = "mlp"
  c.model.hidden = (200, 200)
  c.model.activation = "tanh"
  c.model.latent_dim = 50
  # The short default: 450 epochs, about 14 minutes on 2 CPU cores (see README for its result).
  c.training.batch_size = 100
  c.training.num_epochs = 450
  c.training.steps_per_call = 298
  c.training.checkpoint_every = 5960
  c.optimizer.schedule = "cosine"
  c.optimizer.learning_rate = 1.5e-3
  if arg == "paper":
    c.training.batch_size = 20
    c.training.num_epochs = burda_num_epochs()
    c.training.steps_per_call = 745
    c.training.checkpoint_every = 29800
    c.optimizer.learning_rate = 1e-3
    c.optimizer.b1, c.optimizer.b2, c.optimizer.eps = 0.9, 0.999, 1e-4
    c.optimizer.schedule = "burda"
    c.model.init = "glorot"
  elif arg == "runlocal":
    c.training.num_epochs = 1
    c.eval.num_samples = 100
    c.eval.num_test = 500
  elif arg is not None:
    raise ValueError(f"configs/mnist_vae.py: unknown variant {arg!r}; allowed: paper, runlocal")
  return lock(c)
