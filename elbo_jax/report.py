"""What a finished run reports: validation during training, the test-set evaluation, figures.

`evaluate_run` writes workdir/results.json (test log-likelihood with K importance samples, ELBO
and its terms, KL per dimension, active units) and the figures samples.png, reconstructions.png,
training_curves.png and, for 2-D latents, latent_manifold.png.

Validation and evaluation build the model computing in EVAL_DTYPE (float32) whatever
`accelerator.compute_dtype` it was trained in (the parameters are the same), so a reported
log-likelihood is a property of the parameters, comparable across runs, not of bfloat16 rounding.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import evaluation, io, objectives, plots
from elbo_jax.build import build_model
from elbo_jax.metrics import read_metrics
from elbo_jax.workdir import RESULTS_FILE

EVAL_DTYPE = "float32"


def eval_model(config, dataset):
  """The model of `config` computing in EVAL_DTYPE; it reads the parameters of any compute dtype."""
  return build_model(config, dataset, EVAL_DTYPE)


def eval_data(dataset, x: np.ndarray, key) -> np.ndarray:
  """Evaluation data; dynamically binarised sets are binarised once with the fixed eval key."""
  if not dataset.dynamic:
    return x
  return np.asarray(data_lib.binarize(jax.random.fold_in(key, len(x)), jnp.asarray(x)))


@functools.lru_cache(maxsize=8)
def _elbo_fn(model, num_samples: int):
  return objectives.elbo(model, num_samples=num_samples)


def make_validator(config, dataset, validation: np.ndarray):
  """fn(params) -> the validation ELBO and its terms, averaged over the validation set."""
  key = jax.random.fold_in(jax.random.key(config.eval.seed), 1)
  per_example = _elbo_fn(eval_model(config, dataset), 1)

  def validate(params) -> dict:
    if not len(validation):
      return {}
    terms = evaluation.map_dataset(per_example, params, validation, key,
                                   batch_size=config.eval.batch_size)
    return {f"eval/{k}": float(np.mean(terms[k])) for k in ("elbo", "log_px_given_z", "kl")}

  return validate


def decode_mean(model, params, z):
  """The likelihood's mean image for latents z: [n, D] -> [n, *data_shape], scaled to [0, 1]."""
  images = model.apply(params, z, method=lambda m, z: m.likelihood.mean(m.decode(z)))
  scale = 255.0 if model.likelihood.data_kind == "uint8" else 1.0
  return np.clip(np.asarray(images) / scale, 0.0, 1.0)


def reconstruct(model, params, x, key):
  """One posterior sample per example, decoded to its mean image: x: [n, ...] -> [n, ...]."""
  def one(x, key):
    return model.apply(params, x, key,
                       method=lambda m, x, k: m.sample_posterior(m.encode(x), k, 1)[0][0])
  z = jax.vmap(one)(jnp.asarray(x, jnp.float32), jax.random.split(key, len(x)))
  return decode_mean(model, params, z)


def write_figures(workdir, model, params, test, key, progress_records):
  sample_key, recon_key = jax.random.split(key)
  paths = {
      "samples": plots.image_grid(
          decode_mean(model, params, model.apply(params, sample_key, 64,
                                                 method=lambda m, k, n: m.sample_prior(k, n))),
          os.path.join(workdir, "samples.png"), title="samples from the prior"),
      "reconstructions": plots.reconstructions(
          np.clip(test[:10] / (255.0 if model.likelihood.data_kind == "uint8" else 1.0), 0, 1),
          reconstruct(model, params, test[:10], recon_key),
          os.path.join(workdir, "reconstructions.png")),
      "training_curves": plots.training_curves(progress_records,
                                               os.path.join(workdir, "training_curves.png")),
  }
  if model.latent_dim == 2:
    paths["latent_manifold"] = plots.latent_manifold(
        lambda z: decode_mean(model, params, jnp.asarray(z, jnp.float32)),
        os.path.join(workdir, "latent_manifold.png"), image_shape=tuple(test.shape[1:]))
  return {k: os.path.basename(v) for k, v in paths.items()}


def evaluate_run(workdir, config, dataset, params, progress: bool = True) -> dict:
  """Test-set evaluation of `params`; writes results.json and the figures, returns the results."""
  model = eval_model(config, dataset)
  eval_key = jax.random.key(config.eval.seed)
  test = eval_data(dataset, dataset.test, eval_key)
  if config.eval.num_test:
    test = test[:config.eval.num_test]
  k = config.eval.num_samples
  tic = time.perf_counter()
  with tqdm(total=len(test) * config.eval.repeats, unit="example", disable=not progress,
            desc=f"test log-likelihood, K={k}", mininterval=2.0) as bar:
    ll = evaluation.log_likelihood(
        model, params, test, jax.random.fold_in(eval_key, 2), num_samples=k,
        chunk_size=config.eval.chunk_size, batch_size=config.eval.batch_size,
        repeats=config.eval.repeats, progress=bar.update)
  ll_seconds = time.perf_counter() - tic
  terms = evaluation.map_dataset(_elbo_fn(model, config.eval.elbo_samples), params, test,
                                 jax.random.fold_in(eval_key, 3),
                                 batch_size=config.eval.batch_size)
  means = evaluation.posterior_means(model, params, test, jax.random.fold_in(eval_key, 4),
                                     batch_size=config.eval.batch_size)
  num_active, unit_variance = evaluation.active_units(means)
  num_dims = int(np.prod(dataset.shape))
  test_results = {
      f"nll_k{k}": -ll["mean"], f"nll_k{k}_std": ll["std"], "log_likelihood": ll["mean"],
      "log_likelihood_repeats": ll["repeats"], "num_importance_samples": k,
      "elbo": float(np.mean(terms["elbo"])),
      "log_px_given_z": float(np.mean(terms["log_px_given_z"])),
      "kl": float(np.mean(terms["kl"])),
      "active_units": num_active, "latent_dim": int(model.latent_dim),
      "posterior_mean_variance_per_dim": unit_variance.tolist(),
      "num_examples": len(test), "log_likelihood_seconds": ll_seconds,
      "log_likelihood_dtype": EVAL_DTYPE, "compute_dtype": config.accelerator.compute_dtype,
  }
  if "kl_per_dim" in terms:
    test_results["kl_per_dim"] = np.mean(terms["kl_per_dim"], 0).tolist()
  if model.likelihood.reports_bits_per_dim:
    test_results["bpd"] = -ll["mean"] / (num_dims * np.log(2.0))
  workdir = os.path.abspath(workdir)
  figures = write_figures(workdir, model, params, test, jax.random.key(config.eval.seed + 1),
                          read_metrics(workdir))
  results = {"data": dataset.info, "test": test_results, "figures": figures,
             "objective": config_lib.to_json(config.objective)}
  io.write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)
  return results
