"""Evaluation: the importance-sampled log-likelihood and the per-dataset statistics of a trained
model.

log p(x) ~= log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x)  (Burda et al. 2015, K = 5000).
The K samples are drawn in chunks under `lax.scan` with a running logsumexp, so memory is bounded by
the chunk size whatever K is; the importance weights' Pareto k-hat and effective sample size, which
say whether the estimate can be trusted, are streamed through the same chunks (`elbo_jax.psis`).
Every example's key is `fold_in(key, index in the data set)`, so the number for an example depends
neither on the batch size nor on the number of devices, and matmuls run at 'highest' precision so
that accelerators do not silently use bf16 passes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from elbo_jax import mesh as mesh_lib
from elbo_jax import psis, xla
from elbo_jax.objectives import assemble
from elbo_jax.registry import ConfigError, positive_int


def importance_estimate(model, *, num_samples: int = 5000, chunk_size: int = 500,
                        diagnostics: bool = True, likelihood=None, prior=None, posterior=None):
  """Returns f(params, x, key) -> {"log_likelihood": the estimate of log p(x) in nats, and with
  `diagnostics` "khat", "ess": the importance weights' Pareto k-hat and effective sample size
  (`elbo_jax.psis`)}, scalars, for ONE example.

  K = num_samples need not be a multiple of chunk_size: the last chunk's surplus samples get
  log-weight -inf, which every running sum ignores. The diagnostics keep K / 5 or 3 sqrt(K) log
  weights (213 at K = 5000) beside the chunk, whatever K is.
  """
  model = assemble(model, likelihood, prior, posterior)
  positive_int("eval.num_samples", num_samples)
  positive_int("eval.chunk_size", chunk_size)
  chunk = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk)

  def log_weights(m, x, q, key):
    z, log_q = m.sample_posterior(q, key, chunk)
    return m.likelihood_log_prob(z, x) + m.prior_log_prob(z) - log_q  # [chunk]

  def per_example(params, x, key):
    key = xla.fast_key(key)
    with jax.default_matmul_precision("highest"):
      q = model.apply(params, x, method=model.encode)

      def step(state, c):
        log_w = model.apply(params, x, q, jax.random.fold_in(key, c), method=log_weights)
        valid = c * chunk + jnp.arange(chunk) < num_samples
        return psis.stream_update(state, jnp.where(valid, log_w, -jnp.inf)), None

      state = psis.stream_init(num_samples, diagnostics)
      state, _ = jax.lax.scan(step, state, jnp.arange(num_chunks))
      return psis.stream_result(state, num_samples)

  return per_example


def importance_log_likelihood(model, *, num_samples: int = 5000, chunk_size: int = 500,
                              likelihood=None, prior=None, posterior=None):
  """Returns f(params, x, key) -> scalar estimate of log p(x) for ONE example, in nats
  (`importance_estimate` without the diagnostics)."""
  estimate = importance_estimate(model, num_samples=num_samples, chunk_size=chunk_size,
                                 diagnostics=False, likelihood=likelihood, prior=prior,
                                 posterior=posterior)
  return lambda params, x, key: estimate(params, x, key)["log_likelihood"]


@functools.lru_cache(maxsize=32)
def _batched(per_example, fast):
  # Cached on the function object, so repeated evaluations (every epoch) compile once. The keys
  # are folded from each example's index in the whole data set, inside the program.
  def batch_fn(params, x, key_data, indices):
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.wrap_key_data(key_data),
                                                            indices)
    return jax.vmap(per_example, in_axes=(None, 0, 0))(params, x, keys)

  return xla.jit(batch_fn, fast=fast)


def _default_mesh():
  return mesh_lib.make_mesh(jax.local_devices()[:1])


def map_dataset(per_example, params, data: np.ndarray, key, *, batch_size: int, progress=None,
                fast: bool = True, mesh=None):
  """Applies a per-example f(params, x, key) -> pytree to every row of `data`, jitted in batches.

  data: [N, ...], the whole data set, on every process. Each batch of `batch_size` rows (rounded
  up to a multiple of the devices) is split over the mesh's data axis, every device of every
  process (default: this process's first device); the last batch is padded, so one compiled
  program serves every batch. Example i's key is fold_in(key, i) whatever the split, so the
  numbers do not depend on the batch size or the number of devices and processes.
  Returns the outputs stacked over the data set as numpy arrays, on every process.
  `fast`: see `xla.jit`.
  """
  positive_int("eval.batch_size", batch_size)
  mesh = mesh or _default_mesh()
  devices = mesh_lib.data_size(mesh)
  batch_size = -(-batch_size // devices) * devices
  mine = slice(*mesh_lib.process_range(mesh, batch_size))  # this process's rows of a batch
  rows, replicated = mesh_lib.sharding(mesh, "data"), mesh_lib.sharding(mesh)
  fn = _batched(per_example, fast)
  params = jax.device_put(params, replicated)
  key_data = jax.device_put(np.asarray(jax.random.key_data(key)), replicated)
  outputs = []
  for start in range(0, len(data), batch_size):
    indices = np.minimum(np.arange(start, start + batch_size), len(data) - 1)
    local = lambda a, indices=indices: jax.make_array_from_process_local_data(
        rows, a[indices[mine]], (batch_size, *a.shape[1:]))
    out = fn(params, local(data), key_data, local(np.arange(len(data), dtype=np.int32)))
    count = min(batch_size, len(data) - start)
    outputs.append(jax.tree.map(lambda a, n=count: mesh_lib.gather(a)[:n], out))
    if progress is not None:
      progress(count)
  return jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)


def log_likelihood(model, params, data, key, *, num_samples=5000, chunk_size=500, batch_size=100,
                   repeats=1, progress=None, fast=True, mesh=None, diagnostics=True) -> dict:
  """The importance-sampled test log-likelihood over a data set, in nats per example.

  Returns {"mean": float, "std": float over repeats (0 for one), "repeats": [...],
  "per_example": [N] of the first repeat} and, with `diagnostics`, the first repeat's per-example
  "khat", "ess": [N] (`elbo_jax.psis`).
  """
  positive_int("eval.repeats", repeats)
  fn = _cached_estimate(model, num_samples, chunk_size, diagnostics)
  runs = [
      map_dataset(fn, params, data, jax.random.fold_in(key, r), batch_size=batch_size,
                  progress=progress, fast=fast, mesh=mesh)
      for r in range(repeats)
  ]
  means = [float(np.mean(r["log_likelihood"])) for r in runs]
  out = {"mean": float(np.mean(means)), "std": float(np.std(means)), "repeats": means,
         "per_example": runs[0]["log_likelihood"]}
  return out | {k: runs[0][k] for k in ("khat", "ess") if k in runs[0]}


@functools.lru_cache(maxsize=32)
def _cached_estimate(model, num_samples: int, chunk_size: int, diagnostics: bool):
  # One function object per (model, K, chunk), so evaluating many runs of one model compiles once.
  return importance_estimate(model, num_samples=num_samples, chunk_size=chunk_size,
                             diagnostics=diagnostics)


@functools.lru_cache(maxsize=32)
def _posterior_mean_fn(model, num_samples: int):
  def mean_fn(m, x, key):
    return m.posterior_mean(m.encode(x), key, num_samples)

  return lambda p, x, k: model.apply(p, x, k, method=mean_fn)


def posterior_means(model, params, data, key, *, batch_size=100, num_samples=1000,
                    mesh=None) -> np.ndarray:
  """E_q(z|x)[z] for every example: [N, D]; exact for Gaussian posteriors, Monte Carlo otherwise."""
  return map_dataset(_posterior_mean_fn(model, num_samples), params, data, key,
                     batch_size=batch_size, mesh=mesh)


def active_units(means: np.ndarray, threshold: float = 0.01) -> tuple[int, np.ndarray]:
  """Burda et al. 2015: unit u is active if Cov_x(E_q[z_u]) > threshold. means: [N, D]."""
  if len(means) < 2:
    raise ConfigError("active units need at least two examples to estimate Cov_x")
  variance = means.var(0)
  return int((variance > threshold).sum()), variance
