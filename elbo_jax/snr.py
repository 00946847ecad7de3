"""Gradient signal-to-noise ratio: SNR = |E[g]| / std(g) per parameter (Rainforth et al. 2018).

The expectation and standard deviation are over independent draws of an objective's randomness on
a fixed minibatch; g is the gradient of the batch-mean loss (`objectives.reduce_loss`), reported
for the inference and the generative network separately (`elbo_jax.vae.split_params`). With IWAE's
reparameterised gradient the inference network's SNR falls like 1/sqrt(K) while DReG's does not,
and the generative network's rises like sqrt(K) (Rainforth et al. 2018; Tucker et al. 2019).

Randomness: draw d uses `jax.random.split(key, num_draws)[d]`, and example i within it
`jax.random.split(draw_key, B)[i]`, so any draw can be reproduced on its own.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from matplotlib.figure import Figure

from elbo_jax import objectives, plots, psis, xla
from elbo_jax.vae import split_params

PARTS = ("inference", "generative")
NUM_SAMPLES = (1, 3, 10, 30, 100, 300, 1000)
# The per-network statistics of a sweep's rows (`gradient_snr`'s returns).
STATISTICS = ("snr_mean", "snr_median", "snr_rms", "snr_squared", "snr_squared_noise")


def _moments(g, mask):
  """Count, mean and summed squared deviations of the rows of g: [C, P] where mask: [C] is set."""
  n = mask.sum()
  mean = (mask[:, None] * g).sum(0) / jnp.maximum(n, 1)
  return n, mean, (mask[:, None] * jnp.square(g - mean)).sum(0)


def _merge(a, b):
  """Moments of the union of two sets of rows (Chan et al. 1979): no sum of squares that cancels."""
  n_a, mean_a, m2_a = a
  n_b, mean_b, m2_b = b
  n = n_a + n_b
  delta = mean_b - mean_a
  share = n_b / jnp.maximum(n, 1)  # an empty set (n = 0) changes nothing
  return n, mean_a + delta * share, m2_a + m2_b + jnp.square(delta) * n_a * share


def unbiased_snr_squared(half_a, half_b):
  """SNR^2 = (E g)^2 / Var g per parameter without the bias of |mean| / std, from the moments
  (n, mean, m2) of two independent halves of the draws.

  (E g)^2 is estimated by mean_a * mean_b, which is unbiased because the halves are independent,
  and 1 / Var g by (n - 4) / m2_within, m2_within the halves' summed squared deviations about their
  own means (n - 2 degrees of freedom): for Gaussian draws m2_within is independent of the means
  and E[(n - 4) / m2_within] = 1 / Var g, so the product is exactly unbiased; otherwise up to
  O(1 / n). It is negative where the signal is below the noise. Returns [P].
  """
  (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = half_a, half_b
  return (n_a + n_b - 4.0) * mean_a * mean_b / (m2_a + m2_b)


def _summary(half_a, half_b) -> dict:
  n, mean, m2 = (np.asarray(a) for a in _merge(half_a, half_b))
  std = np.sqrt(m2 / (float(n) - 1.0))
  with np.errstate(divide="ignore", invalid="ignore"):
    snr = np.abs(mean) / std
    squared_all = np.asarray(unbiased_snr_squared(half_a, half_b))
  finite, squared = snr[np.isfinite(snr)], squared_all[np.isfinite(squared_all)]
  # Below 6 draws the halves leave too few degrees of freedom for the unbiased form.
  mean_squared = float(squared.mean()) if squared.size and n >= 6 else float("nan")
  return {
      "snr_mean": float(finite.mean()) if finite.size else float("nan"),
      "snr_median": float(np.median(finite)) if finite.size else float("nan"),
      # Root of the unbiased mean over parameters of SNR^2 (0 where that estimate is negative).
      "snr_rms": math.sqrt(max(mean_squared, 0.0)) if n >= 6 else float("nan"),
      "snr_squared": mean_squared,
      "snr_squared_noise": snr_squared_noise(mean_squared, float(n)),
      "per_parameter": snr,
      "per_parameter_squared": squared_all,
      "gradient_mean": mean,
      "gradient_std": std,
  }


def snr_squared_noise(snr_squared: float, num_draws: float) -> float:
  """The standard deviation of the unbiased SNR^2 estimate of one parameter, sqrt(4 SNR^2 / N +
  4 / N^2) for Gaussian draws (the halves' means each have variance 2 Var g / N); by Cauchy-Schwarz
  the mean over parameters of SNR^2 (`snr_squared`) is at most this noisy whatever their
  correlations. An `snr_rms` below sqrt of it cannot be told from zero."""
  return 2.0 * math.sqrt(max(snr_squared, 0.0) / num_draws + 1.0 / num_draws**2)


def gradient_snr(per_example, params, batch, key, num_draws: int, split_fn=None,
                 chunk_size: int = 16) -> dict:
  """The SNR of `per_example`'s gradient estimator on a fixed minibatch, per network.

  Args:
    per_example: f(params, x, key) -> terms with a "loss" (any objective in `elbo_jax.objectives`).
    batch: [B, *data_shape], fixed across draws.
    num_draws: independent draws of the objective's randomness (at least 2).
    split_fn: a params or gradient pytree -> (inference, generative); by default
      `split_params(per_example.model, .)`.
    chunk_size: draws vmapped at once; the draws run in a `lax.scan` over chunks, so memory grows
      with chunk_size (times B times the objective's samples per example), not with num_draws.
  Returns:
    {"inference": part, "generative": part}, part = {"snr_mean", "snr_median": floats over the
    parameters whose SNR is finite, "snr_squared": the unbiased mean over parameters of SNR^2
    (`unbiased_snr_squared`, from the first and second halves of the draws; nan below 6 draws),
    "snr_squared_noise" its noise level, "snr_rms": sqrt(max(snr_squared, 0)), "per_parameter",
    "per_parameter_squared" (the unbiased SNR^2), "gradient_mean", "gradient_std": [P] in
    `ravel_pytree` order}. A parameter whose gradient never varies gets
    inf, or nan if it is 0. snr_mean and snr_median are biased upwards: for a gradient of mean
    zero they are about sqrt(2 / (pi num_draws)), not 0; snr_squared is not.
  """
  if num_draws < 2:
    raise ValueError(f"num_draws={num_draws} must be at least 2 to estimate a standard deviation")
  split_fn = split_fn or functools.partial(split_params, per_example.model)
  chunk = min(chunk_size, num_draws)
  num_chunks = -(-num_draws // chunk)
  pad = num_chunks * chunk - num_draws

  def draw_gradient(params, batch, draw_key):
    keys = jax.random.split(draw_key, len(batch))

    def loss(p):
      return objectives.reduce_loss(jax.vmap(per_example, in_axes=(None, 0, 0))(p, batch, keys))

    return [ravel_pytree(part)[0] for part in split_fn(jax.grad(loss)(params))]

  @xla.jit
  def moments(params, batch, key):
    keys = jax.random.split(key, num_draws)
    # The last chunk is filled up with repeated keys whose draws the mask leaves out.
    keys = jnp.concatenate([keys, keys[:pad]]).reshape(num_chunks, chunk, *keys.shape[1:])
    index = jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)

    def step(carry, chunk_inputs):
      chunk_keys, chunk_index = chunk_inputs
      grads = jax.vmap(draw_gradient, in_axes=(None, None, 0))(params, batch, chunk_keys)
      # Draws [0, N/2) and [N/2, N) are the two halves; padded draws are in neither.
      halves = (chunk_index < num_draws // 2,
                (chunk_index >= num_draws // 2) & (chunk_index < num_draws))
      return [tuple(_merge(c, _moments(g, mask)) for c, mask in zip(part, halves))
              for part, g in zip(carry, grads)], None

    sizes = [ravel_pytree(part)[0].size for part in split_fn(params)]
    init = [((jnp.zeros(()), jnp.zeros(p), jnp.zeros(p)),) * 2 for p in sizes]
    return jax.lax.scan(step, init, (keys, index))[0]

  return {part: _summary(*m) for part, m in zip(PARTS, moments(params, batch, key))}


def iwae_snr_sweep(model, params, batch, key, num_samples=NUM_SAMPLES,
                   estimators=objectives.ESTIMATORS, num_draws: int = 1000,
                   max_samples_in_flight: int = 2**15) -> list[dict]:
  """IWAE's gradient SNR for each K in `num_samples` and each estimator, one table row each.

  Every (K, estimator) uses the same `key`, so the estimators are compared on common draws. Draws
  are chunked so that at most max(16 draws, one draw) x B x K samples of z are in flight, which
  bounds memory at K = 1000. Rows: objective, estimator, num_samples, num_draws,
  "{inference,generative}_{STATISTICS}" and, the same for every estimator at a K, the importance
  weights' "khat_median", "khat_max" and "ess_median" over the B examples (`weight_diagnostics`).
  An SNR below about sqrt(2 / (pi num_draws)), the mean of |E-hat[g]| / std(g) for a gradient of
  mean zero, is noise in snr_mean and snr_median (not in snr_squared): IWAE's reparameterised
  encoder SNR reaches it near K = 300 with 2000 draws on the linear-Gaussian model.
  """
  rows = []
  for k in num_samples:
    chunk = max(1, min(16, max_samples_in_flight // (len(batch) * k)))
    weights = weight_diagnostics(model, params, batch, key, k)
    for estimator in estimators:
      per_example = objectives.iwae(model, num_samples=k, estimator=estimator)
      snr = gradient_snr(per_example, params, batch, key, num_draws, chunk_size=chunk)
      rows.append({"objective": "iwae", "estimator": estimator, "num_samples": k,
                   "num_draws": num_draws} | {
          f"{part}_{stat}": snr[part][stat] for part in PARTS for stat in STATISTICS
      } | weights)
  return rows


def weight_diagnostics(model, params, batch, key, num_samples: int) -> dict:
  """Median and max Pareto k-hat and median ESS of IWAE(K)'s importance weights over the batch:
  [B, ...] (`psis.diagnose`; k-hat is nan below K = 25). Heavy tails (k-hat > 0.5: infinite
  variance of w) are what keep a trained model's SNR from the papers' 1/sqrt(K) and sqrt(K)."""
  keys = jax.random.split(jax.random.fold_in(key, num_samples), len(batch))
  terms = jax.vmap(objectives.iwae(model, num_samples=num_samples), in_axes=(None, 0, 0))(
      params, batch, keys)
  diagnostics = jax.vmap(psis.diagnose)(terms["log_weights"])
  khat = np.asarray(diagnostics["khat"], np.float64)
  fitted = khat[np.isfinite(khat)]
  return {"khat_median": float(np.median(fitted)) if fitted.size else float("nan"),
          "khat_max": float(np.max(fitted)) if fitted.size else float("nan"),
          "ess_median": float(np.median(diagnostics["ess"]))}


def plot_snr(rows, path, statistic: str = "snr_mean", title: str | None = None) -> str:
  """SNR against K on log-log axes, one line per estimator; left inference, right generative.

  rows: as returned by `iwae_snr_sweep` (their k-hat and ESS, if any, are written under the
  generative panel's points). Dotted guides with slopes -1/2 (inference) and +1/2
  (generative), the rates Rainforth et al. 2018 derive for IWAE, start at the first reparam point;
  the dashed line (inference) is the floor sqrt(2 / (pi num_draws)) of |mean| / std, drawn for
  every statistic but the unbiased "snr_rms". Saved atomically as a PNG; returns the path.
  """
  # E|mean of N draws| / std for a zero-mean gradient: smaller SNRs cannot be told apart.
  floor = math.sqrt(2 / (math.pi * min(r["num_draws"] for r in rows)))
  fig = Figure(figsize=(10, 4), dpi=100, layout="constrained")
  axes = fig.subplots(1, 2)
  for ax, part, slope in zip(axes, PARTS, (-0.5, 0.5)):
    for estimator in dict.fromkeys(r["estimator"] for r in rows):
      members = sorted((r for r in rows if r["estimator"] == estimator),
                       key=lambda r: r["num_samples"])
      k = np.array([r["num_samples"] for r in members], float)
      ax.plot(k, [r[f"{part}_{statistic}"] for r in members], marker="o", label=estimator)
      if estimator == "reparam" and len(k) > 1:
        ax.plot(k, members[0][f"{part}_{statistic}"] * (k / k[0]) ** slope, ":", color="gray",
                label=f"∝ K^{slope:+g}")
    if part == "generative" and "khat_median" in rows[0]:
      _annotate_weights(ax, rows)
    # The reparameterised encoder's SNR is the one that reaches the floor of |mean| / std; the
    # unbiased snr_rms has no floor, only noise (its rows' snr_squared_noise).
    if part == "inference" and statistic != "snr_rms":
      ax.axhline(floor, ls="--", color="gray", lw=0.8, label="noise floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (importance samples)")
    ax.set_ylabel(f"gradient SNR ({statistic.removeprefix('snr_')} over parameters)")
    ax.set_title(f"{part} network")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
  if title:
    fig.suptitle(title)
  return plots.save_figure(fig, path)


def _annotate_weights(ax, rows) -> None:
  """Each K's median k-hat and ESS of the importance weights, at the bottom of the panel."""
  for row in {r["num_samples"]: r for r in rows}.values():
    khat = row["khat_median"]
    text = (f"k̂ {float(khat):.2f}\n" if math.isfinite(float(khat)) else "") + (
        f"ESS {float(row['ess_median']):.3g}")
    ax.annotate(text, (row["num_samples"], 0.02), xycoords=("data", "axes fraction"),
                ha="center", va="bottom", fontsize=7, color="dimgray")
