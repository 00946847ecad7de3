"""A run's workdir: provenance, checkpoints (orbax), metrics, the final evaluation and figures.

workdir/
  config.json      the resolved config; a different config in the same workdir is refused
  run_info.json    package versions, git commit, seed, command line, devices
  checkpoints/     orbax checkpoints; orbax writes each into a temporary directory and renames it
                   when complete, so a run killed mid-save resumes from the last complete one
  metrics.jsonl, tensorboard/   scalars every `training.steps_per_call` steps
  results.json, samples.png, reconstructions.png, training_curves.png[, latent_manifold.png]
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from elbo_jax import data as data_lib
from elbo_jax import evaluation, io, plots
from elbo_jax import objectives
from elbo_jax.metrics import MetricWriter, read_metrics
from elbo_jax.registry import ConfigError

# Fields that may change between a run and its resumption (they do not change the numbers).
NON_IDENTITY_FIELDS = ("training.progress", "accelerator", "eval")
PACKAGES = ("elbo_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "tensorflow-datasets", "ml-collections")


def _flatten(d: dict, prefix="") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    out |= _flatten(v, key + ".") if isinstance(v, dict) else {key: v}
  return out


def config_to_json(config) -> dict:
  """The config as plain JSON types (tuples become lists)."""
  return io.to_json_types(config.to_dict() if hasattr(config, "to_dict") else config)


def config_differences(a: dict, b: dict) -> list[str]:
  fa, fb = _flatten(a), _flatten(b)
  ignored = lambda k: any(k == f or k.startswith(f + ".") for f in NON_IDENTITY_FIELDS)
  return sorted(k for k in fa.keys() | fb.keys() if not ignored(k) and fa.get(k) != fb.get(k))


def git_commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return out.stdout.strip() or "unknown"
  except (OSError, subprocess.TimeoutExpired):
    return "unknown"


def provenance(config) -> dict:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"seed": config.seed, "git_commit": git_commit(), "packages": versions,
          "python": sys.version.split()[0], "platform": platform.platform(),
          "devices": [str(d) for d in jax.devices()], "command": sys.argv}


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a workdir was run with, locked."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise ConfigError(f"--workdir={workdir!r} holds no run (no config.json)")
  d = io.read_json(path)
  tuples = lambda v: {k: tuples(x) for k, x in v.items()} if isinstance(v, dict) else (
      tuple(v) if isinstance(v, list) else v)
  config = ml_collections.ConfigDict(tuples(d))
  config.lock()
  return config


class Run:
  """The bookkeeping of one training run in `workdir`."""

  def __init__(self, workdir: str, config):
    self.workdir = os.path.abspath(workdir)
    os.makedirs(self.workdir, exist_ok=True)
    config_path = os.path.join(self.workdir, "config.json")
    resolved = config_to_json(config)
    if os.path.exists(config_path):
      differences = config_differences(io.read_json(config_path), resolved)
      if differences:
        raise ConfigError(f"--workdir={workdir!r} holds a run of a different config (differs in: "
                          f"{', '.join(differences)}); use a new --workdir")
    else:
      io.write_json_atomic(config_path, resolved)
    io.write_json_atomic(os.path.join(self.workdir, "run_info.json"), provenance(config))
    self.writer = MetricWriter(self.workdir)
    self.manager = ocp.CheckpointManager(
        os.path.join(self.workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False),
    )
    self.started = time.perf_counter()

  def latest_step(self):
    return self.manager.latest_step()

  def restore(self, state):
    """The latest complete checkpoint restored into `state`'s structure, or `state` if none."""
    step, restored = restore_latest(self.manager, state)
    if step is None:
      return state
    # Metrics logged after that checkpoint will be logged again by the resumed run: drop them from
    # metrics.jsonl, and have TensorBoard hide them.
    kept = [r for r in read_metrics(self.workdir) if r["step"] <= step]
    io.write_text_atomic(self.writer.metrics_path, "".join(io.json_line(r) for r in kept))
    self.writer.close()
    self.writer = MetricWriter(self.workdir, purge_step=step + 1)
    return restored

  def save(self, state):
    step = int(state.step)
    if self.manager.latest_step() != step:
      self.manager.save(step, args=ocp.args.StandardSave(state))
      self.manager.wait_until_finished()

  def write_metrics(self, step: int, scalars: dict):
    self.writer.write_scalars(step, scalars)

  def close(self):
    self.writer.close()
    self.manager.close()


def restore_latest(manager, state):
  """(step, restored state) of the manager's latest complete checkpoint, or (None, None).

  `state` (arrays or shape structs) gives the structure, shapes and dtypes to restore into, and
  the arrays their shardings. Shape structs without one are restored onto this process's first
  device, whatever devices wrote the checkpoint: a run trained on two devices evaluates on one.
  """
  step = manager.latest_step()
  if step is None:
    return None, None
  first_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def abstract(leaf):
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(struct, "sharding", None) is None:
      struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=first_device)
    return struct

  return step, manager.restore(step, args=ocp.args.StandardRestore(jax.tree.map(abstract, state)))


def restore_params(workdir: str, state):
  """The parameters of the latest checkpoint in `workdir`, restored into `state`'s structure."""
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
  step, restored = restore_latest(manager, state)
  if step is None:
    raise ConfigError(f"--workdir={workdir!r} holds no complete checkpoint")
  return restored.params


def progress_bar(total: int, initial: int, enabled: bool):
  bar = tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True,
             mininterval=1.0)

  class _Bar:
    def update(self, n, summary):
      bar.set_postfix(elbo=f"{summary['train/elbo']:.2f}",
                      steps_per_s=f"{summary['train/steps_per_sec']:.0f}", refresh=False)
      bar.update(n)

    def close(self):
      bar.close()

  return _Bar()


def eval_data(dataset, x: np.ndarray, key) -> np.ndarray:
  """Evaluation data; dynamically binarised sets are binarised once with the fixed eval key."""
  if not dataset.dynamic:
    return x
  return np.asarray(data_lib.binarize(jax.random.fold_in(key, len(x)), jnp.asarray(x)))


@functools.lru_cache(maxsize=8)
def _elbo_fn(model, num_samples: int):
  return objectives.elbo(model, num_samples=num_samples)


def make_validator(model, config, validation: np.ndarray):
  """fn(params) -> the validation ELBO and its terms, averaged over the validation set."""
  key = jax.random.fold_in(jax.random.key(config.eval.seed), 1)
  per_example = _elbo_fn(model, 1)

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


def evaluate_run(workdir, model, config, dataset, params, progress: bool = True) -> dict:
  """Test-set evaluation of `params`; writes results.json and the figures, returns the results."""
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
  }
  if "kl_per_dim" in terms:
    test_results["kl_per_dim"] = np.mean(terms["kl_per_dim"], 0).tolist()
  if model.likelihood.reports_bits_per_dim:
    test_results["bpd"] = -ll["mean"] / (num_dims * np.log(2.0))
  workdir = os.path.abspath(workdir)
  figures = write_figures(workdir, model, params, test, jax.random.key(config.eval.seed + 1),
                          read_metrics(workdir))
  results = {"data": dataset.info, "test": test_results, "figures": figures,
             "objective": config_to_json(config.objective)}
  io.write_json_atomic(os.path.join(workdir, "results.json"), results)
  return results
