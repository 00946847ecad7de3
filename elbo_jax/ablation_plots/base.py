"""What the ablation figures share: the FIGURES registry, cells and their values, trained runs.

An entry of FIGURES is fn(ablation, rows, specs, workdir) -> the path of the PNG it wrote into
workdir, or None while nothing it draws has finished: rows are results.csv's (one per cell and
seed, metrics as floats, done runs only carrying them), specs the `sweep.RunSpec`s in cell order,
so a figure can also open a run's files or load its trained model (`load_runs`). A figure
registered with a `check` refuses bad options with a one-line ConfigError before a sweep trains
anything (`check_options`). An ablation with an `analysis` (ANALYSES) trains no cell: that
function writes all its outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import io, report, train
from elbo_jax.registry import Registry

FIGURES: Registry = Registry("ablation figures")
# An ablation that trains nothing names one of these as its `analysis`:
# fn(ablation, workdir, command) -> the rows of the results.csv it wrote beside its own table.md
# and figures (e.g. `toy_snr`, a model whose every quantity is known in closed form).
ANALYSES: Registry = Registry("ablation analysis")


def register(name: str, check: Callable | None = None):
  """Registers a figure under `name`; check(ablation, specs), if given, validates its options."""

  def add(fn):
    fn.check = check
    return FIGURES.register(name)(fn)

  return add


def check_options(ablation, specs) -> None:
  """Refuses unknown figure names and bad figure options (one-line ConfigErrors)."""
  for name in ablation.figures:
    check = FIGURES.get(name).check
    if check is not None:
      check(ablation, specs)


def cells(specs) -> list:
  """The cells in ablation order, each once."""
  return list({s.cell.name: s.cell for s in specs}.values())


def values(rows: Sequence[dict], cell: str, metric: str) -> np.ndarray:
  return np.array([r[metric] for r in rows if r["cell"] == cell and metric in r], float)


def first_seeds(specs, keep: Callable | None = None) -> list:
  """Each cell's first finished run (among those `keep(spec)` accepts), in cell order."""
  chosen: dict[str, Any] = {}
  for spec in specs:
    if spec.status == "done" and spec.cell.name not in chosen and (keep is None or keep(spec)):
      chosen[spec.cell.name] = spec
  return list(chosen.values())


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A finished run, loaded: its RunSpec, data set, evaluation model (`report.eval_model`, as the
  run's own figures use) and latest parameters."""

  spec: Any
  dataset: Any
  model: Any
  params: Any


def load_runs(specs) -> Iterator[TrainedRun]:
  """Loads each spec's run from its workdir, one at a time.

  Consecutive runs on the same data share one load; only one data set is held at a time, since
  MNIST as float32 takes about 200 MB.
  """
  loaded, dataset = None, None
  for spec in specs:
    key = io.json_line(config_lib.to_json(spec.config.data))
    if key != loaded:
      loaded, dataset = key, data_lib.load(spec.config.data)
    _, params = train.restore_run(spec.workdir, spec.config, dataset)
    yield TrainedRun(spec, dataset, report.eval_model(spec.config, dataset), params)
