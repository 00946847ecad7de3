"""Posterior families q(z|x): Flax modules mapping encoder features h to the parameters of q.

Chosen: hand-written Flax linen modules over the pure functions in `elbo_jax.distributions`.
distrax has no IAF bijector and breaks on JAX upgrades; TFP-on-JAX is a heavy dependency for four
small families. Each family is a few lines, and tests/test_posteriors_priors.py checks every log q
against scipy.stats or against a numerically computed Jacobian.

Interface (one example; D latents, S samples, H encoder features):
  __call__(h [..., H]) -> q            a dict pytree of parameters; leaves keep h's leading dims
  sample(q, key, S) -> z [S, D], log_q [S]
                                       reparameterised draws and their EXACT log q (flows: base log
                                       density minus the summed log|det J| of the flow steps)
  reparameterize(q, eps [S, D]) -> z, log_q
                                       the same map from given standard-normal noise
  log_prob(z [..., D], q) -> [...]     where `has_density`; q's leading dims broadcast with z's
  has_density                          True where log q(z|x) can be evaluated at any z (the
                                       Gaussian families; a flow knows it only at its own draws)
  is_gaussian                          True where q is Gaussian, with closed forms for
    mean(q) -> [..., D]                  E_q[z]
    kl_to_diag_normal(q, mean [D], log_scale [D]) -> (kl [...], kl_per_dim [..., D] or None)
                                         KL(q || N(mean, diag(exp(log_scale))^2))

Every log-scale (and the full family's log-diagonal) passes through `bound_log_scale`, a smooth clip
to (-LOG_SCALE_BOUND, LOG_SCALE_BOUND), inside `__call__`; see its docstring for the range.

`dtype` is the compute dtype of the heads and the flows' networks (`accelerator.compute_dtype`).
Their outputs are cast to float32 before anything is sampled or a log-density is evaluated: q and
the draws are float32 whatever it is, and so are the parameters.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from elbo_jax import distributions
from elbo_jax.registry import Registry, positive_int

POSTERIORS = Registry("posterior.name")

LOG_SCALE_BOUND = 10.0
IAF_SHIFT_BOUND = 1e4


def bound_log_scale(raw):
  """Smoothly maps a raw log-scale into (-LOG_SCALE_BOUND, LOG_SCALE_BOUND); shape-preserving.

  Why 10: scales in [4.5e-5, 2.2e4] cover any useful posterior, and everything stays finite in
  float32 even for encoder outputs of +-50: a KL between two bounded Gaussians needs at most
  exp(4 * 10) (float32 overflows past exp(88)). The lower end also matters for estimators that
  re-evaluate log q at sampled z (STL, DReG, the VampPrior): z - mean loses about 1e-7 relative
  precision in float32, and dividing that by a scale of exp(-20) would give noise of order 10 in
  the standardised residual; at exp(-10) it is about 1e-2 for |mean| up to about 10.
  Why tanh rather than a hard clip: a hard clip has zero gradient outside the range, so a saturated
  encoder head would never recover; tanh is the identity to first order near 0.
  """
  return LOG_SCALE_BOUND * jnp.tanh(raw / LOG_SCALE_BOUND)


def _standard_normal_log_prob(eps):
  """log N(eps; 0, I) summed over the last axis; eps [..., D] -> [...]."""
  return -0.5 * (distributions.LOG_2PI + jnp.square(eps)).sum(-1)


def _float32(head, h):
  """head(h), computed in the head's dtype, as float32 (see the module docstring)."""
  return head(h).astype(jnp.float32)


def _draw(q, key, num_samples: int):
  """Standard-normal noise [S, D] in q's dtype."""
  mean = q["mean"]
  return jax.random.normal(key, (num_samples, mean.shape[-1]), mean.dtype)


def _flow_log_prob_error(name: str):
  return NotImplementedError(
      f"{name}.log_prob: evaluating a flow posterior's density at an arbitrary z needs the inverse "
      "flow, which is not available; use sample(), which returns the exact log q of its draws"
  )


