"""Importance-weight diagnostics: Pareto k-hat and the effective sample size (Vehtari et al.,
"Pareto smoothed importance sampling", 2015/2024).

For K weights w_k = p(x, z_k) / q(z_k|x):
  ESS   = (sum_k w_k)^2 / sum_k w_k^2, between 1 (one weight dominates) and K (equal weights);
  k-hat = the shape of a generalised Pareto distribution fitted (Zhang & Stephens 2009, with
          Vehtari et al.'s weak prior towards 0.5) to the M = ceil(min(K / 5, 3 sqrt(K))) largest
          weights minus the (M+1)-th largest. The weights have finite moments of order < 1 / k:
          above 0.5 their variance is infinite, above 0.7 an importance-sampled estimate is not
          reliable at any practical K, above 1 not even its mean exists.
Everything here is jax.numpy for ONE example and runs inside jit: `stream_init / stream_update /
stream_result` keep a running log-sum-exp of w and w^2 and a running top-(M+1) of the log
weights, so the evaluator's chunks over K (`evaluation.importance_estimate`) cost no more memory
than the estimate alone; `diagnose` does the same from all the log weights at once, e.g. the
`log_weights` term of an IWAE-family objective (`jax.vmap(psis.diagnose)(terms["log_weights"])`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

KHAT_THRESHOLD = 0.7  # Vehtari et al.: above it the estimate is not reliable
MIN_TAIL = 5          # fewer tail weights leave the fit undefined (k-hat is nan)
# `experiments.evaluate` warns when more than this share of the examples is above the threshold.
WARN_SHARE = 0.1


def tail_size(num_samples: int) -> int:
  """M = ceil(min(K / 5, 3 sqrt(K))): the largest weights the Pareto fit uses (Vehtari et al.)."""
  return int(math.ceil(min(num_samples / 5.0, 3.0 * math.sqrt(num_samples))))


def gpd_shape(tail):
  """The generalised Pareto shape k of positive exceedances tail: [M] sorted ascending.

  Zhang & Stephens 2009's empirical Bayes estimate (a quadrature over 30 + sqrt(M) values of
  b = -k / sigma, weighted by their profile likelihood), then Vehtari et al.'s prior: k is shrunk
  towards 0.5 as if by 10 more observations. Scale-invariant, so `tail` may be in any units.
  """
  n = tail.shape[-1]
  m = 30 + int(math.sqrt(n))
  grid = 1.0 - np.sqrt(m / (np.arange(1, m + 1) - 0.5))  # [m]
  b = 1.0 / tail[-1] + jnp.asarray(grid, tail.dtype) / (3.0 * tail[int(n / 4 + 0.5) - 1])
  k = jnp.log1p(-b[:, None] * tail).mean(-1)  # [m]
  profile = n * (jnp.log(-b / k) - k - 1.0)
  weights = jax.nn.softmax(profile)
  # As the reference implementation: quadrature points of negligible weight are dropped.
  weights = jnp.where(weights >= 10 * jnp.finfo(tail.dtype).eps, weights, 0.0)
  b_post = jnp.sum(b * weights) / jnp.sum(weights)
  k_post = jnp.log1p(-b_post * tail).mean()
  return (n * k_post + 10 * 0.5) / (n + 10)


def khat_of_top(top):
  """k-hat from the M+1 largest log weights, top: [M+1] in descending order; nan if M < 5."""
  if top.shape[-1] - 1 < MIN_TAIL:
    return jnp.asarray(jnp.nan, top.dtype)
  cutoff, tail = top[-1], top[-2::-1]  # the threshold, then the M exceedances ascending
  excess = tail - cutoff
  # log(w - w_cutoff) up to a constant: log(expm1(excess)), stable for small and large excess;
  # the fit is scale-invariant, so each example's largest exceedance is scaled to 1.
  log_excess = excess + jnp.log(-jnp.expm1(-excess))
  return gpd_shape(jnp.exp(log_excess - log_excess[-1]))


class Stream(NamedTuple):
  """Running sums over chunks of log weights: max, sum of w / e^max, sum of w^2 / e^(2 max) and
  the top M+1 log weights (descending; empty when diagnostics are off)."""

  max: jax.Array
  sum_w: jax.Array
  sum_w2: jax.Array
  top: jax.Array


def stream_init(num_samples: int, diagnostics: bool = True, dtype=jnp.float32) -> Stream:
  """An empty stream for K = num_samples weights; without diagnostics it keeps only the sum."""
  size = tail_size(num_samples) + 1 if diagnostics else 0
  return Stream(jnp.asarray(-jnp.inf, dtype), jnp.zeros((), dtype), jnp.zeros((), dtype),
                jnp.full((size,), -jnp.inf, dtype))


def stream_update(state: Stream, log_w) -> Stream:
  """Adds a chunk log_w: [C] (-inf entries are padding and count for nothing)."""
  new_max = jnp.maximum(state.max, log_w.max())
  # Rescale the running sums to the new maximum: the streaming form of logsumexp.
  scale = jnp.exp(state.max - new_max)
  shifted = log_w - new_max
  sum_w = state.sum_w * scale + jnp.exp(shifted).sum()
  if not state.top.shape[-1]:
    return state._replace(max=new_max, sum_w=sum_w)
  sum_w2 = state.sum_w2 * jnp.square(scale) + jnp.exp(2.0 * shifted).sum()
  top = jax.lax.top_k(jnp.concatenate([state.top, log_w]), state.top.shape[-1])[0]
  return Stream(new_max, sum_w, sum_w2, top)


def stream_result(state: Stream, num_samples: int) -> dict:
  """{"log_likelihood": log (1/K) sum w} and, with diagnostics, {"khat", "ess"}: scalars."""
  out = {"log_likelihood": state.max + jnp.log(state.sum_w) - math.log(num_samples)}
  if state.top.shape[-1]:
    out |= {"khat": khat_of_top(state.top), "ess": jnp.square(state.sum_w) / state.sum_w2}
  return out


def diagnose(log_w) -> dict:
  """The same as the stream, from all the log weights at once, log_w: [K]: {"log_likelihood",
  "khat", "ess"}, scalars. log_likelihood is log (1/K) sum_k w_k, e.g. the IWAE bound."""
  num_samples = log_w.shape[-1]
  log_sum = jax.nn.logsumexp(log_w)
  top = jnp.sort(log_w)[::-1][:tail_size(num_samples) + 1]
  return {"log_likelihood": log_sum - math.log(num_samples), "khat": khat_of_top(top),
          "ess": jnp.exp(2.0 * log_sum - jax.nn.logsumexp(2.0 * log_w))}


def summary(khat: np.ndarray, ess: np.ndarray, num_samples: int) -> dict:
  """results.json's summary of per-example k-hat and ESS: [N] each (k-hat nan if K is too small
  for the fit)."""
  khat, ess = np.asarray(khat, np.float64), np.asarray(ess, np.float64)
  fitted = khat[np.isfinite(khat)]
  out = {"khat_median": None, "khat_max": None, "khat_share_above_0.7": None,
         "khat_tail_size": tail_size(num_samples),
         "ess_median": float(np.median(ess)), "ess_min": float(np.min(ess)),
         "ess_median_share_of_k": float(np.median(ess)) / num_samples}
  if fitted.size:
    out |= {"khat_median": float(np.median(fitted)), "khat_max": float(np.max(fitted)),
            "khat_share_above_0.7": float(np.mean(fitted > KHAT_THRESHOLD)),
            # The examples whose estimates to distrust first: indices into the evaluated set.
            "khat_worst_examples": np.argsort(-np.where(np.isfinite(khat), khat, -np.inf))[
                :10].tolist()}
  return out
