"""Reverse KL(q||p) seeks a mode, forward KL(p||q) covers all of them.

Fits one Gaussian q = N(mean, std^2) to a three-mode 1-D Gaussian mixture p from several initial
means, once per direction, and plots p with every fitted q. The ELBO's KL(q || p(z|x)) is the
reverse direction, which is why a unimodal q under-covers a multimodal posterior.

  python -m experiments.kl_direction --out kl_direction.png --seed 0 --num_inits 8

Both KLs are integrals over the real line, computed by quadrature on a fine fixed grid instead of
Monte Carlo: deterministic, exact to ~1e-6 here, and cheap in 1-D.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from absl import app, flags

from elbo_jax import distributions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after matplotlib.use: the backend must be set first

# p: weights, means, stds of the mixture. Modes are >= 7 component stds apart, so each is its own
# basin of the reverse KL, whose minimum there is q ~ that component with KL ~ -log(its weight).
# Closer modes (e.g. -4, 0.5, 4.5 with stds 0.6, 0.8, 0.5) add a broad spurious minimum straddling
# the middle mode, which obscures the point of the demo.
MIXTURE = (
    jnp.array([0.3, 0.45, 0.25]),
    jnp.array([-5.0, 0.5, 5.5]),
    jnp.array([0.5, 0.7, 0.5]),
)
# p has < 1e-30 of its mass outside the grid, and every reverse-KL q stays well inside it.
GRID = jnp.linspace(-15.0, 15.0, 6001)


def mixture_log_prob(x, mixture=MIXTURE):
  """log p(x) for the Gaussian mixture (weights [K], means [K], stds [K]). x: [...] -> [...]."""
  weights, means, stds = mixture
  per_component = distributions.diag_normal_log_prob_per_dim(
      x[..., None], means, jnp.log(stds)
  )
  return jax.nn.logsumexp(per_component + jnp.log(weights), axis=-1)


def mixture_moments(mixture=MIXTURE):
  """Exact mean and std of the mixture, i.e. the forward-KL optimum (scalars)."""
  weights, means, stds = mixture
  mean = jnp.sum(weights * means)
  var = jnp.sum(weights * (jnp.square(stds) + jnp.square(means - mean)))
  return mean, jnp.sqrt(var)


def _integrate(values):
  """Trapezoid rule over GRID along the last axis: [..., G] -> [...]."""
  dx = GRID[1] - GRID[0]
  return dx * (jnp.sum(values, -1) - 0.5 * (values[..., 0] + values[..., -1]))


def kl(direction, mean, log_std, mixture=MIXTURE):
  """KL between q = N(mean, exp(log_std)^2) and the mixture p, by quadrature on GRID.

  direction: "reverse" for KL(q || p), "forward" for KL(p || q). mean, log_std: [K] -> [K].
  """
  log_q = distributions.diag_normal_log_prob_per_dim(GRID, mean[:, None], log_std[:, None])
  log_p = mixture_log_prob(GRID, mixture)
  if direction == "reverse":
    return _integrate(jnp.exp(log_q) * (log_q - log_p))
  if direction == "forward":
    return _integrate(jnp.exp(log_p) * (log_p - log_q))
  raise ValueError(f"direction must be 'reverse' or 'forward', got {direction!r}")


def fit(direction, init_mean, init_log_std, mixture=MIXTURE, num_steps=3000, learning_rate=0.1):
  """Minimises `kl(direction, ...)` over (mean, log_std) from each initialisation with Adam.

  init_mean, init_log_std: [K], one independent fit per entry. Returns (mean [K], std [K], kl [K]).
  """
  # The fits share nothing: the summed loss has a block-diagonal Hessian and Adam is elementwise,
  # so one optimiser over [K]-vectors is exactly K separate runs, compiled once.
  def loss(params):
    return jnp.sum(kl(direction, params[0], params[1], mixture))

  # Decaying to zero removes Adam's constant-step jitter, so fits settle to ~1e-5 of the optimum.
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps))
  params = (jnp.asarray(init_mean, jnp.float32), jnp.asarray(init_log_std, jnp.float32))

  def step(carry, _):
    params, opt_state = carry
    updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=num_steps)
  mean, log_std = params
  return mean, jnp.exp(log_std), kl(direction, mean, log_std, mixture)


fit = jax.jit(fit, static_argnames=("direction", "num_steps"))


def initial_means(num_inits, seed):
  """Initial means [num_inits] spread evenly over [-6, 6], jittered by `seed` (std 0.1)."""
  jitter = 0.1 * jax.random.normal(jax.random.PRNGKey(seed), (num_inits,))
  return jnp.linspace(-6.0, 6.0, num_inits) + jitter


def run(out, seed=0, num_inits=8):
  """Fits both directions, prints the table, writes the figure to `out`. Returns the fits.

  Returns {"init_mean": [K], "reverse": (mean, std, kl), "forward": (mean, std, kl)}, each [K].
  """
  init_mean = initial_means(num_inits, seed)
  init_log_std = jnp.zeros(num_inits)
  results = {"init_mean": init_mean}
  for direction in ("reverse", "forward"):
    results[direction] = fit(direction, init_mean, init_log_std)

  p_mean, p_std = mixture_moments()
  print(f"p: modes at {np.asarray(MIXTURE[1]).tolist()}, "
        f"moments mean={float(p_mean):.4f} std={float(p_std):.4f}")
  # Each mode-locked reverse fit should have KL close to -log(weight of its mode).
  print("-log(mode weights) = " + ", ".join(f"{-math.log(w):.4f}" for w in MIXTURE[0].tolist()))
  print(f"{'direction':>9} {'init mean':>10} {'fit mean':>9} {'fit std':>8} {'final KL':>9}")
  for direction in ("reverse", "forward"):
    for row in zip(init_mean, *results[direction]):
      print(f"{direction:>9} " + " ".join(f"{float(v):{w}.4f}" for v, w in zip(row, (10, 9, 8, 9))))

  _plot(results, out)
  print(f"wrote {out}")
  return results


def _plot(results, out):
  grid = np.asarray(GRID)
  p = np.exp(np.asarray(mixture_log_prob(GRID)))
  colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(results["init_mean"])))
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
  titles = {
      "reverse": "Reverse KL(q || p): mode-seeking",
      "forward": "Forward KL(p || q): mass-covering (moment matching)",
  }
  for ax, direction in zip(axes, ("reverse", "forward")):
    ax.fill_between(grid, p, color="0.8", label="p (3-mode mixture)")
    means, stds = (np.asarray(a) for a in results[direction][:2])
    for color, init, mean, std in zip(colors, results["init_mean"], means, stds):
      q = np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
      ax.plot(grid, q, color=color, lw=1.5, label=f"q from init mean {float(init):+.1f}")
      ax.plot(float(init), 0.0, "^", color=color, ms=7, clip_on=False)
    distinct = len(np.unique(np.round(means, 2)))
    ax.set_title(f"{titles[direction]}\n{len(means)} inits (triangles) -> {distinct} distinct q")
    ax.set_xlabel("x")
    ax.set_xlim(-8, 8)
  axes[0].set_ylabel("density")
  axes[1].legend(fontsize=7, loc="upper right")
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  run(FLAGS.out, FLAGS.seed, FLAGS.num_inits)


FLAGS = flags.FLAGS

if __name__ == "__main__":
  # Defined only when run as a script: another experiment defining --out in the same process
  # (e.g. a test importing both) would otherwise raise DuplicateFlagError.
  flags.DEFINE_string("out", "kl_direction.png", "Path of the PNG to write.")
  flags.DEFINE_integer("seed", 0, "Seed for jittering the initial means.")
  flags.DEFINE_integer("num_inits", 8, "Number of initial means, spread over [-6, 6].")
  app.run(main)