@POSTERIORS.register("diagonal_gaussian")
class DiagonalGaussian(nn.Module):
  """q(z|x) = N(mean, diag(exp(log_scale))^2).

  Attributes:
    latent_dim: D.
    dtype: compute dtype of the heads.
  q: {"mean": [..., D], "log_scale": [..., D]}.
  """

  latent_dim: int
  dtype: Any = jnp.float32
  has_density = True
  is_gaussian = True

  def setup(self):
    self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.log_scale_head = nn.Dense(self.latent_dim, dtype=self.dtype)

  def __call__(self, h):
    return {"mean": _float32(self.mean_head, h),
            "log_scale": bound_log_scale(_float32(self.log_scale_head, h))}

  def sample(self, q, key, num_samples: int):
    return self.reparameterize(q, _draw(q, key, num_samples))

  def reparameterize(self, q, eps):
    z = q["mean"] + jnp.exp(q["log_scale"]) * eps
    # log q written in eps so it is exact even where z - mean would lose precision.
    return z, _standard_normal_log_prob(eps) - q["log_scale"].sum(-1)

  def log_prob(self, z, q):
    return distributions.diag_normal_log_prob(z, q["mean"], q["log_scale"])

  def mean(self, q):
    return q["mean"]

  def kl_to_diag_normal(self, q, mean, log_scale):
    kl_per_dim = distributions.kl_diag_normal(q["mean"], q["log_scale"], mean, log_scale)
    return kl_per_dim.sum(-1), kl_per_dim


def _fill_tril(off_diagonal, log_diagonal):
  """Lower-triangular [..., D, D] from strictly-lower entries [..., D(D-1)/2] and log-diagonal."""
  d = log_diagonal.shape[-1]
  rows, cols = jnp.tril_indices(d, -1)
  tril = jnp.zeros(log_diagonal.shape + (d,), log_diagonal.dtype)
  tril = tril.at[..., rows, cols].set(off_diagonal)
  return tril + jnp.exp(log_diagonal)[..., None] * jnp.eye(d, dtype=log_diagonal.dtype)


# One example's log N(z; mean, L L^T), broadcast over leading dims with vmap instead of materialised
# copies of L (the VampPrior evaluates [S, 1, D] draws against [K, D, D] factors).
_tril_log_prob = jnp.vectorize(distributions.tril_normal_log_prob, signature="(d),(d),(d,d)->()")


@POSTERIORS.register("full_gaussian")
class FullGaussian(nn.Module):
  """q(z|x) = N(mean, L L^T), L lower-triangular.

  L's diagonal is exp(bound_log_scale(raw)): the same bounded range as the diagonal family, so the
  two behave alike for extreme encoder outputs (softplus would need a separate floor to stay > 0).
  Attributes:
    latent_dim: D.
    dtype: compute dtype of the heads.
  q: {"mean": [..., D], "scale_tril": [..., D, D]}.
  """

  latent_dim: int
  dtype: Any = jnp.float32
  has_density = True
  is_gaussian = True

  def setup(self):
    self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.log_diagonal_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    # Zero kernel: q starts out diagonal and learns correlations only where they pay off.
    self.off_diagonal_head = nn.Dense(
        self.latent_dim * (self.latent_dim - 1) // 2, kernel_init=nn.initializers.zeros,
        dtype=self.dtype,
    )

  def __call__(self, h):
    scale_tril = _fill_tril(
        _float32(self.off_diagonal_head, h), bound_log_scale(_float32(self.log_diagonal_head, h))
    )
    return {"mean": _float32(self.mean_head, h), "scale_tril": scale_tril}

  def sample(self, q, key, num_samples: int):
    return self.reparameterize(q, _draw(q, key, num_samples))

  def reparameterize(self, q, eps):
    scale_tril = q["scale_tril"]
    z = q["mean"] + eps @ scale_tril.T
    log_det = jnp.log(jnp.diagonal(scale_tril)).sum()
    return z, _standard_normal_log_prob(eps) - log_det

  def log_prob(self, z, q):
    return _tril_log_prob(z, q["mean"], q["scale_tril"])

  def mean(self, q):
    return q["mean"]

  def kl_to_diag_normal(self, q, mean, log_scale):
    # Not a sum over dimensions: the correlations couple them.
    return distributions.kl_tril_normal_diag_normal(q["mean"], q["scale_tril"], mean,
                                                    log_scale), None


