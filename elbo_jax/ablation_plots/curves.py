"""Figures drawn from the runs' metrics.jsonl: the bound against training examples seen."""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure

from elbo_jax.ablation_plots.base import cells, register
from elbo_jax.metrics import read_metrics
from elbo_jax.plots import save_figure
from elbo_jax.registry import ConfigError

CURVES = {"train/elbo": "training ELBO (mean over the steps since the previous point)",
          "test/elbo": "test ELBO (one sample, first eval.curve_num_test images, each epoch)"}


def examples_seen(records, key: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(examples seen [n], values [n]) of metric `key` in a run's metrics.jsonl records.

  A record at step s has seen s x batch_size training examples (the global batch); records
  without `key`, or with a non-finite value, are left out.
  """
  pairs = [(r["step"] * batch_size, r[key]) for r in records
           if key in r and math.isfinite(r[key])]
  x, y = zip(*pairs) if pairs else ((), ())
  return np.asarray(x, np.int64), np.asarray(y, float)


def _check_curves(ablation, specs) -> None:
  if any(not spec.config.eval.curve_num_test for spec in specs):
    raise ConfigError("figure 'elbo_vs_examples' draws the test ELBO logged every epoch; set "
                      "base.eval.curve_num_test > 0")


def first_epoch(records, batch_size: int) -> int:
  """The examples seen at the end of a run's first epoch: where its first test ELBO was logged
  (the test ELBO is logged after every epoch); 0 if none was."""
  x, _ = examples_seen(records, "test/elbo", batch_size)
  return int(x[0]) if x.size else 0


def y_limits(curves) -> tuple[float, float] | None:
  """The ELBO axis that shows every curve in full from the end of its first epoch on, padded by
  5%: the points before it sit hundreds of nats below the rest, and a quantile of all values
  together would cut off the curves of the worst cells (2 or 3 latents) instead. curves:
  [(x, y, first x to show in full)]; None if there is nothing to show."""
  shown = [y[x >= start] for x, y, start in curves]
  values = np.concatenate([v for v in shown if v.size] or [y for _, y, _ in curves] or [[]])
  if not values.size:
    return None
  low, high = float(values.min()), float(values.max())
  margin = 0.05 * (high - low) or 1.0
  return low - margin, high + margin


def _x_axis(ax, low: float, high: float) -> None:
  """A log axis where the curves span a decade or more (the paper's Figure 2 spans five); a
  linear one with a few ticks over a narrower span, whose log axis would label every minor tick
  (2x10^3, 2.2x10^3, ...) until the labels overlap."""
  from matplotlib.ticker import MaxNLocator

  if high >= 10 * low > 0:
    ax.set_xscale("log")
  else:
    ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))


def curves_figure(ablation, specs) -> Figure | None:
  """Kingma & Welling 2013, Figure 2: the training and the test ELBO against the number of
  training examples seen; one colour per cell, one line per finished seed. None until a run has
  finished."""
  fig = Figure(figsize=(11, 4.4), layout="constrained")
  panels = fig.subplots(1, 2, sharey=True)
  plotted = []
  for i, cell in enumerate(cells(specs)):
    done = [s for s in specs if s.cell.name == cell.name and s.status == "done"]
    for j, spec in enumerate(done):
      records = read_metrics(spec.workdir)
      batch_size = spec.config.training.batch_size
      for ax, key in zip(panels, CURVES):
        x, y = examples_seen(records, key, batch_size)
        ax.plot(x, y, color=f"C{i % 10}", lw=1.2, label=cell.name if j == 0 else None)
        plotted.append((x, y, first_epoch(records, batch_size)))
  limits = y_limits(plotted)
  if limits is None:
    return None
  xs = np.concatenate([x for x, _, _ in plotted])
  for ax, title in zip(panels, CURVES.values()):
    _x_axis(ax, float(xs.min()), float(xs.max()))
    ax.set_ylim(*limits)
    ax.set_xlabel("training examples seen")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
  panels[0].set_ylabel("ELBO (nats)")
  panels[1].legend(fontsize="small")
  fig.suptitle(f"{ablation.name}: the bound against training examples seen")
  return fig


@register("elbo_vs_examples", check=_check_curves)
def elbo_vs_examples(ablation, rows, specs, workdir) -> str | None:
  """`curves_figure` as elbo_vs_examples.png."""
  del rows
  fig = curves_figure(ablation, specs)
  return None if fig is None else save_figure(fig, os.path.join(workdir, "elbo_vs_examples.png"))
