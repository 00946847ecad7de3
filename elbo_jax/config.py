"""The default experiment config; every file in configs/ starts from it and changes what differs.

Fields are grouped two levels deep (data, model, likelihood, prior, posterior, objective, optimizer,
training, eval, accelerator). Configs are returned locked, so a misspelt override such as
`--config.prior.nmae=vamp` is an error instead of a silently ignored flag.
"""

from __future__ import annotations

import os

import ml_collections

from elbo_jax import components, data, io
from elbo_jax.registry import ConfigError

CONFIG_FILE = "config.json"  # a run's resolved config, in its workdir

# Fields that do not change a run's numbers: a run may be resumed or re-evaluated with them changed
# (on other devices, another number of processes, another coordinator). accelerator.compute_dtype
# does change them.
NON_IDENTITY_FIELDS = ("training.progress", "eval", "accelerator.platform",
                       "accelerator.replica_parallelism", "accelerator.num_devices",
                       "accelerator.distributed", "accelerator.coordinator_address",
                       "accelerator.num_processes", "accelerator.process_id")


def default_config() -> ml_collections.ConfigDict:
  """Every config field with its default and meaning.

  One listing, section by section, rather than a function per section: it is the reference a
  reader scans for a field's name, like big_vision's and the flax examples' config files.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0

  # name, source, path, data_dir, download, preprocessing, split, ...: see elbo_jax.data.
  c.data = data.default_config()

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp"              # mlp | conv | two_layer
  c.model.hidden = (200, 200)
  c.model.activation = "tanh"
  c.model.gated = False
  c.model.latent_dim = 50
  c.model.channels = (32, 64)       # conv only
  c.model.latent2_dim = 50          # two_layer only: z2 (top layer); latent_dim is z1
  c.model.hidden2 = (100, 100)      # two_layer only
  # How the weights start: default (Flax's) | glorot | normal (elbo_jax.initialization).
  c.model.init = "default"
  c.model.output_bias = "zero"      # zero | data_mean: logit of the training mean (bernoulli)

  c.likelihood = ml_collections.ConfigDict()
  c.likelihood.name = "bernoulli"   # bernoulli | gaussian | continuous_bernoulli | ...
  c.likelihood.variance = "global"  # gaussian only: fixed | global | per_pixel
  c.likelihood.scale = 1.0          # gaussian only: the fixed standard deviation / its init
  c.likelihood.num_mixtures = 10    # discretized_logistic_mixture only

  c.prior = ml_collections.ConfigDict()
  c.prior.name = "standard_normal"  # standard_normal | learned_gaussian | mog | vamp
  c.prior.num_components = 10       # mog only
  c.prior.num_pseudo_inputs = 500   # vamp only

  c.posterior = ml_collections.ConfigDict()
  c.posterior.name = "diagonal_gaussian"  # diagonal_gaussian | full_gaussian | planar_flow | iaf
  c.posterior.num_flows = 4
  c.posterior.hidden = 200          # iaf only: MADE hidden units

  c.objective = ml_collections.ConfigDict()
  # elbo | beta_elbo | iwae | miwae | ciwae | piwae; beta_tcvae | factor_vae | dip_vae |
  # capacity_vae (elbo_jax.disentangling)
  c.objective.name = "elbo"
  c.objective.num_samples = 1       # S for the ELBO, K for IWAE (and per group for MIWAE, PIWAE)
  c.objective.num_averages = 1      # miwae, piwae only: M, the number of groups of K samples
  c.objective.ciwae_beta = 0.5      # ciwae only: the ELBO's weight in beta*ELBO + (1-beta)*IWAE
  c.objective.estimator = "reparam"  # importance-weighted only: reparam | stl | dreg
  c.objective.kl = "auto"           # auto | analytic | mc
  c.objective.beta = 1.0
  c.objective.warmup_epochs = 0     # KL warm-up: beta rises linearly from 0 over this many epochs
  c.objective.free_bits = 0.0       # nats per latent dimension (batch-averaged); 0 = off
  c.objective.tc_weight = 1.0       # beta_tcvae only: the weight on the total correlation
  c.objective.factor_gamma = 10.0   # factor_vae only: the weight on the discriminator's TC
  c.objective.critic_hidden = (1000,) * 6  # factor_vae only: the discriminator's layer widths
  c.objective.critic_learning_rate = 1e-4  # factor_vae only: its Adam (beta1 0.5, beta2 0.9)
  c.objective.dip_type = "i"        # dip_vae only: i (Cov of the means) | ii (Cov of q(z))
  c.objective.lambda_od = 10.0      # dip_vae only: weight on Cov's off-diagonal entries squared
  c.objective.lambda_d = 100.0      # dip_vae only: weight on (Cov's diagonal - 1) squared
  c.objective.capacity_gamma = 1000.0  # capacity_vae only: weight on |KL - C|
  c.objective.capacity_max = 25.0   # capacity_vae only: the capacity C at the end, nats
  c.objective.capacity_epochs = 10.0  # capacity_vae only: epochs over which C rises from 0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"         # adam | adamw | sgd | adagrad | adam_normgrad
  c.optimizer.learning_rate = 1e-3
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0    # adamw (decoupled) and adagrad (L2 on the gradient) only
  c.optimizer.schedule = "constant"  # constant | cosine | burda
  c.optimizer.warmup_steps = 0
  c.optimizer.clip_norm = 0.0       # global-norm clipping; 0 = off

  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 100       # global batch size, split across devices
  c.training.num_epochs = 20
  c.training.steps_per_call = 200   # steps per jitted call (lax.scan); also the logging interval
  c.training.checkpoint_every = 1000  # steps; a checkpoint is also written at the end
  c.training.checkpoint_every_seconds = 300.0  # and after this much wall time; 0 = off
  c.training.on_nonfinite = "stop"  # stop | skip (skip the update and count it)
  # Early stopping (elbo_jax.early_stopping): stop after this many epochs (after the KL warm-up)
  # without a new best validation ELBO, and test the best-validation parameters. 0 = off.
  c.training.early_stopping_patience = 0
  # Divergence stops the run like a NaN does: the training bound falls below its first value by
  # more than this factor times |first value|, or the gradient norm grows past this factor times
  # its first value. 0 turns a check off.
  c.training.divergence_factor = 10.0
  c.training.divergence_grad_factor = 1e4
  c.training.progress = True

  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 5000         # K of the importance-sampled test log-likelihood
  c.eval.chunk_size = 500
  c.eval.batch_size = 20            # examples per jitted call; x chunk_size rows in flight
  c.eval.repeats = 1
  c.eval.num_test = 0               # the log-likelihood on the first N test examples; 0 = all
  c.eval.curve_num_test = 0         # log the test ELBO on the first N every epoch; 0 = off
  c.eval.elbo_samples = 10
  c.eval.seed = 1234                # fixed, so evaluation numbers do not depend on training
  # The KL term taken apart on the test set (elbo_jax.kl_decomposition): mutual information, total
  # correlation, dimension-wise KL, KL(q(z) || p(z)); diagonal-Gaussian q, Gaussian p(z) only.
  c.eval.kl_decomposition = True
  # Data with known factors (data.name='sprites'): MIG, SAP, modularity and DCI of the test set's
  # posterior means (elbo_jax.disentanglement); DCI's importances from gbt (gradient-boosted
  # trees, as Locatello et al.) or logistic (faster, linear).
  c.eval.dci_importance = "gbt"
  # Generated factor data: the FactorVAE score (Kim & Mnih 2018) from this many voting points
  # (half as many to score; batches of 64 newly rendered images each); 0 = off.
  c.eval.factor_vae_points = 1000
  # ... and the BetaVAE score (Higgins et al. 2017) from this many points (batches of 64 pairs of
  # images sharing one factor); 0 = off.
  c.eval.beta_vae_points = 1000

  c.accelerator = ml_collections.ConfigDict()
  c.accelerator.platform = "auto"   # auto | cpu | gpu | tpu
  c.accelerator.replica_parallelism = 1  # devices along the mesh's replica axis (vectorised runs)
  c.accelerator.num_devices = 0     # use the first N devices (all processes together); 0 = all
  # Several processes (elbo_jax.mesh.initialize_distributed): off | auto (Cloud TPU, SLURM, ...)
  # | explicit (the three fields below, e.g. two processes on one machine over loopback).
  c.accelerator.distributed = "off"
  c.accelerator.coordinator_address = ""  # host:port of process 0
  c.accelerator.num_processes = 1
  c.accelerator.process_id = 0
  # The networks' matmuls and activations: float32 | bfloat16. Parameters, optimiser state and
  # log-densities stay float32, and evaluation always runs in float32.
  c.accelerator.compute_dtype = "float32"
  return c


def lock(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  c.lock()
  return c


def to_json(config) -> dict:
  """The config as plain JSON types (tuples become lists)."""
  return io.to_json_types(config.to_dict() if hasattr(config, "to_dict") else config)


def from_json(d: dict) -> ml_collections.ConfigDict:
  """The locked ConfigDict of `to_json`'s output (lists become tuples again)."""
  tuples = lambda v: {k: tuples(x) for k, x in v.items()} if isinstance(v, dict) else (
      tuple(v) if isinstance(v, list) else v)
  return lock(ml_collections.ConfigDict(tuples(d)))


