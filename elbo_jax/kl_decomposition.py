"""The KL term taken apart ("ELBO surgery": Hoffman & Johnson 2016; Chen et al. 2018, eq. 2).

For diagonal-Gaussian posteriors q(z | x_n) = N(mu_n, diag sigma_n^2), n = 1..N, the aggregate
posterior is the mixture q(z) = (1/N) sum_n q(z | x_n) and, for a factorised prior,

  E_n KL(q(z|x_n) || p(z)) = I_q(x; z) + TC(q(z)) + sum_j KL(q(z_j) || p(z_j)),
  E_n KL(q(z|x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)).

Every term is estimated at the same samples z ~ q(z | x_n) from the log-densities

  log q(z|x_n),  log q(z),  log q(z_j),  log p(z),  log p_j(z_j),

so the identities hold per sample, to rounding, not only in expectation. A non-factorised prior
adds one term, `prior_coupling` = E[sum_j log p_j(z_j) - log p(z)], zero for a factorised one.

`decompose_kl` evaluates q(z) over the whole data set, chunked with a running logsumexp so that
memory is [query_chunk, chunk_size, D], never [N, N, D]. `minibatch_terms` gives the training-time
estimators of Chen et al. (2018, section 4.1 and appendix C): minibatch-weighted sampling (MWS)
and minibatch-stratified sampling (MSS).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from elbo_jax import distributions, evaluation, posteriors, priors, results

TERMS = ("avg_kl", "mutual_info", "total_correlation", "dimwise_kl", "kl_aggregate",
         "prior_coupling")
MINIBATCH_METHODS = ("mws", "mss")


def standard_normal_per_dim(z):
  """log N(z_j; 0, 1) per dimension. z: [D]; returns [D]."""
  return -0.5 * (distributions.LOG_2PI + jnp.square(z))


def _terms(log_q_zx, log_qz, log_qz_dims, log_pz_dims, log_pz):
  """Per-sample terms from log q(z|x) [M], log q(z) [M], log q(z_j) [M, D], log p_j [M, D],
  log p(z) [M]. Returns {name: [M]} for the names in TERMS."""
  sum_log_qz_dims = log_qz_dims.sum(-1)
  sum_log_pz_dims = log_pz_dims.sum(-1)
  return {
      "avg_kl": log_q_zx - log_pz,
      "mutual_info": log_q_zx - log_qz,
      "total_correlation": log_qz - sum_log_qz_dims,
      "dimwise_kl": sum_log_qz_dims - sum_log_pz_dims,
      "kl_aggregate": log_qz - log_pz,
      "prior_coupling": sum_log_pz_dims - log_pz,
  }


def _prior_log_probs(z, log_prior_per_dim, log_prior):
  """log p_j(z_j): [M, D] and log p(z): [M] for z: [M, D]; log p(z) defaults to sum_j log p_j."""
  per_dim = jax.vmap(log_prior_per_dim)(z)
  joint = per_dim.sum(-1) if log_prior is None else jax.vmap(log_prior)(z)
  return per_dim, joint


def _pad_rows(x, multiple):
  pad = (-x.shape[0]) % multiple
  return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))


def _log_mixture(z, means, log_scales, chunk_size):
  """log q(z) [M] and log q(z_j) [M, D] for the mixture over all N rows of means, log_scales.

  z: [M, D]; means, log_scales: [N, D]. Scans the data set in chunks of chunk_size rows,
  accumulating with logaddexp, so memory is [M, chunk_size, D].
  """
  n, d = means.shape
  valid = _pad_rows(jnp.ones((n,), bool), chunk_size).reshape(-1, chunk_size)
  means_c = _pad_rows(means, chunk_size).reshape(-1, chunk_size, d)
  log_scales_c = _pad_rows(log_scales, chunk_size).reshape(-1, chunk_size, d)

  def step(carry, chunk):
    acc_joint, acc_dims = carry
    mean, log_scale, keep = chunk
    per_dim = distributions.diag_normal_log_prob_per_dim(z[:, None], mean[None], log_scale[None])
    per_dim = jnp.where(keep[None, :, None], per_dim, -jnp.inf)  # padded rows weigh nothing
    acc_joint = jnp.logaddexp(acc_joint, logsumexp(per_dim.sum(-1), axis=1))
    acc_dims = jnp.logaddexp(acc_dims, logsumexp(per_dim, axis=1))
    return (acc_joint, acc_dims), None

  init = (jnp.full(z.shape[:1], -jnp.inf), jnp.full(z.shape, -jnp.inf))
  (log_sum_joint, log_sum_dims), _ = jax.lax.scan(step, init, (means_c, log_scales_c, valid))
  return log_sum_joint - math.log(n), log_sum_dims - math.log(n)


@functools.partial(
    jax.jit, static_argnames=("log_prior_per_dim", "log_prior", "num_samples", "chunk_size"))
def decomposition_samples(key, means, log_scales, log_prior_per_dim=standard_normal_per_dim,
                          log_prior=None, num_samples=1, chunk_size=256):
  """Per-sample ELBO-surgery terms with q(z) the mixture over the whole data set.

  key: a PRNG key; means, log_scales: [N, D] (q(z|x_n) = N(means[n], exp(log_scales[n])^2));
  log_prior_per_dim: [D] -> [D], the prior's marginal log-densities log p_j(z_j);
  log_prior: [D] -> scalar, log p(z), or None for the factorised sum_j log p_j(z_j).
  Draws num_samples z ~ q(z|x_n) per n; queries and data are both taken chunk_size at a time.
  Returns {name: [N * num_samples]} for the names in TERMS; their means are the estimates.
  """
  n, d = means.shape
  eps = jax.random.normal(key, (n, num_samples, d), means.dtype)
  z = (means[:, None] + jnp.exp(log_scales)[:, None] * eps).reshape(-1, d)
  owner = jnp.repeat(jnp.arange(n), num_samples)
  log_q_zx = distributions.diag_normal_log_prob(z, means[owner], log_scales[owner])

  m = z.shape[0]
  z_chunks = _pad_rows(z, chunk_size).reshape(-1, chunk_size, d)
  log_qz, log_qz_dims = jax.lax.map(
      lambda zc: _log_mixture(zc, means, log_scales, chunk_size), z_chunks)
  log_qz, log_qz_dims = log_qz.reshape(-1)[:m], log_qz_dims.reshape(-1, d)[:m]
  log_pz_dims, log_pz = _prior_log_probs(z, log_prior_per_dim, log_prior)
  return _terms(log_q_zx, log_qz, log_qz_dims, log_pz_dims, log_pz)


def decompose_kl(key, means, log_scales, **kwargs):
  """The ELBO-surgery estimates {name: scalar} (means of `decomposition_samples`, same args)."""
  _check_posteriors(means, log_scales)
  for name in ("num_samples", "chunk_size"):
    if kwargs.get(name, 1) < 1:
      raise ValueError(f"{name} must be a positive integer; got {kwargs[name]}")
  samples = decomposition_samples(key, means, log_scales, **kwargs)
  return {name: jnp.mean(value) for name, value in samples.items()}


def _check_posteriors(means, log_scales):
  if means.ndim != 2 or means.shape != log_scales.shape:
    raise ValueError(f"means and log_scales must both be [N, D]; got {means.shape} and "
                     f"{log_scales.shape}")


def minibatch_log_weights(batch_size, dataset_size, method):
  """log w [M, M]: q(z_i) is estimated as sum_k w[i, k] q(z_i | x_k) within a minibatch.

  'mws' (minibatch-weighted sampling, Chen et al. 2018, eq. in section 4.1): w = 1 / (N M)
  everywhere. It is biased: in expectation over batches it equals
  (1/(N M)) [q(z_i|x_i) + (M-1)/(N-1) sum_{n != i} q(z_i|x_n)], not q(z_i).
  'mss' (minibatch-stratified sampling, Chen et al. 2018, appendix C.2): the point's own stratum
  has weight 1/N and the other M - 1 members, drawn without replacement, stand for the remaining
  N - 1 points with weight (N - 1) / (N (M - 1)) each, so E_batch[sum_k w q] = q(z_i) exactly.
  (The weights are derived here; the authors' reference code builds this matrix with an indexing
  bug reported in rtqichen/beta-tcvae pull request 1.)
  """
  m, n = batch_size, dataset_size
  if method not in MINIBATCH_METHODS:
    raise ValueError(f"method must be one of {MINIBATCH_METHODS}; got {method!r}")
  if not 1 <= m <= n or (method == "mss" and m < 2):
    raise ValueError(f"batch_size must be in [{2 if method == 'mss' else 1}, dataset_size={n}] "
                     f"for {method}; got {m}")
  if method == "mws":
    return jnp.full((m, m), -math.log(n * m))
  off_diagonal = math.log(n - 1) - math.log(n * (m - 1))
  return jnp.where(jnp.eye(m, dtype=bool), -math.log(n), off_diagonal)


@functools.partial(
    jax.jit, static_argnames=("dataset_size", "method", "log_prior_per_dim", "log_prior"))
def minibatch_terms(z, means, log_scales, dataset_size, method="mss",
                    log_prior_per_dim=standard_normal_per_dim, log_prior=None):
  """Per-example ELBO-surgery terms from one minibatch, for training objectives (beta-TCVAE).

  z: [M, D] with z[i] ~ q(z | x_i); means, log_scales: [M, D], the batch's posteriors;
  dataset_size: N, the size of the data set the batch was drawn from (uniformly, without
  replacement); method: 'mws' or 'mss' (see `minibatch_log_weights`). Returns {name: [M]} for
  the names in TERMS; the batch mean of each is the minibatch estimate.
  """
  log_w = minibatch_log_weights(z.shape[0], dataset_size, method)
  pair = distributions.diag_normal_log_prob_per_dim(z[:, None], means[None], log_scales[None])
  log_qz = logsumexp(pair.sum(-1) + log_w, axis=1)  # [M]
  log_qz_dims = logsumexp(pair + log_w[..., None], axis=1)  # [M, D]
  log_q_zx = jnp.diagonal(pair.sum(-1))
  log_pz_dims, log_pz = _prior_log_probs(z, log_prior_per_dim, log_prior)
  return _terms(log_q_zx, log_qz, log_qz_dims, log_pz_dims, log_pz)


# --- On a trained run's test set (results.json's "test" section) -------------------------------

@functools.lru_cache(maxsize=8)
def _encode_fn(model):
  # One function object per model, so evaluating many runs of one model compiles once.
  return lambda params, x, key: model.apply(params, x, method="encode")


@results.register("total_correlation", label="TC(q(z))", bars=True, also=(
    ("mutual_info", "I_q(x; z)"), ("dimwise_kl", "dimension-wise KL"),
    ("kl_aggregate", "KL(q(z) || p(z))")))
def test_set_terms(test: results.TestSet) -> dict:
  """The decomposition on the whole test set, q(z) the mixture over it: one z ~ q(z|x_n) per
  example (`eval.kl_decomposition`). Runs where it is exact only: a diagonal-Gaussian posterior
  (`posteriors.DiagonalGaussian`) and a Gaussian prior, whose marginals p_j(z_j) are known; {}
  otherwise (flows, full covariances, the two-layer model, mixture and VampPriors)."""
  model = test.model
  if not (test.config.eval.kl_decomposition
          and isinstance(getattr(model, "posterior", None), posteriors.DiagonalGaussian)
          and model.prior.is_gaussian):
    return {}
  q = evaluation.map_dataset(_encode_fn(model), test.params, test.x, test.key,
                             batch_size=test.config.eval.batch_size, mesh=test.mesh)
  if isinstance(model.prior, priors.StandardNormal):
    per_dim = standard_normal_per_dim  # a module-level function: one compilation for every run
  else:
    mean, log_scale = model.apply(test.params, method=lambda m: m.prior.gaussian_params())
    per_dim = functools.partial(distributions.diag_normal_log_prob_per_dim, mean=mean,
                                log_scale=log_scale)
  terms = decompose_kl(test.key, jnp.asarray(q["mean"]), jnp.asarray(q["log_scale"]),
                       log_prior_per_dim=per_dim)
  return {name: float(terms[name]) for name in ("mutual_info", "total_correlation", "dimwise_kl",
                                                "kl_aggregate")}