def planar_u_hat(u, w):
  """The invertible planar-flow direction: u, w [..., D] -> u_hat [..., D] with w.u_hat > -1.

  u_hat = u + (m(w.u) - w.u) w / |w|^2 with m(a) = softplus(a) - 1, so w.u_hat = m(w.u).
  """
  wu = (w * u).sum(-1, keepdims=True)
  # m(a) - a = softplus(-a) - 1, written so because softplus(a) - 1 - a cancels for large a.
  return u + (jax.nn.softplus(-wu) - 1.0) * w / jnp.square(w).sum(-1, keepdims=True)


@POSTERIORS.register("planar_flow")
class PlanarFlow(nn.Module):
  """Diagonal Gaussian base followed by amortised planar flows (Rezende & Mohamed, 2015).

  Step k: z <- z + u_hat_k tanh(w_k . z + b_k), with u_hat_k = planar_u_hat(u_k, w_k) so that
  w_k . u_hat_k > -1 and the step is invertible (the paper's appendix). u, w, b come from Dense
  heads on h, one set per example; q keeps the unconstrained u so the log-det can use softplus(w.u)
  directly instead of recovering it from w . u_hat + 1, which cancels when w.u is very negative.
  Attributes:
    latent_dim: D.
    num_flows: K, the number of planar steps.
    dtype: compute dtype of the heads.
  q: {"mean": [..., D], "log_scale": [..., D], "u": [..., K, D], "w": [..., K, D], "b": [..., K]}.
  """

  latent_dim: int
  num_flows: int = 8
  dtype: Any = jnp.float32
  has_density = False
  is_gaussian = False

  def setup(self):
    positive_int("posterior.num_flows", self.num_flows)
    self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.log_scale_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.u_head = nn.Dense(self.num_flows * self.latent_dim, dtype=self.dtype)
    self.w_head = nn.Dense(self.num_flows * self.latent_dim, dtype=self.dtype)
    self.b_head = nn.Dense(self.num_flows, dtype=self.dtype)

  def __call__(self, h):
    shape = h.shape[:-1] + (self.num_flows, self.latent_dim)
    return {
        "mean": _float32(self.mean_head, h),
        "log_scale": bound_log_scale(_float32(self.log_scale_head, h)),
        "u": _float32(self.u_head, h).reshape(shape),
        "w": _float32(self.w_head, h).reshape(shape),
        "b": _float32(self.b_head, h),
    }

  def sample(self, q, key, num_samples: int):
    return self.reparameterize(q, _draw(q, key, num_samples))

  def reparameterize(self, q, eps):
    z = q["mean"] + jnp.exp(q["log_scale"]) * eps
    log_q = _standard_normal_log_prob(eps) - q["log_scale"].sum(-1)
    tiny = jnp.finfo(z.dtype).tiny
    for k in range(self.num_flows):
      u, w, b = q["u"][k], q["w"][k], q["b"][k]
      t = jnp.tanh(z @ w + b)  # [S]
      z = z + t[:, None] * planar_u_hat(u, w)
      # det J = 1 + (1 - t^2) w.u_hat = t^2 + (1 - t^2) softplus(w.u): non-negative terms, so no
      # cancellation; the floor matters only if both underflow (w.u below about -87 and t ~ 0).
      det = jnp.square(t) + (1.0 - jnp.square(t)) * jax.nn.softplus(w @ u)
      log_q = log_q - jnp.log(jnp.maximum(det, tiny))
    return z, log_q

  def log_prob(self, z, q):
    raise _flow_log_prob_error("PlanarFlow")


class _MaskedDense(nn.Module):
  """Dense layer whose kernel is multiplied by a fixed 0/1 mask [in, out] (MADE), in `dtype`."""

  mask: np.ndarray
  bias_init: nn.initializers.Initializer = nn.initializers.zeros
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), self.mask.shape)
    bias = self.param("bias", self.bias_init, (self.mask.shape[1],))
    kernel = (kernel * self.mask).astype(self.dtype)
    return x.astype(self.dtype) @ kernel + bias.astype(self.dtype)


