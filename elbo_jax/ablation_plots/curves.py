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


@register("elbo_vs_examples", check=_check_curves)
def elbo_vs_examples(ablation, rows, specs, workdir) -> str | None:
  """Kingma & Welling 2013, Figure 2: the training and the test ELBO against the number of
  training examples seen, on a log axis; one colour per cell, one line per finished seed."""
  del rows
  fig = Figure(figsize=(11, 4.4), layout="constrained")
  panels = fig.subplots(1, 2, sharey=True)
  plotted = []
  for i, cell in enumerate(cells(specs)):
    done = [s for s in specs if s.cell.name == cell.name and s.status == "done"]
    for j, spec in enumerate(done):
      records = read_metrics(spec.workdir)
      for ax, key in zip(panels, CURVES):
        x, y = examples_seen(records, key, spec.config.training.batch_size)
        ax.plot(x, y, color=f"C{i % 10}", lw=1.2, label=cell.name if j == 0 else None)
        plotted.append(y)
  values = np.concatenate(plotted) if plotted else np.zeros(0)
  if not values.size:
    return None
  # The first points sit hundreds of nats below the rest; start the axis at the 5% quantile.
  low, high = np.quantile(values, 0.05), values.max()
  margin = 0.05 * (high - low) or 1.0
  for ax, title in zip(panels, CURVES.values()):
    ax.set_xscale("log")
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("training examples seen")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
  panels[0].set_ylabel("ELBO (nats)")
  panels[1].legend(fontsize="small")
  fig.suptitle(f"{ablation.name}: the bound against training examples seen")
  return save_figure(fig, os.path.join(workdir, "elbo_vs_examples.png"))
