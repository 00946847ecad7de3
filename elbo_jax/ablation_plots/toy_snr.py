"""Rainforth et al. 2018's Gaussian toy as an ablation that trains nothing
(`elbo_jax.gaussian_toy`): IWAE's gradient SNR against K for each estimator, at the optimum plus
small noise, where the papers' rates hold: reparameterised inference SNR ~ K^-1/2, generative
~ K^+1/2 (Rainforth et al.), DReG inference rising (Tucker et al. 2019).

Its options are the ablation's `toy` fields (configs/ablations/gaussian_toy.py). Writes into the
workdir results.csv (one row per (K, estimator): `snr.STATISTICS` per network and the standard
error of snr_squared over the data points), slopes.csv (`estimator,network,slope` and the K
fitted), table.md and gaussian_toy_snr.png. The SNR is `snr_rms`, the root of the unbiased mean
over parameters of SNR^2 (`snr.unbiased_snr_squared`), so a falling curve is not held up by the
floor of |mean| / std.
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from elbo_jax import gaussian_toy, io, objectives, snr
from elbo_jax.ablation_plots.base import ANALYSES
from elbo_jax.registry import ConfigError, positive_int
from elbo_jax.tables import CSV_FILE, TABLE_FILE, write_csv

SLOPES_FILE = "slopes.csv"
PNG_FILE = "gaussian_toy_snr.png"
DTYPES = ("float32", "float64")


def check(options) -> None:
  """One-line ConfigErrors for bad `toy` options."""
  for field in ("dim", "num_data", "num_points", "num_draws", "seed_data", "max_in_flight"):
    positive_int(f"ablation toy.{field}", options[field])
  if options.num_points > options.num_data:
    raise ConfigError(f"ablation toy.num_points={options.num_points} must be at most "
                      f"toy.num_data={options.num_data}")
  if options.num_draws < 6:
    raise ConfigError(f"ablation toy.num_draws={options.num_draws} must be at least 6 (two "
                      "halves for the unbiased SNR)")
  if len(options.num_samples) < 2:
    raise ConfigError(f"ablation toy.num_samples={tuple(options.num_samples)} needs two values of "
                      "K or more to fit a slope")
  for k in options.num_samples:
    positive_int("ablation toy.num_samples", k)
  for estimator in options.estimators:
    if estimator not in objectives.ESTIMATORS:
      raise ConfigError(f"ablation toy.estimators: {estimator!r} is not known; allowed values: "
                        f"{', '.join(objectives.ESTIMATORS)}")
  if options.dtype not in DTYPES:
    raise ConfigError(f"ablation toy.dtype={options.dtype!r} is not known; allowed values: "
                      f"{', '.join(DTYPES)}")


def sweep_rows(options) -> list[dict]:
  """One row per (K, estimator): K, estimator, num_draws and `snr.STATISTICS` per network."""
  dtype = jnp.dtype(options.dtype)
  key_data, key_noise, key_draws = jax.random.split(jax.random.key(options.seed_data), 3)
  x = gaussian_toy.make_data(key_data, options.num_data, options.dim, dtype)
  params = gaussian_toy.perturb(gaussian_toy.optimum(x), key_noise, options.noise)
  params, points = gaussian_toy.per_point(params, x[:options.num_points])
  d = options.dim
  sizes = {"inference": (d * d, d), "generative": (d,)}  # per point: (A, b) and mu
  rows = []
  for k in options.num_samples:
    chunk = max(1, min(64, options.max_in_flight // (options.num_points * k)))
    for estimator in options.estimators:
      out = snr.gradient_snr(gaussian_toy.per_example(k, estimator), params, points, key_draws,
                             options.num_draws, split_fn=gaussian_toy.split, chunk_size=chunk)
      row = {"estimator": estimator, "num_samples": k, "num_draws": options.num_draws}
      for part in snr.PARTS:
        row |= {f"{part}_{stat}": out[part][stat] for stat in snr.STATISTICS}
        row[f"{part}_snr_squared_stderr"] = _stderr_over_points(
            out[part]["per_parameter_squared"], options.num_points, sizes[part])
      rows.append(row)
  return rows


def _stderr_over_points(per_parameter_squared, num_points: int, sizes) -> float:
  """The standard error of snr_squared from its spread over the independent data points.

  per_parameter_squared: [P] in `ravel_pytree` order of leaves [B, ...] (`gaussian_toy.per_point`)
  whose per-point sizes are `sizes`. Each point's draws are independent of the others', so unlike
  snr_squared_noise (a bound for any correlation between parameters) this is the noise of the
  mean over points: their standard deviation over sqrt(B).
  """
  sums, offset = np.zeros(num_points), 0
  for size in sizes:
    sums += per_parameter_squared[offset:offset + num_points * size].reshape(num_points, -1).sum(1)
    offset += num_points * size
  per_point = sums / sum(sizes)
  return float(per_point.std(ddof=1) / np.sqrt(num_points))


def slopes(rows) -> list[dict]:
  """`estimator,network,slope`: the log-log slope of snr_rms against K, per estimator and network,
  over the K whose snr_squared is resolved (above twice its standard error over the points; an
  unresolved SNR says only that it is small), with that range (k_min, k_max, num_k)."""
  out = []
  for estimator in dict.fromkeys(r["estimator"] for r in rows):
    members = sorted((r for r in rows if r["estimator"] == estimator),
                     key=lambda r: r["num_samples"])
    for part in snr.PARTS:
      used = [r for r in members
              if r[f"{part}_snr_squared"] > 2 * r[f"{part}_snr_squared_stderr"]]
      k = [r["num_samples"] for r in used]
      out.append({"estimator": estimator, "network": part, "slope": gaussian_toy.fit_slope(
          k, [r[f"{part}_snr_rms"] for r in used]),
          "k_min": min(k, default=""), "k_max": max(k, default=""), "num_k": len(k)})
  return out


def markdown(ablation, rows, slope_rows, seconds: float, command: str) -> str:
  options = ablation.toy
  lines = [f"# {ablation.name}", "", ablation.description, ""]
  if command:
    lines.append(f"Command: `{command}`")
  lines += [
      f"Model: D = {options.dim}, {options.num_data} data points, parameters at the optimum plus "
      f"N(0, {options.noise:g}^2); SNR of one point's gradient over {options.num_draws} draws, "
      f"per parameter, for the first {options.num_points} points; {options.dtype}.",
      f"Wall time: {seconds / 60:.1f} min.", "",
      "snr_rms = sqrt of the unbiased mean over parameters and points of SNR^2; ± sqrt of its "
      "standard error over the points (the slopes use the K where snr_rms^2 is above twice "
      "that).", "",
      "| K | estimator | inference SNR | generative SNR |", "|---|---|---|---|"]
  for r in rows:
    cells = [f"{r[f'{p}_snr_rms']:.4g} ± {r[f'{p}_snr_squared_stderr'] ** 0.5:.2g}"
             for p in snr.PARTS]
    lines.append(f"| {r['num_samples']} | {r['estimator']} | {cells[0]} | {cells[1]} |")
  lines += ["", "Log-log slopes of snr_rms against K (slopes.csv):", "",
            "| estimator | network | slope | fitted K |", "|---|---|---|---|"]
  lines += [f"| {s['estimator']} | {s['network']} | {s['slope']:+.3f} | "
            f"{s['k_min']}-{s['k_max']} ({s['num_k']} values) |" for s in slope_rows]
  if ablation.notes:
    lines += ["", ablation.notes.strip()]
  return "\n".join(lines) + "\n"


@ANALYSES.register("gaussian_toy_snr")
def gaussian_toy_snr(ablation, workdir: str, command: str = "") -> list[dict]:
  """Computes the sweep and writes results.csv, slopes.csv, table.md and the log-log figure."""

  check(ablation.toy)
  os.makedirs(workdir, exist_ok=True)
  tic = time.time()
  enable = jax.enable_x64(True) if ablation.toy.dtype == "float64" else contextlib.nullcontext()
  with enable:
    rows = sweep_rows(ablation.toy)
  seconds = time.time() - tic
  slope_rows = slopes(rows)
  write_csv(os.path.join(workdir, CSV_FILE), rows)
  write_csv(os.path.join(workdir, SLOPES_FILE), slope_rows)
  io.write_text_atomic(os.path.join(workdir, TABLE_FILE),
                       markdown(ablation, rows, slope_rows, seconds, command))
  snr.plot_snr(rows, os.path.join(workdir, PNG_FILE), statistic="snr_rms", title=(
      f"{ablation.name}: one point's IWAE gradient SNR (unbiased rms over parameters), "
      f"{ablation.toy.num_draws} draws"))
  return rows
