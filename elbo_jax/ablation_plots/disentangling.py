"""Disentangling methods against their strength (Chen et al. 2018's MIG-against-beta comparison),
and how much of each score the method explains next to the seed (Locatello et al. 2019)."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

from elbo_jax import objectives
from elbo_jax.ablation_plots.base import cells, register, values
from elbo_jax.plots import save_figure
from elbo_jax.results import METRICS


def method_and_strength(cell, base) -> tuple[str, float]:
  """A cell's method (its objective's name) and its strength: the objective's first traced
  option (beta_tcvae's tc_weight, dip_vae's lambda_od), or the KL weight beta for an objective
  without one (the beta-VAE)."""
  method = cell.overrides.get("objective.name", base.objective.name)
  option = strength_option(method)
  return method, float(cell.overrides.get(f"objective.{option}", base.objective[option]))


def strength_option(method: str) -> str:
  """The objective option that `method_and_strength` reads as the method's strength."""
  return (*objectives.traced_options(method), "beta")[0]


def variance_shares(groups: dict[tuple[str, float], np.ndarray]) -> dict[str, float]:
  """The share of a score's variance over all runs that the method explains, that the cell
  (method and strength) explains, and that is left to the seed (within cells): eta^2 of a one-way
  analysis of variance. groups: {(method, strength): the runs' values}."""
  everything = np.concatenate(list(groups.values()))
  total = np.sum(np.square(everything - everything.mean()))
  if not total:
    return {"method": 0.0, "cell": 0.0, "seed": 0.0}

  def between(keyed):
    return sum(len(v) * (v.mean() - everything.mean()) ** 2 for v in keyed.values()) / total

  by_method: dict[str, list] = {}
  for (method, _), v in groups.items():
    by_method.setdefault(method, []).extend(v)
  cell = between(groups)
  return {"method": between({m: np.asarray(v) for m, v in by_method.items()}), "cell": cell,
          "seed": 1.0 - cell}


@register("disentanglement_vs_strength")
def disentanglement_vs_strength(ablation, rows, specs, workdir) -> str:
  """One panel per tabulated metric: each method's mean against its strength (log axis), every
  seed a dot; the panel's title gives the shares of variance due to method, cell and seed."""
  base = ablation.base
  by_cell = {c.name: method_and_strength(c, base) for c in cells(specs)}
  methods = list(dict.fromkeys(m for m, _ in by_cell.values()))
  fig = Figure(figsize=(4.2 * len(ablation.metrics), 3.8), layout="constrained")
  axes = fig.subplots(1, len(ablation.metrics), squeeze=False)[0]
  for ax, metric in zip(axes, ablation.metrics):
    groups = {}
    for i, method in enumerate(methods):
      points = sorted((s, values(rows, name, metric)) for name, (m, s) in by_cell.items()
                      if m == method)
      points = [(s, v) for s, v in points if len(v)]
      for s, v in points:
        ax.plot(np.full(len(v), s), v, "o", color=f"C{i}", ms=3, alpha=0.5)
        groups[(method, s)] = v
      if points:
        ax.plot([s for s, _ in points], [v.mean() for _, v in points], "-s", color=f"C{i}",
                ms=4, label=f"{method} ({strength_option(method)})")
    shares = variance_shares(groups) if groups else None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("strength (each method's option: legend)")
    ax.set_title(METRICS.get(metric).label + ("" if shares is None else
                 f"\nvariance: method {shares['method']:.0%}, method & strength "
                 f"{shares['cell']:.0%}, "
                 f"seed {shares['seed']:.0%}"), fontsize="medium")
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize="small")
  fig.suptitle(f"{ablation.name}: scores against each method's strength (dots: seeds)")
  return save_figure(fig, os.path.join(workdir, "disentanglement_vs_strength.png"))