class _MADE(nn.Module):
  """Two-hidden-layer MADE: (z [S, D], context [C]) -> (m [S, D], s [S, D]).

  Output d depends only on z_1..z_{d-1} (and the context). Hidden unit j has degree j mod D in
  0..D-1 and sees the inputs z_1..z_degree; degree-0 units see only the context, which is what the
  first output may depend on (and makes D = 1 work without a special case). The layers compute
  in `dtype`; m and s are float32.
  """

  latent_dim: int
  hidden: int
  dtype: Any = jnp.float32

  def setup(self):
    d = self.latent_dim
    in_degree = np.arange(1, d + 1)
    hidden_degree = np.arange(self.hidden) % d
    self.input_layer = _MaskedDense(
        (in_degree[:, None] <= hidden_degree[None, :]).astype(np.float32), dtype=self.dtype
    )
    self.context_layer = nn.Dense(self.hidden, use_bias=False, dtype=self.dtype)
    self.hidden_layer = _MaskedDense(
        (hidden_degree[:, None] <= hidden_degree[None, :]).astype(np.float32), dtype=self.dtype
    )
    out_mask = (hidden_degree[:, None] < in_degree[None, :]).astype(np.float32)
    self.m_layer = _MaskedDense(out_mask, dtype=self.dtype)
    # Kingma et al. (2016): start with s around +1 so sigmoid(s) is near 1 and each step is close
    # to the identity, which keeps early training stable.
    self.s_layer = _MaskedDense(out_mask, bias_init=nn.initializers.ones, dtype=self.dtype)

  def __call__(self, z, context):
    a = nn.elu(self.input_layer(z) + self.context_layer(context))
    a = nn.elu(self.hidden_layer(a))
    return _float32(self.m_layer, a), _float32(self.s_layer, a)


@POSTERIORS.register("iaf")
class IAF(nn.Module):
  """Diagonal Gaussian base followed by inverse autoregressive flow steps (Kingma et al., 2016).

  Step: (m, s) = MADE(z, context); z <- sigmoid(s) z + (1 - sigmoid(s)) m (the paper's LSTM-type
  update, stable because the new z is a convex combination); log|det J| = sum log sigmoid(s). The
  order of z is reversed between steps so every coordinate conditions on every other somewhere.
  Attributes:
    latent_dim: D.
    num_flows: number of IAF steps.
    hidden: width of each MADE's hidden layers, and the size of the context vector.
    dtype: compute dtype of the heads and the MADEs.
  q: {"mean": [..., D], "log_scale": [..., D], "context": [..., hidden]}.
  """

  latent_dim: int
  num_flows: int = 2
  hidden: int = 128
  dtype: Any = jnp.float32
  has_density = False
  is_gaussian = False

  def setup(self):
    positive_int("posterior.num_flows", self.num_flows)
    positive_int("posterior.hidden", self.hidden)
    self.mean_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.log_scale_head = nn.Dense(self.latent_dim, dtype=self.dtype)
    self.context_head = nn.Dense(self.hidden, dtype=self.dtype)
    self.steps = [_MADE(self.latent_dim, self.hidden, self.dtype) for _ in range(self.num_flows)]

  def __call__(self, h):
    return {
        "mean": _float32(self.mean_head, h),
        "log_scale": bound_log_scale(_float32(self.log_scale_head, h)),
        "context": _float32(self.context_head, h),
    }

  def sample(self, q, key, num_samples: int):
    return self.reparameterize(q, _draw(q, key, num_samples))

  def reparameterize(self, q, eps):
    z = q["mean"] + jnp.exp(q["log_scale"]) * eps
    log_q = _standard_normal_log_prob(eps) - q["log_scale"].sum(-1)
    for k, made in enumerate(self.steps):
      if k > 0:
        z = z[:, ::-1]
      m, s = made(z, q["context"])
      # z stays a convex combination of the base draw and the shifts, so bounding the shift keeps
      # |z| and log p(z) ~ -z^2 / 2 finite in float32 for any network output; an identity for
      # |m| << IAF_SHIFT_BOUND.
      m = IAF_SHIFT_BOUND * jnp.tanh(m / IAF_SHIFT_BOUND)
      gate = jax.nn.sigmoid(s)
      z = gate * z + (1.0 - gate) * m
      log_q = log_q - jax.nn.log_sigmoid(s).sum(-1)
    return z, log_q

  def log_prob(self, z, q):
    raise _flow_log_prob_error("IAF")