def with_defaults(d: dict) -> dict:
  """A saved config (`to_json`'s output) with the fields added to `default_config` since it was
  written, at their defaults, so an older workdir still resumes and evaluates."""
  c = default_config()
  c.update(from_json(d))
  return to_json(c)


def flatten(d: dict, prefix: str = "") -> dict:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out |= flatten(v, key + ".") if isinstance(v, dict) else {key: v}
  return out


def identity(config_json: dict, ignore=NON_IDENTITY_FIELDS) -> dict:
  """The flattened JSON config without the `ignore`d fields (a name covers its whole section) and
  the options its components do not read (`components.unread_fields`)."""
  ignore = (*ignore, *components.unread_fields(config_json))
  ignored = lambda k: any(k == f or k.startswith(f + ".") for f in ignore)
  return {k: v for k, v in flatten(config_json).items() if not ignored(k)}


def differences(a: dict, b: dict, ignore=NON_IDENTITY_FIELDS) -> list[str]:
  """The "section.field" names whose values differ between two JSON configs, minus `ignore`d
  ones."""
  # An option one of them does not read is no difference: where it is read by the other, their
  # components' names differ.
  ignore = (*ignore, *components.unread_fields(a), *components.unread_fields(b))
  fa, fb = identity(a, ignore), identity(b, ignore)
  return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def read_saved(workdir: str) -> dict | None:
  """workdir/config.json (JSON, `with_defaults`), or None where there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  return with_defaults(io.read_json(path)) if os.path.exists(path) else None


def load(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a workdir was run with, locked."""
  saved = read_saved(workdir)
  if saved is None:
    raise ConfigError(f"--workdir={workdir!r} holds no run (no {CONFIG_FILE})")
  return from_json(saved)
