"""What a finished run reports: validation during training, the test-set evaluation, figures.

`evaluate_run` writes workdir/results.json (test log-likelihood with K importance samples and the
summary of its importance weights' Pareto k-hat and ESS, ELBO and its terms, KL per dimension,
active units) and the figures samples.png, reconstructions.png, training_curves.png, khat.png
(per-example k-hat and ESS) and, for 2-D latents, latent_manifold.png.

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

# Imported for the metrics they register (elbo_jax.results).
import elbo_jax.disentanglement  # noqa: F401
import elbo_jax.kl_decomposition  # noqa: F401
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import evaluation, io, likelihoods, objectives, plots, psis
from elbo_jax import mesh as mesh_lib
from elbo_jax import results as results_lib
from elbo_jax.build import build_model
from elbo_jax.metrics import read_metrics
from elbo_jax.version import __version__
from elbo_jax.workdir import RESULTS_FILE, git_commit

EVAL_DTYPE = "float32"
TRAVERSAL_ROWS, TRAVERSAL_STEPS, TRAVERSAL_RANGE = 10, 9, (-2.5, 2.5)
NUM_SAMPLES = 64  # prior samples in samples.png
KHAT_FILE = "khat.png"
# The evaluation's random streams (`eval_key`): fold_in(key(eval.seed), index). "metrics" is split
# by metric name (`results.metric_key`); the test set's binarisation ("test_data": `eval_data`
# folds in the set's size) and the figures (key(eval.seed + 1)) predate the names.
EVAL_STREAMS = {"validation": 1, "log_likelihood": 2, "elbo": 3, "posterior_means": 4,
                "gradient_snr": 5, "metrics": 6}


def eval_key(config, stream: str) -> jax.Array:
  """The evaluation's random stream `stream` (EVAL_STREAMS, "test_data" or "figures"), from
  `eval.seed` alone, so that a run's evaluation numbers do not depend on how it was trained."""
  if stream == "figures":
    return jax.random.key(config.eval.seed + 1)
  key = jax.random.key(config.eval.seed)
  return key if stream == "test_data" else jax.random.fold_in(key, EVAL_STREAMS[stream])


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


def make_validator(config, dataset, validation: np.ndarray, test: np.ndarray, mesh=None):
  """fn(params) -> the ELBO and its terms averaged over the validation set ("eval/..."), and over
  the first `eval.curve_num_test` test examples ("test/...") when that is > 0, for curves of the
  test bound against training time (Kingma & Welling 2013, Figure 2)."""
  key = eval_key(config, "validation")
  per_example = _elbo_fn(eval_model(config, dataset), 1)
  sets = {"eval": validation, "test": test[:config.eval.curve_num_test]}

  def validate(params) -> dict:
    out = {}
    for prefix, x in sets.items():
      if len(x):
        terms = evaluation.map_dataset(per_example, params, x, key,
                                       batch_size=config.eval.batch_size, mesh=mesh)
        out |= {f"{prefix}/{k}": float(np.mean(terms[k])) for k in ("elbo", "log_px_given_z",
                                                                      "kl")}
    return out

  return validate


@functools.lru_cache(maxsize=8)
def _image_fns(model):
  """Jitted decode / prior-sample / reconstruct for `model`: compiled once, not op by op per run."""
  decode = jax.jit(lambda params, z: model.apply(
      params, z, method=lambda m, z: m.likelihood.mean(m.decode(z))))
  sample = jax.jit(lambda params, key, n: model.apply(
      params, key, n, method=lambda m, k, n: m.sample_prior(k, n)), static_argnums=2)

  def posterior_sample(params, x, key):
    return model.apply(params, x, key,
                       method=lambda m, x, k: m.sample_posterior(m.encode(x), k, 1)[0][0])

  encode = jax.jit(jax.vmap(posterior_sample, in_axes=(None, 0, 0)))
  return decode, sample, encode


def as_images(model, x) -> np.ndarray:
  """Data or means in the likelihood's units (0..255 for 8-bit ones) as images in [0, 1]."""
  scale = 255.0 if model.likelihood.data_kind == "uint8" else 1.0
  return np.clip(np.asarray(x, np.float32) / scale, 0.0, 1.0)


