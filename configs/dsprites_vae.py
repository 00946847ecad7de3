"""A VAE on TFDS dSprites (Matthey et al. 2017) in the protocol of Locatello et al. 2019's
unsupervised study (google-research/disentanglement_lib, unsupervised_study_v1): 64 x 64 binary
images, the conv encoder 32-32-64-64 (4 x 4, stride 2) + 256 units and its mirror, 10 latents,
a Bernoulli likelihood, Adam at 1e-4, batch 64, 300,000 steps (26 epochs of the 727k training
images here), the FactorVAE discriminator 6 x 1000.

  python -m experiments.train --config=configs/dsprites_vae.py --workdir=runs/dsprites \
      --config.data.data_dir=<a directory where TFDS dsprites is prepared>

Needs TFDS `dsprites` prepared in array_record format (no network is used unless
data.download=True) and about 12 GB of host memory (the images as float32). Differences from
the study: 10,000 images are held out as the test set the scores are computed on (the study
scores samples of the whole data set), and the decoder ends in a 3 x 3 convolution after its
last transposed one. Not run here (CPU only): the procedural `configs/sprites_vae.py` is this
config at CPU scale.
"""

from elbo_jax.config import default_config, lock


def get_config(arg=None):
  if arg is not None:
    raise ValueError(f"configs/dsprites_vae.py takes no variant; got {arg!r}")
  c = default_config()
  c.data.name = "dsprites"
  c.data.test_size = 10000
  c.model.name = "conv"
  c.model.channels = (32, 32, 64, 64)
  c.model.hidden = (256,)
  c.model.activation = "relu"
  c.model.latent_dim = 10
  c.optimizer.learning_rate = 1e-4
  c.training.batch_size = 64
  c.training.num_epochs = 26  # 26 x 11,357 steps = 295,282, the study's 300,000
  c.training.steps_per_call = 500
  c.training.checkpoint_every = 10000
  c.eval.num_samples = 1000
  c.eval.num_test = 1000
  return lock(c)
