"""The ELBO gap is exactly KL(q || p(z|x)), and closes as q reaches the true posterior.

On a random linear-Gaussian model (D=2 latents, P=5 observations) q moves along a straight path
from the prior N(0, I), a poor guess once x is observed, to the exact posterior: mean and Cholesky
factor are interpolated linearly in t in [0, 1]. At each t we plot log p(x), ELBO(q_t) and
KL(q_t || p(z|x)), all exact (`elbo_jax.linear_gaussian`).

  python -m experiments.elbo_gap --out elbo_gap.png --seed 0

Along this path the KL is convex in t with its minimum 0 at t = 1, so the gap shrinks monotonically.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from absl import app, flags

from elbo_jax import linear_gaussian as lg

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend must be set first

FINAL_GAP_TOL = 1e-4


def gap_path(key, D=2, P=5, num_points=101):
  """log p(x), ELBO and KL(q_t || p(z|x)) along the prior -> posterior path.

  Draws a model with `lg.random_model` and one x from it. Returns a dict of [num_points] arrays:
  "t", "log_px", "elbo", "kl", plus the model's noise std "s" (scalar).
  """
  key_model, key_z, key_eps = jax.random.split(key, 3)
  W, b, s = lg.random_model(key_model, D, P)
  x = W @ jax.random.normal(key_z, (D,)) + b + s * jax.random.normal(key_eps, (P,))

  post_mean, post_cov = lg.true_posterior(x, W, b, s)
  post_tril = jnp.linalg.cholesky(post_cov)
  start_mean, start_tril = jnp.zeros(D), jnp.eye(D)

  def at(t):
    # Interpolating Cholesky factors (not covariances) makes L_post^{-1} L_t affine in t with a
    # positive diagonal, so the KL is convex in t and the gap falls monotonically to 0.
    mean = (1.0 - t) * start_mean + t * post_mean
    tril = (1.0 - t) * start_tril + t * post_tril
    cov = tril @ tril.T
    return lg.elbo(x, W, b, s, mean, cov), lg.kl_gaussian(mean, cov, post_mean, post_cov)

  t = jnp.linspace(0.0, 1.0, num_points)
  elbo, kl = jax.vmap(at)(t)
  log_px = jnp.full_like(t, lg.log_evidence(x, W, b, s))
  return {"t": t, "log_px": log_px, "elbo": elbo, "kl": kl, "s": s}


gap_path = jax.jit(gap_path, static_argnames=("D", "P", "num_points"))


def run(out, seed=0):
  """Computes the path, prints the table, writes the figure to `out`. Returns `gap_path`'s dict."""
  path = gap_path(jax.random.PRNGKey(seed))
  t, log_px, elbo, kl = (np.asarray(path[k], np.float64) for k in ("t", "log_px", "elbo", "kl"))
  gap = log_px - elbo

  print(f"linear-Gaussian model D=2, P=5, noise std s={float(path['s']):.4f}")
  print(f"{'t':>5} {'log p(x)':>10} {'ELBO':>10} {'KL(q||post)':>12} {'log p(x)-ELBO':>14}")
  for i in range(0, len(t), max(1, (len(t) - 1) // 10)):
    print(f"{t[i]:5.2f} {log_px[i]:10.4f} {elbo[i]:10.4f} {kl[i]:12.6f} {gap[i]:14.6f}")
  print(f"final gap log p(x) - ELBO at t=1: {gap[-1]:.2e} (KL {kl[-1]:.2e})")
  # The identity log p(x) = ELBO + KL, up to float32 rounding, along the whole path.
  print(f"max |gap - KL| over the path: {np.max(np.abs(gap - kl)):.2e}")
  assert abs(gap[-1]) < FINAL_GAP_TOL, f"final gap {gap[-1]:.2e} >= {FINAL_GAP_TOL}"

  _plot(t, log_px, elbo, kl, out)
  print(f"wrote {out}")
  return path


def _plot(t, log_px, elbo, kl, out):
  fig, (ax_bound, ax_gap) = plt.subplots(1, 2, figsize=(11, 4.2))
  ax_bound.plot(t, log_px, "k--", label="log p(x) (exact)")
  ax_bound.plot(t, elbo, color="C0", lw=2, label="ELBO(q_t)")
  ax_bound.fill_between(t, elbo, log_px, color="C0", alpha=0.15, label="gap")
  ax_bound.set_title("The ELBO rises to log p(x)")
  ax_bound.set_ylabel("nats")
  ax_bound.legend(loc="lower right")

  ax_gap.plot(t, kl, color="C3", lw=2, label="KL(q_t || p(z|x))")
  ax_gap.plot(t[::5], (log_px - elbo)[::5], "o", color="k", ms=4, mfc="none",
              label="log p(x) - ELBO(q_t)")
  ax_gap.set_title("The gap is exactly the KL to the posterior")
  ax_gap.set_ylabel("nats")
  ax_gap.legend(loc="upper right")
  for ax in (ax_bound, ax_gap):
    ax.set_xlabel("t   (q_0 = prior N(0, I),  q_1 = true posterior)")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  run(FLAGS.out, FLAGS.seed)


FLAGS = flags.FLAGS

if __name__ == "__main__":
  # Defined only when run as a script: another experiment defining --out in the same process
  # (e.g. a test importing both) would otherwise raise DuplicateFlagError.
  flags.DEFINE_string("out", "elbo_gap.png", "Path of the PNG to write.")
  flags.DEFINE_integer("seed", 0, "Seed for the random model and the observed x.")
  app.run(main)
