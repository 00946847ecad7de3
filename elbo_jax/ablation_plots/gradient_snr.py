"""The gradient signal-to-noise analysis of a trained model (Rainforth et al. 2018; Tucker et al.
2019): IWAE's gradient SNR against K for each estimator, for the inference and the generative
network apart, at the parameters one cell trained (`elbo_jax.snr.iwae_snr_sweep`).

Its options are the ablation's `snr` fields (`sweep.default_config`). The sweep is costly, so its
rows are kept in <workdir>/snr.csv with where they came from (cell, seed, batch_size, num_draws)
and drawn again from there while those and the (K, estimator) pairs are unchanged; delete snr.csv
to compute them afresh.
"""

from __future__ import annotations

import csv
import itertools
import os

from elbo_jax import objectives, report, snr
from elbo_jax.ablation_plots.base import cells, load_runs, register
from elbo_jax.posteriors import POSTERIORS
from elbo_jax.registry import ConfigError, positive_int
from elbo_jax.tables import write_csv

SNR_FILE = "snr.csv"
PNG_FILE = "gradient_snr.png"


def _target(ablation, specs):
  """The first seed of the analysed cell: `snr.cell`, or the first cell when it is empty."""
  name = ablation.snr.cell or specs[0].cell.name
  return next(spec for spec in specs if spec.cell.name == name)


def check(ablation, specs) -> None:
  """One-line ConfigErrors for bad `snr` options, before the sweep trains anything."""
  options = ablation.snr
  names = [cell.name for cell in cells(specs)]
  if options.cell and options.cell not in names:
    raise ConfigError(f"ablation snr.cell={options.cell!r} is not a cell; cells: "
                      f"{', '.join(names)}")
  positive_int("ablation snr.batch_size", options.batch_size)
  draws = options.num_draws
  if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
    raise ConfigError(f"ablation snr.num_draws={draws!r} must be an integer >= 2")
  if not options.num_samples:
    raise ConfigError("ablation snr.num_samples=() is empty; give values of K such as (1, 10, 100)")
  for k in options.num_samples:
    positive_int("ablation snr.num_samples", k)
  if not options.estimators:
    raise ConfigError("ablation snr.estimators=() is empty; give some of: "
                      f"{', '.join(objectives.ESTIMATORS)}")
  for estimator in options.estimators:
    if estimator not in objectives.ESTIMATORS:
      raise ConfigError(f"ablation snr.estimators: {estimator!r} is not known; allowed values: "
                        f"{', '.join(objectives.ESTIMATORS)}")
  posterior = _target(ablation, specs).config.posterior.name
  if set(options.estimators) != {"reparam"} and not POSTERIORS.get(posterior).has_density:
    raise ConfigError(f"ablation snr.estimators={tuple(options.estimators)} need log q(z|x) at any "
                      f"z, which posterior.name={posterior!r} does not give; analyse a cell with "
                      "a Gaussian posterior or use snr.estimators=('reparam',)")


def _parse(text: str):
  """A CSV field as the int or float it spells, else as it is."""
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def _cached_rows(path: str, provenance: dict, pairs: set) -> list[dict] | None:
  """snr.csv's rows if they hold exactly `pairs` {(K, estimator)} from `provenance`, else None."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = list(csv.DictReader(f))
  same_source = all(row.get(k) == str(v) for row in rows for k, v in provenance.items())
  # Rows written before the importance-weight diagnostics existed are computed again.
  if (not same_source or not rows or "khat_median" not in rows[0]
      or {(int(r["num_samples"]), r["estimator"]) for r in rows} != pairs):
    return None
  return [{k: v if k == "cell" else _parse(v) for k, v in row.items()} for row in rows]


@register("gradient_snr", check=check)
def gradient_snr(ablation, rows, specs, workdir) -> str | None:
  """SNR = |E g| / std g per parameter against K (log-log), left the inference network, right the
  generative one, one line per estimator (`snr.plot_snr`), at the latest parameters of
  `snr.cell`'s first seed, on its first `snr.batch_size` test images (binarised as the evaluation
  binarises them), with each K's median k-hat and ESS of the importance weights on those images.
  Writes snr.csv beside the PNG; None until that run has finished."""

  del rows
  spec = _target(ablation, specs)
  if spec.status != "done":
    return None
  options = ablation.snr
  provenance = {"cell": spec.cell.name, "seed": spec.seed, "batch_size": options.batch_size,
                "num_draws": options.num_draws}
  path = os.path.join(workdir, SNR_FILE)
  table = _cached_rows(path, provenance,
                       set(itertools.product(options.num_samples, options.estimators)))
  if table is None:
    (run,) = load_runs([spec])
    batch = report.eval_data(run.dataset, run.dataset.test,
                             report.eval_key(spec.config, "test_data"))[:options.batch_size]
    sweep_rows = snr.iwae_snr_sweep(
        run.model, run.params, batch, report.eval_key(spec.config, "gradient_snr"),
        num_samples=tuple(options.num_samples), estimators=tuple(options.estimators),
        num_draws=options.num_draws)
    table = [provenance | row for row in sweep_rows]
    write_csv(path, table)
  return snr.plot_snr(table, os.path.join(workdir, PNG_FILE), title=(
      f"{ablation.name}: IWAE gradient SNR at cell {spec.cell.name!r} (seed {spec.seed}), "
      f"{options.batch_size} test images, {options.num_draws} draws"))