def decode_mean(model, params, z):
  """The likelihood's mean image for latents z: [n, D] -> [n, *data_shape], scaled to [0, 1]."""
  return as_images(model, _image_fns(model)[0](params, jnp.asarray(z, jnp.float32)))


def sample_prior(model, params, key, n: int):
  """n samples from the prior, decoded to mean images: [n, *data_shape] in [0, 1]."""
  return decode_mean(model, params, _image_fns(model)[1](params, key, n))


def reconstruct(model, params, x, key):
  """One posterior sample per example, decoded to its mean image: x: [n, ...] -> [n, ...]."""
  z = _image_fns(model)[2](params, jnp.asarray(x, jnp.float32), jax.random.split(key, len(x)))
  return decode_mean(model, params, z)


def figure_keys(config):
  """The (prior samples, reconstructions) keys of a run's figures, fixed by `eval.seed`."""
  return jax.random.split(eval_key(config, "figures"))


def write_figures(workdir, model, params, test, keys, progress_records):
  sample_key, recon_key = keys
  paths = {
      "samples": plots.image_grid(sample_prior(model, params, sample_key, NUM_SAMPLES),
                                  os.path.join(workdir, "samples.png"),
                                  title="samples from the prior"),
      "reconstructions": plots.reconstructions(
          as_images(model, test[:10]), reconstruct(model, params, test[:10], recon_key),
          os.path.join(workdir, "reconstructions.png")),
      "training_curves": plots.training_curves(progress_records,
                                               os.path.join(workdir, "training_curves.png")),
  }
  # A stream of its own beside the reconstructions' (exact posterior means need none).
  paths["traversals"] = _traversals(workdir, model, params, test,
                                    jax.random.fold_in(recon_key, 1))
  if model.latent_dim == 2:
    paths["latent_manifold"] = plots.latent_manifold(
        lambda z: decode_mean(model, params, z),
        os.path.join(workdir, "latent_manifold.png"), image_shape=tuple(test.shape[1:]))
  return {k: os.path.basename(v) for k, v in paths.items()}


def _traversals(workdir, model, params, test, key) -> str:
  """Latent traversals: each row sweeps one latent over TRAVERSAL_RANGE, the others fixed at the
  first test image's posterior mean; the rows are the TRAVERSAL_ROWS latents whose posterior
  means vary most over the first 100 test images (the active ones), most varied first."""
  means = evaluation.posterior_means(model, params, test[:100], key,
                                     batch_size=min(100, len(test)))  # [n, D]
  order = np.argsort(-means.var(0))[:TRAVERSAL_ROWS]
  values = np.linspace(*TRAVERSAL_RANGE, TRAVERSAL_STEPS, dtype=np.float32)
  z = np.tile(means[0], (len(order), TRAVERSAL_STEPS, 1))  # [rows, steps, D]
  z[np.arange(len(order)), :, order] = values
  images = decode_mean(model, params, z.reshape(-1, means.shape[1]))
  return plots.image_grid(images, os.path.join(workdir, "traversals.png"), nrow=TRAVERSAL_STEPS,
                          title=f"latents {', '.join(map(str, order))} (rows) from "
                                f"{TRAVERSAL_RANGE[0]:g} to {TRAVERSAL_RANGE[1]:g}")


