"""Figures for runs and ablations, each saved as a PNG atomically; every function returns the path.

Figures are built with `matplotlib.figure.Figure` directly rather than pyplot: no global figure
state to leak across calls, no GUI backend, and PNGs render through Agg whatever backend the
process has selected.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import norm

from elbo_jax.io import atomic_writer

_DPI = 100
# Target long side of an image grid in pixels; small images are upscaled by an integer factor.
_GRID_PIXELS = 640


def image_grid(images, path, title=None, nrow=None, pad=1, pad_value=1.0):
  """Tiles images into one grid and saves it.

  images: [N, H, W, C] with C in {1, 3}, values in [0, 1] (clipped). nrow: images per row (the
  torchvision convention); default ceil(sqrt(N)). pad: pixels of `pad_value` between images.
  """
  return _save_grid(tile(images, nrow, pad, pad_value), path, title)


def tile(images, ncol=None, pad=1, pad_value=1.0):
  """images [N, H, W, C] (C in {1, 3}; clipped to [0, 1]) -> one array
  [rows*(H+pad)+pad, ncol*(W+pad)+pad, C], row-major; ncol defaults to ceil(sqrt(N))."""
  images = _check_images(images, "images")
  n, h, w, c = images.shape
  ncol = ncol or math.ceil(math.sqrt(n))
  nrows = math.ceil(n / ncol)
  grid = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), pad_value, np.float32)
  for i, image in enumerate(images):
    top, left = pad + (i // ncol) * (h + pad), pad + (i % ncol) * (w + pad)
    grid[top:top + h, left:left + w] = image
  return grid


def reconstructions(
    originals, recons, path, per_row=None, title="top: data, bottom: reconstruction"
):
  """Saves data images with their reconstructions directly below, in pairs of rows.

  originals, recons: [N, H, W, C], same shape. per_row: pairs per row, default min(N, 10).
  """
  return _save_grid(reconstruction_grid(originals, recons, per_row), path, title)


def reconstruction_grid(originals, recons, per_row=None):
  """The tiled array of `reconstructions`: data rows each followed by their reconstructions.

  originals, recons: [N, H, W, C], same shape, values in [0, 1]. Returns [rows, cols, C].
  """
  originals = _check_images(originals, "originals")
  recons = _check_images(recons, "recons")
  if originals.shape != recons.shape:
    raise ValueError(f"originals {originals.shape} and recons {recons.shape} differ in shape")
  n = len(originals)
  per_row = per_row or min(n, 10)
  # Blank (pad-coloured) fillers complete the last row so every original sits over its recon.
  fill = -n % per_row
  blank = np.ones((fill, *originals.shape[1:]), originals.dtype)
  originals = np.concatenate([originals, blank]).reshape(-1, per_row, *originals.shape[1:])
  recons = np.concatenate([recons, blank]).reshape(originals.shape)
  interleaved = np.stack([originals, recons], axis=1).reshape(-1, *originals.shape[2:])
  return tile(interleaved, per_row)


def latent_manifold(
    decode_mean_fn: Callable, path, n: int = 20, image_shape=(28, 28, 1), title=None
):
  """Decoded means over a grid in a 2-D latent space (Kingma & Welling 2013, Fig. 4).

  z runs over standard-normal quantiles norm.ppf(linspace(0.05, 0.95, n)) on both axes: z1 grows
  left to right, z2 bottom to top. decode_mean_fn: z [n*n, 2] -> images [n*n, *image_shape]
  (or flattened [n*n, prod(image_shape)]), values in [0, 1].
  """
  q = norm.ppf(np.linspace(0.05, 0.95, n)).astype(np.float32)
  z1, z2 = np.meshgrid(q, q[::-1])  # row 0 is the top of the picture, i.e. the largest z2
  z = np.stack([z1.ravel(), z2.ravel()], axis=-1)
  images = np.asarray(decode_mean_fn(z))
  if images.size != n * n * math.prod(image_shape):
    raise ValueError(
        f"decode_mean_fn returned shape {images.shape}; expected [{n * n}, *{tuple(image_shape)}]"
    )
  images = _check_images(images.reshape(n * n, *image_shape), "decoded means")
  title = title or f"decoded means, z on a {n}x{n} grid of N(0,1) quantiles 0.05..0.95"
  # No padding: the point of the figure is the continuity between neighbouring cells.
  return _save_grid(tile(images, n, pad=0, pad_value=0.0), path, title)


def training_curves(records: Sequence[dict], path, title=None):
  """ELBO against step for training and validation, plus its terms in a second panel if logged.

  records: the dicts of metrics.jsonl ({"step": int, name: float}). Panel 1: "train/elbo",
  "eval/elbo" and "test/elbo". Panel 2: every "<split>/kl" and "<split>/log_px_given_z" present
  (the names `objectives` gives the two ELBO terms). Absent keys are skipped.
  """
  elbo_keys = {"train/elbo": "train", "eval/elbo": "validation", "test/elbo": "test"}
  term_keys = {
      f"{split}/{term}": f"{label} {term_name}"
      for split, label in (("train", "train"), ("eval", "validation"))
      for term, term_name in (("kl", "KL(q||p)"), ("log_px_given_z", "E_q log p(x|z)"))
  }
  present = {k for r in records for k in r}
  panels = [elbo_keys] + ([term_keys] if present & term_keys.keys() else [])
  fig = Figure(figsize=(7, 3.2 * len(panels)), dpi=_DPI, layout="constrained")
  axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
  for ax, keys, ylabel in zip(axes, panels, ("ELBO (nats)", "ELBO terms (nats)")):
    plotted = []
    for key, label in keys.items():
      steps, values = _series(records, key)
      if len(steps):
        ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None, markersize=3)
        plotted.append(values)
    if plotted:
      # The first few steps sit hundreds of nats below the rest and would flatten every curve; the
      # y range starts at the 5% quantile instead (those points run off the bottom).
      values = np.concatenate(plotted)
      low, high = np.quantile(values, 0.05), values.max()
      margin = 0.05 * (high - low) or 1.0
      ax.set_ylim(low - margin, high + margin)
      ax.legend(loc="best", fontsize="small")
    else:
      ax.text(0.5, 0.5, "no ELBO values logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel("step")
  if title:
    fig.suptitle(title)
  return save_figure(fig, path)


def mutual_info_heatmap(matrix, factor_names: Sequence[str], path, title=None):
  """Each latent's mutual information with each factor (as in Chen et al. 2018): matrix [D, K]
  in nats, latents as rows, factors as columns, each cell annotated."""
  matrix = np.asarray(matrix, np.float64)
  d, k = matrix.shape
  fig = Figure(figsize=(1.6 + 0.9 * k, 1.4 + 0.35 * d), dpi=_DPI, layout="constrained")
  ax = fig.subplots()
  image = ax.imshow(matrix, cmap="viridis", aspect="auto", vmin=0.0)
  ax.set_xticks(range(k), factor_names, rotation=30, ha="right")
  ax.set_yticks(range(d), [f"z{j}" for j in range(d)])
  for (row, col), value in np.ndenumerate(matrix):
    ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
            color="white" if value < 0.6 * matrix.max() else "black")
  fig.colorbar(image, ax=ax, label="I(z_j; factor) [nats]")
  ax.set_title(title or "mutual information of each latent with each factor", fontsize=9)
  return save_figure(fig, path)


def khat_histogram(khat, ess, num_samples: int, path, threshold: float = 0.7, title=None):
  """Histogram of the per-example Pareto k-hat of the importance weights (left; the dashed line is
  `threshold`, above which an example's estimate is not reliable) and of ESS / K (right).

  khat, ess: [N]; nan k-hat (K too small for the fit) are left out and counted in the title, and
  so are the ESS of examples whose weights are not finite (a diverged model).
  """
  khat, ess = np.asarray(khat, np.float64), np.asarray(ess, np.float64)
  fitted = khat[np.isfinite(khat)]
  fig = Figure(figsize=(10, 3.6), dpi=_DPI, layout="constrained")
  left, right = fig.subplots(1, 2)
  if fitted.size:
    left.hist(fitted, bins=40, color="tab:blue", alpha=0.8)
    above = float(np.mean(fitted > threshold))
    left.axvline(threshold, ls="--", color="tab:red", label=f"{threshold:g}: {above:.1%} above")
    left.legend(fontsize="small")
  else:
    left.text(0.5, 0.5, f"K={num_samples} is too small to fit a Pareto tail", ha="center",
              va="center", transform=left.transAxes)
  left.set_xlabel("Pareto k-hat of the importance weights")
  left.set_ylabel("examples")
  share = ess[np.isfinite(ess) & (ess > 0)] / num_samples  # none where every weight is nan
  if share.size:
    bins = np.geomspace(share.min(), share.max(), 40) if share.min() < share.max() else 40
    right.hist(share, bins=bins, color="tab:green", alpha=0.8)
    right.set_xscale("log")
  else:
    right.text(0.5, 0.5, "no finite importance weights", ha="center", va="center",
               transform=right.transAxes)
  right.set_xlabel(f"ESS / K  (ESS = (sum w)^2 / sum w^2, K = {num_samples})")
  for ax in (left, right):
    ax.grid(alpha=0.3)
  missing = len(khat) - fitted.size
  fig.suptitle((title or f"importance weights of {len(khat)} examples")
               + (f" ({missing} without k-hat)" if missing else ""))
  return save_figure(fig, path)


def _check_images(images, name):
  """Returns images as float32 [N, H, W, C] clipped to [0, 1]; rejects other layouts."""
  images = np.asarray(images, dtype=np.float32)
  if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
    raise ValueError(f"{name} must be [N, H, W, C] with N >= 1 and C in {{1, 3}}, "
                     f"got {images.shape}")
  return np.clip(np.nan_to_num(images, nan=0.0), 0.0, 1.0)


def _save_grid(grid, path, title):
  """Saves a tiled image at an integer upscale (crisp pixels), with an optional title strip."""
  h, w, c = grid.shape
  scale = max(1, _GRID_PIXELS // max(h, w))
  if title:  # wrapped to the figure's width (about 6 pixels a character at 9 points)
    title = textwrap.fill(title, max(20, w * scale // 6))
  title_px = 16 + 14 * (title.count("\n") + 1) if title else 0
  fig_h = h * scale + title_px
  fig = Figure(figsize=(w * scale / _DPI, fig_h / _DPI), dpi=_DPI)
  ax = fig.add_axes((0, 0, 1, h * scale / fig_h))
  ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0,
            interpolation="nearest")
  ax.set_axis_off()
  if title:
    fig.text(0.5, 1 - 0.5 * title_px / fig_h, title, ha="center", va="center", fontsize=9)
  return save_figure(fig, path)


def _series(records, key):
  """Steps and finite values of `key` across the records that logged it."""
  pairs = [(r["step"], r[key]) for r in records if key in r and math.isfinite(r[key])]
  return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def save_figure(fig, path):
  path = os.fspath(path)
  with atomic_writer(path, "wb") as f:
    fig.savefig(f, format="png", dpi=_DPI)
  return path
