"""Figures drawn from results.csv alone: bars of any tabulated metric, the rate-distortion plane."""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure

from elbo_jax.ablation_plots.base import cells as _cells
from elbo_jax.ablation_plots.base import register
from elbo_jax.ablation_plots.base import values as _values
from elbo_jax.plots import save_figure
from elbo_jax.results import METRICS
from elbo_jax.tables import references


@register("metric_bars")
def metric_bars(ablation, rows, specs, workdir) -> str:
  """`metrics_figure` as metrics.png."""
  return save_figure(metrics_figure(ablation, rows, specs), os.path.join(workdir, "metrics.png"))


def metrics_figure(ablation, rows, specs) -> Figure:
  """One panel per tabulated metric, a column per cell: each seed a dot, the published number (where
  it compares with the runs, `tables.references`) a red cross, and the mean over seeds drawn by
  what the metric is (`Metric.bars`). A magnitude (active units, KL, rate, the gap) gets a bar
  from zero, so that bar lengths compare as ratios. A log-likelihood, ELBO or distortion gets a
  square with a +-1 std error bar on an axis fitted to the values: its differences of a few nats
  sit some 100 nats from zero, where bars from zero would flatten them and bars from anywhere
  else would misstate their ratios."""
  cells = [c.name for c in _cells(specs)]
  fig = Figure(figsize=(max(6.0, 0.6 * len(cells) + 2), 2.6 * len(ablation.metrics)),
               layout="constrained")
  axes = fig.subplots(len(ablation.metrics), 1, squeeze=False)[:, 0]
  refs, _ = references(ablation, specs)
  x = np.arange(len(cells))
  for ax, metric in zip(axes, ablation.metrics):
    bars = METRICS.get(metric).bars
    values = [_values(rows, c, metric) for c in cells]
    means = np.array([v.mean() if len(v) else math.nan for v in values])
    stds = np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in values])
    if bars:
      ax.bar(x, means, color="0.8", edgecolor="0.3", label="mean")
      ax.axhline(0.0, color="0.3", lw=0.8)
    else:
      ax.errorbar(x, means, yerr=stds, fmt="s", color="k", ms=5, capsize=3, label="mean ± std")
    offset = 0.0 if bars else 0.18  # beside the mean's error bar, not on it
    for i, v in enumerate(values):
      ax.plot(np.full(len(v), i + offset), v, "o", color="C0", ms=4, alpha=0.8,
              label="seeds" if i == 0 else None)
    paper = [(i, refs[c][metric]) for i, c in enumerate(cells) if metric in refs.get(c, {})]
    if paper:
      ax.plot(*zip(*paper), "x", color="C3", ms=9, mew=2, label="published")
    limits = value_limits(values, [p for _, p in paper] + list(means - stds) + list(means + stds),
                          from_zero=bars)
    if limits:
      ax.set_ylim(*limits)
    ax.set_ylabel(METRICS.get(metric).label)
    ax.set_xticks(x, cells, rotation=30, ha="right", fontsize="small")
    ax.set_xlim(-0.6, len(cells) - 0.4)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # off the data
  fig.suptitle(f"{ablation.name}: each seed (dots) and the mean over seeds,\n"
               "as a bar from zero (magnitudes) or a square ± 1 std (the rest)")
  return fig


def value_limits(values, published, from_zero: bool = False) -> tuple[float, float] | None:
  """The y-range that shows every seed's dot and published cross (and zero, for bars from zero),
  padded by 15% (not below a zero the bars start at); None if there is nothing finite to show.
  values: per cell, an array over seeds."""
  finite = [float(v) for vs in values for v in vs if math.isfinite(v)]
  finite += [float(p) for p in published if math.isfinite(p)]
  if not finite:
    return None
  low, high = min(finite), max(finite)
  if from_zero:
    low, high = min(low, 0.0), max(high, 0.0)
  pad = 0.15 * (high - low) or 1.0
  return (low if from_zero and low == 0.0 else low - pad,
          high if from_zero and high == 0.0 else high + pad)


def _beta(cell) -> float:
  return float(cell.overrides.get("objective.beta", 1.0))


@register("rate_distortion")
def rate_distortion(ablation, rows, specs, workdir) -> str:
  """Alemi et al. 2018's plane: distortion against rate, one point per beta (seeds as dots, the
  mean with a std cross), lines of equal ELBO (rate + distortion = const), beta = 1 starred; and
  active units against beta."""
  cells = sorted(_cells(specs), key=_beta)
  fig = Figure(figsize=(11, 4.6), layout="constrained")
  plane, units = fig.subplots(1, 2, width_ratios=(1.4, 1))
  colors = {c.name: f"C{i % 10}" for i, c in enumerate(cells)}
  points = []
  for cell in cells:
    rate, dist = _values(rows, cell.name, "rate"), _values(rows, cell.name, "distortion")
    if not len(rate):
      continue
    color = colors[cell.name]
    plane.plot(rate, dist, "o", color=color, ms=3, alpha=0.6)
    plane.errorbar(rate.mean(), dist.mean(), xerr=rate.std(), yerr=dist.std(), fmt="s",
                   color=color, ms=6, capsize=2, label=f"β = {_beta(cell):g}")
    if _beta(cell) == 1.0:
      plane.plot(rate.mean(), dist.mean(), "*", color="k", ms=16, mfc="none", mew=1.5,
                 label="β = 1 (the ELBO)")
    points += list(zip(rate, dist))
  if points:
    r, d = np.array(points).T
    totals = r + d
    low, high = totals.min(), totals.max()
    span = np.linspace(0, max(r.max(), d.max()) * 1.1, 2)
    for level in np.linspace(low, high + 0.25 * (high - low or 1.0), 5):
      plane.plot(span, level - span, "--", color="0.6", lw=0.8)
      plane.annotate(f"−ELBO = {level:.0f}", (0.02 * r.max(), level - 0.02 * r.max()),
                     fontsize=7, color="0.4")
    plane.set_xlim(0, r.max() * 1.1 + 1)
    plane.set_ylim(max(0.0, d.min() - 0.15 * (d.max() - d.min() + 1)),
                   d.max() + 0.15 * (d.max() - d.min() + 1))
  plane.set_xlabel("rate = E_x KL(q(z|x) || p(z))  (nats)")
  plane.set_ylabel("distortion = −E_x E_q log p(x|z)  (nats)")
  plane.set_title("rate–distortion plane (test set); dashed: equal ELBO")
  plane.legend(fontsize="small", ncols=2)
  plane.grid(alpha=0.3)
  betas, means, stds = [], [], []
  for cell in cells:
    v = _values(rows, cell.name, "active_units")
    if len(v):
      units.plot(np.full(len(v), _beta(cell)), v, "o", color=colors[cell.name], ms=3, alpha=0.6)
      betas.append(_beta(cell))
      means.append(v.mean())
      stds.append(v.std())
  if betas:
    units.errorbar(betas, means, yerr=stds, color="k", marker="s", ms=4, capsize=2)
  units.set_xscale("log")
  units.set_xlabel("β (KL weight)")
  units.set_ylabel("active units (Cov_x E_q[z_u] > 0.01)")
  units.set_title("latents the KL weight leaves in use")
  units.grid(alpha=0.3, which="both")
  return save_figure(fig, os.path.join(workdir, "rate_distortion.png"))
