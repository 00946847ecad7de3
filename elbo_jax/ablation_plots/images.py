"""Figures that open each cell's trained model (its first finished seed): samples from every
prior beside the VampPrior's pseudo-inputs, samples and reconstructions per likelihood, and the
learned 2-D manifold. Images are the likelihood's mean, scaled to [0, 1] (`report.as_images`).
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from elbo_jax import plots, report
from elbo_jax.ablation_plots.base import first_seeds, load_runs, register
from elbo_jax.registry import ConfigError

NUM_PSEUDO_INPUTS = 100  # of the VampPrior's K, shown as images
NUM_RECONSTRUCTIONS = 8


def _show(ax, grid: np.ndarray, title: str) -> None:
  """Draws a tiled grid [H, W, C] in [0, 1] without axes."""
  ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0.0, vmax=1.0,
            interpolation="nearest")
  ax.set_title(title, fontsize="small")
  ax.set_axis_off()


def _pseudo_inputs(run) -> np.ndarray:
  """The VampPrior's pseudo-inputs [K, *data_shape], clipped into [0, 1] as the prior clips them."""
  return np.asarray(run.model.apply(run.params, method=lambda m: m.prior.pseudo_inputs()))


@register("prior_samples")
def prior_samples(ablation, rows, specs, workdir) -> str | None:
  """One panel of decoded samples from p(z) per cell, then, for each VampPrior cell, its learned
  pseudo-inputs u_k: images in data space, shown as they are, not decoded."""
  del rows
  panels = []
  for run in load_runs(first_seeds(specs)):
    # The samples of the run's own samples.png: as many, with the same key.
    sample_key, _ = report.figure_keys(run.spec.config)
    samples = report.sample_prior(run.model, run.params, sample_key, report.NUM_SAMPLES)
    panels.append((run.spec.cell.name, samples))
    if getattr(getattr(run.model, "prior", None), "mixes_posterior", False):
      u = _pseudo_inputs(run)
      shown = u[:NUM_PSEUDO_INPUTS]
      title = f"{run.spec.cell.name}: pseudo-inputs u_k\n(first {len(shown)} of {len(u)})"
      panels.append((title, shown))
  if not panels:
    return None
  fig = Figure(figsize=(2.8 * len(panels), 3.3), layout="constrained")
  for ax, (title, images) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
    _show(ax, plots.tile(images), title)
  fig.suptitle(f"{ablation.name}: decoded samples from each prior (first seed of each cell)")
  return plots.save_figure(fig, os.path.join(workdir, "prior_samples.png"))


@register("samples_and_reconstructions")
def samples_and_reconstructions(ablation, rows, specs, workdir) -> str | None:
  """One column per cell: decoded prior samples above test images, each over its reconstruction
  (one posterior draw, decoded to the likelihood's mean). The test images are what that cell's
  likelihood models (binarised as the evaluation binarises them, grey, or 8-bit)."""
  del rows
  chosen = first_seeds(specs)
  if not chosen:
    return None
  fig = Figure(figsize=(2.3 * len(chosen), 3.6), layout="constrained")
  axes = fig.subplots(2, len(chosen), squeeze=False, height_ratios=(4, 1.1))
  for (top, bottom), run in zip(axes.T, load_runs(chosen)):
    sample_key, recon_key = report.figure_keys(run.spec.config)
    test = report.eval_data(run.dataset, run.dataset.test,
                            report.eval_key(run.spec.config, "test_data"))[:NUM_RECONSTRUCTIONS]
    samples = report.sample_prior(run.model, run.params, sample_key, report.NUM_SAMPLES)
    _show(top, plots.tile(samples), run.spec.cell.name)
    recons = report.reconstruct(run.model, run.params, test, recon_key)
    _show(bottom, plots.reconstruction_grid(report.as_images(run.model, test), recons),
          "data / reconstruction")
  fig.suptitle(f"{ablation.name}: samples (top) and reconstructions (first seed of each cell)")
  return plots.save_figure(fig, os.path.join(workdir, "samples_and_reconstructions.png"))


def _two_latents(spec) -> bool:
  return spec.config.model.latent_dim == 2


def _check_manifold(ablation, specs) -> None:
  if not any(_two_latents(spec) for spec in specs):
    raise ConfigError("figure 'latent_manifold' needs a cell with model.latent_dim=2")


@register("latent_manifold", check=_check_manifold)
def latent_manifold(ablation, rows, specs, workdir) -> str | None:
  """The learned 2-D manifold (Kingma & Welling 2013, Figure 4) of the first cell with two latents:
  decoded means over a grid of N(0, 1) quantiles (`plots.latent_manifold`)."""
  del rows
  chosen = first_seeds(specs, keep=_two_latents)[:1]
  if not chosen:
    return None
  (run,) = load_runs(chosen)
  return plots.latent_manifold(
      lambda z: report.decode_mean(run.model, run.params, z),
      os.path.join(workdir, "latent_manifold.png"), image_shape=tuple(run.dataset.shape),
      title=f"{ablation.name}: the learned 2-D manifold, cell {run.spec.cell.name!r} "
            f"seed {run.spec.seed}")