def evaluate_run(workdir, config, dataset, params, progress: bool = True, mesh=None,
                 tested: dict | None = None) -> dict:
  """Test-set evaluation of `params`; writes results.json and the figures, returns the results.

  tested: which parameters these are (early stopping's best-validation epoch,
  `early_stopping.Tracker.report`), recorded as results.json's "tested_parameters"; None for the
  last ones, recorded as nothing (as before early stopping existed).

  The importance-sampled log-likelihood, the costly part, runs on the first `eval.num_test` test
  examples (0: all); the ELBO, its terms, the active units and the metrics registered with a
  `compute` (`elbo_jax.results`) on the whole test set, with "elbo_on_ll_examples" the ELBO over
  the log-likelihood's examples, for their difference. Every batch is split over `mesh`'s data
  axis (all devices of all processes); process 0 writes.
  """
  model = eval_model(config, dataset)
  test_all = eval_data(dataset, dataset.test, eval_key(config, "test_data"))
  test = test_all[:config.eval.num_test] if config.eval.num_test else test_all
  ll, test_results = _test_results(config, dataset, model, params, test, test_all, progress, mesh)
  test_results |= results_lib.compute_all(results_lib.TestSet(
      config, dataset, model, params, test_all, eval_key(config, "metrics"), mesh))
  workdir = os.path.abspath(workdir)
  if not mesh_lib.is_primary():  # process 0 writes the files
    return {"data": dataset.info, "test": test_results}
  k = config.eval.num_samples
  figures = write_figures(workdir, model, params, test, figure_keys(config),
                          read_metrics(workdir))
  if "factor_mutual_info" in test_results:
    figures["factor_mutual_info"] = os.path.basename(plots.mutual_info_heatmap(
        test_results["factor_mutual_info"], dataset.info["factor_names"],
        os.path.join(workdir, "factor_mutual_info.png")))
  figures["khat"] = os.path.basename(plots.khat_histogram(
      ll["khat"], ll["ess"], k, os.path.join(workdir, KHAT_FILE), psis.KHAT_THRESHOLD,
      title=f"importance weights of the test log-likelihood, {len(test)} examples"))
  results = {"data": dataset.info, "test": test_results, "figures": figures,
             "objective": config_lib.to_json(config.objective),
             "code": {"elbo_jax_version": __version__, "git_commit": git_commit()}}
  if tested is not None:
    results["tested_parameters"] = tested
  io.write_json_atomic(os.path.join(workdir, RESULTS_FILE), results)
  return results


def _test_results(config, dataset, model, params, test, test_all, progress, mesh):
  """(the log-likelihood's output, results.json's built-in "test" entries)."""
  k = config.eval.num_samples
  tic = time.perf_counter()
  with tqdm(total=len(test) * config.eval.repeats, unit="example", disable=not progress,
            desc=f"test log-likelihood, K={k}", mininterval=2.0) as bar:
    ll = evaluation.log_likelihood(
        model, params, test, eval_key(config, "log_likelihood"), num_samples=k,
        chunk_size=config.eval.chunk_size, batch_size=config.eval.batch_size,
        repeats=config.eval.repeats, progress=bar.update, mesh=mesh)
  ll_seconds = time.perf_counter() - tic
  terms = evaluation.map_dataset(_elbo_fn(model, config.eval.elbo_samples), params, test_all,
                                 eval_key(config, "elbo"), batch_size=config.eval.batch_size,
                                 mesh=mesh)
  means = evaluation.posterior_means(model, params, test_all, eval_key(config, "posterior_means"),
                                     batch_size=config.eval.batch_size, mesh=mesh)
  num_active, unit_variance = evaluation.active_units(means)
  test_results = {
      f"nll_k{k}": -ll["mean"], f"nll_k{k}_std": ll["std"], "log_likelihood": ll["mean"],
      "log_likelihood_repeats": ll["repeats"], "num_importance_samples": k,
      "elbo": float(np.mean(terms["elbo"])),
      "elbo_on_ll_examples": float(np.mean(terms["elbo"][:len(test)])),
      "log_px_given_z": float(np.mean(terms["log_px_given_z"])),
      "kl": float(np.mean(terms["kl"])),
      "active_units": num_active, "latent_dim": int(model.latent_dim),
      "posterior_mean_variance_per_dim": unit_variance.tolist(),
      "num_examples": len(test), "elbo_num_examples": len(test_all),
      "log_likelihood_seconds": ll_seconds,
      "log_likelihood_dtype": EVAL_DTYPE, "compute_dtype": config.accelerator.compute_dtype,
  } | psis.summary(ll["khat"], ll["ess"], k)
  if "kl_per_dim" in terms:
    test_results["kl_per_dim"] = np.mean(terms["kl_per_dim"], 0).tolist()
  if model.likelihood.reports_bits_per_dim:
    test_results["bpd"] = likelihoods.bits_per_dim(-ll["mean"], dataset.shape)
  return ll, test_results
