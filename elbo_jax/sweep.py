"""Ablations: many runs of one base config, trained together where they can be, then tabulated.

An ablation config (`configs/ablations/<name>.py`, `get_config(arg)` -> `default_config()` filled
in) names a base run config, axes of named override sets whose product is the cells, the seeds,
the metrics to tabulate with published references, and its figures. Each (cell, seed) is an
ordinary run directory, `<workdir>/cells/<cell>/seed-<s>/`, that `experiments.evaluate` can open.

  axes       ((axis name, ((value name, {"section.field": value, ...}), ...)), ...); build them
             with `axis(...)` and `grid(...)`; cells are their product, named "v1-v2-..."
  vectorize  "auto": runs that differ only in `build.vectorizable_fields` (seed, beta, free bits,
             warm-up, learning rate, weight decay, an objective's traced options) train as one
             vmapped program, the rest one group
             after another; "all": every run must fit in one group (else a one-line error);
             "none": one run at a time.

Running the same command again skips finished runs, resumes killed ones from their checkpoints,
and trains only what was added; cells added with --cell are recorded and kept. A run that has
trained keeps its config (a workdir holding a different ablation, or other configs for trained
runs, is refused); a run that has not, or that failed, takes the config it is now given
(`sweep_workdir`). Failed runs are otherwise not trained again unless asked (`retry_failed`).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import os
import re
import time
from collections.abc import Collection, Sequence
from typing import Any

import ml_collections
from tqdm import tqdm

from elbo_jax import ablation_plots, build, io, objectives, snr, sweep_workdir, tables, train
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import mesh as mesh_lib
from elbo_jax.registry import ConfigError, one_of
from elbo_jax.results import METRICS
from elbo_jax.workdir import CHECKPOINT_DIR, FAILED_FILE, RESULTS_FILE, check_path

VECTORIZE = ("auto", "all", "none")


def default_config() -> ml_collections.ConfigDict:
  """The fields of an ablation config; `base` is a full run config (e.g. mnist_vae.get_config())."""
  c = ml_collections.ConfigDict()
  c.name = ""
  c.description = ""        # under the table's title; "{K}" there becomes the evaluation's K
  c.base_config = ""        # the configs/ file the base came from, for the table's header
  c.base = ml_collections.ConfigDict()
  c.axes = ()
  c.seeds = (0,)
  c.metrics = ("log_likelihood", "elbo", "active_units")
  c.references = {}         # {cell name: {metric: published value}}
  c.reference_source = ""   # where the references come from, printed under the table
  # What the references were measured on, as a run's results.json records it, e.g. {"data":
  # {"name": "mnist"}, "test": {"num_importance_samples": 5000}}: a cell shows its references
  # only where its finished runs match (a smoke run on digits gets none). {} = always shown.
  c.reference_setup = {}
  c.notes = ""              # markdown printed under the table, e.g. which numbers compare
  c.vectorize = "auto"
  c.max_replicas = 0        # most runs in one vectorised group; 0 = no limit
  c.figures = ("metric_bars",)
  # A registered analysis that trains nothing (`ablation_plots.ANALYSES`, e.g. "gaussian_toy_snr")
  # writes the outputs itself; base, axes, seeds, metrics and figures are then unused.
  c.analysis = ""
  # The 'gradient_snr' figure: IWAE's gradient SNR at the trained model of `cell`'s first seed.
  # About 2 minutes with these sizes for the Burda MLP on MNIST on 2 CPU cores (100 draws took
  # 81 s there, compiling the 21 programs included).
  c.snr = ml_collections.ConfigDict()
  c.snr.cell = ""           # "" = the first cell
  c.snr.batch_size = 10     # the fixed minibatch: the first test images
  c.snr.num_draws = 200     # draws per (K, estimator); SNRs below sqrt(2 / (pi draws)) are noise
  c.snr.num_samples = snr.NUM_SAMPLES
  c.snr.estimators = objectives.ESTIMATORS
  return c


def axis(name: str, values: Sequence[tuple[str, dict]]) -> tuple:
  """An axis of named override sets: axis("objective", [("vae_k1", {"objective.name": ...})])."""
  return (name, tuple((value_name, dict(overrides)) for value_name, overrides in values))


def grid(field: str, values: Sequence, name: str | None = None) -> tuple:
  """An axis over one field's values, each named "<short>=<value>" (short: the field's last
  part)."""
  short = name or field.split(".")[-1]
  return axis(short, [(f"{short}={v}", {field: v}) for v in values])


def variant_error(config_file: str, arg: Any, allowed: Sequence[str]) -> ValueError:
  """The one-line error of an ablation config asked for a variant it does not have.

  `paper` names only a paper's protocol; where a config has none, its long run is `full` (it was
  called `paper` before 0.2.0), and the error says so.
  """
  if arg == "paper" and "paper" not in allowed and "full" in allowed:
    return ValueError(f"{config_file}: variant 'paper' is now 'full' (our long protocol, not a "
                      "paper's)")
  return ValueError(f"{config_file}: unknown variant {arg!r}; allowed: {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Cell:
  """One point of the ablation: name "v1-v2-...", labels {axis: value name}, overrides."""

  name: str
  labels: dict
  overrides: dict


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One (cell, seed): its resolved run config and its directory."""

  cell: Cell
  seed: int
  config: Any
  workdir: str

  @property
  def status(self) -> str:
    if os.path.exists(os.path.join(self.workdir, RESULTS_FILE)):
      return "done"
    if os.path.exists(os.path.join(self.workdir, FAILED_FILE)):
      return "failed"
    return "pending"


_SAFE = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def cells(ablation, extra: Sequence[Cell] = ()) -> list[Cell]:
  """The product of the ablation's axes, then `extra` cells; names are unique and file-safe."""
  axes = list(ablation.axes)
  for axis_name, values in axes:
    if not values:
      raise ConfigError(f"ablation axes: axis {axis_name!r} has no values; give it at least one")
  out = []
  for combo in itertools.product(*[values for _, values in axes]):
    labels = {axis_name: value_name for (axis_name, _), (value_name, _) in zip(axes, combo)}
    overrides = {}
    for _, value_overrides in combo:
      overrides.update(value_overrides)
    out.append(Cell("-".join(labels.values()) or "base", labels, overrides))
  out += list(extra)
  names = [c.name for c in out]
  for c in out:
    if not _SAFE.match(c.name):
      raise ConfigError(f"ablation cell name {c.name!r} may use only letters, digits and _.=+-")
    if names.count(c.name) > 1:
      raise ConfigError(f"ablation cell name {c.name!r} appears twice; name the values apart")
  return out


def parse_cell(spec: str) -> Cell:
  """A cell from the command line: "name:section.field=value,section.field=value"."""
  name, sep, rest = spec.partition(":")
  if not sep or not name:
    raise ConfigError(f"--cell={spec!r} must look like name:section.field=value[,...]")
  overrides = {}
  # Split at the commas that start a new "field=", not those inside a value such as (8,8).
  for item in filter(None, re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", rest)):
    field, eq, value = item.partition("=")
    if not eq:
      raise ConfigError(f"--cell={spec!r}: {item!r} must look like section.field=value")
    overrides[field.strip()] = _literal(value.strip())
  return Cell(name, {"cell": name}, overrides)


def _literal(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare word, e.g. iwae


def _field_paths(config) -> list[str]:
  return sorted(config_lib.flatten(config.to_dict()))


def apply_overrides(base, overrides: dict, where: str):
  """A locked copy of `base` with {"section.field": value} applied; unknown fields are ConfigErrors
  naming the closest existing ones."""
  config = ml_collections.ConfigDict(base.to_dict())
  for field, value in overrides.items():
    *sections, name = field.split(".")
    node = config
    for part in sections:
      node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
      close = difflib.get_close_matches(field, _field_paths(base), n=3, cutoff=0.6)
      hint = f"; closest: {', '.join(close)}" if close else ""
      raise ConfigError(f"{where}: {field!r} is not a config field{hint}")
    current = node[name]
    try:
      node[name] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    except TypeError:
      raise ConfigError(f"{where}: {field}={value!r} has the wrong type; it is a "
                        f"{type(current).__name__}, e.g. {current!r}") from None
  return config_lib.lock(config)


def run_specs(ablation, workdir: str, extra: Sequence[Cell] = ()) -> list[RunSpec]:
  """Every (cell, seed) of the ablation, cells in order, seeds within each."""
  if not ablation.seeds:
    raise ConfigError("ablation seeds=() is empty; give at least one seed")
  specs = []
  for cell in cells(ablation, extra):
    for seed in ablation.seeds:
      config = apply_overrides(ablation.base, {**cell.overrides, "seed": seed},
                               f"ablation cell {cell.name!r}")
      build.check_config(config)
      specs.append(RunSpec(cell, int(seed), config,
                           os.path.join(workdir, "cells", cell.name, f"seed-{seed}")))
  return specs


def plan_groups(specs: Sequence[RunSpec], vectorize: str, max_replicas: int, *,
                retrain: Collection[str] = (), fresh: Collection[str] = ()
                ) -> list[list[RunSpec]]:
  """The runs to train in groups that train as one program each, in order of first appearance:
  the pending ones and those whose workdir is in `retrain` (failed runs to train again; those in
  `fresh` are discarded first, so they start from scratch)."""
  one_of("ablation vectorize", vectorize, VECTORIZE)
  pending = [s for s in specs if s.status == "pending" or s.workdir in retrain]
  if vectorize == "none":
    return [[s] for s in pending]
  if vectorize == "all" and pending:
    build.check_group([s.config for s in pending])
  by_key: dict[str, list[RunSpec]] = {}
  for s in pending:
    ignore = config_lib.NON_IDENTITY_FIELDS + build.vectorizable_fields(s.config)
    key = io.json_line(config_lib.identity(config_lib.to_json(s.config), ignore))
    by_key.setdefault(key, []).append(s)
  groups = []
  for members in by_key.values():
    steps = [[] if m.workdir in fresh else _checkpoint_steps(m.workdir) for m in members]
    for step, indices in train.plan_resume(steps):
      del step
      subgroup = [members[i] for i in indices]
      size = max_replicas or len(subgroup)
      groups += [subgroup[i:i + size] for i in range(0, len(subgroup), size)]
  return groups


def _checkpoint_steps(workdir: str) -> list[int]:
  checkpoints = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(checkpoints):
    return []
  return sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit())


def _group_label(group: Sequence[RunSpec]) -> str:
  first = f"{group[0].cell.name} seed {group[0].seed}"
  return first if len(group) == 1 else f"{first} +{len(group) - 1} vectorised"


def with_added_cells(stored: dict, extra: Sequence[Cell]) -> list[Cell]:
  """The cells earlier commands added with --cell (recorded in ablation.json), then `extra`; an
  extra cell of a recorded name replaces that one in place."""
  added = {name: Cell(name, {"cell": name}, overrides)
           for name, overrides in sweep_workdir.added_cells(stored)}
  for cell in extra:
    added[cell.name] = cell
  return list(added.values())


def _resolve(ablation, workdir: str, stored: dict, extra: Sequence[Cell]):
  """(the cells added with --cell, every RunSpec), with the figures' options checked."""
  added = with_added_cells(stored, extra)
  specs = run_specs(ablation, workdir, added)
  ablation_plots.check_options(ablation, specs)
  return added, specs


def _data_key(spec: RunSpec) -> str:
  return io.json_line(config_lib.to_json(spec.config.data))


def _in_cell(cell: Cell, fn, *args):
  """fn(*args), its ConfigError naming `cell`."""
  try:
    return fn(*args)
  except ConfigError as e:
    raise ConfigError(f"ablation cell {cell.name!r}: {e}") from None


def check_with_data(groups: Sequence[Sequence[RunSpec]]) -> dict[str, Any]:
  """Loads every data set the groups train on and checks each of their cells against it (the
  model on the data, devices), so a cell that only the data make invalid is refused, by name,
  before the first run starts. Returns {data key: data set} for the first group's data, the
  last one loaded (one data set is held at a time)."""
  by_data: dict[str, list[RunSpec]] = {}
  for spec in (s for group in groups for s in group):
    by_data.setdefault(_data_key(spec), []).append(spec)
  loaded: dict[str, Any] = {}
  for key, members in reversed(by_data.items()):
    loaded = {key: _in_cell(members[0].cell, data_lib.load, members[0].config.data)}
    for spec in {s.cell.name: s for s in members}.values():
      _in_cell(spec.cell, train.check_group, [spec.config], loaded[key])
  return loaded


def run(ablation, workdir: str, *, extra: Sequence[Cell] = (), table_only: bool = False,
        retry_failed: bool = False, command: str = "") -> list[dict]:
  """Trains and evaluates what is missing, then writes results.csv, table.md and the figures.

  Returns the rows of results.csv. Everything is checked before the first run starts, the data
  set dependent checks under the sweep's lock. Failed runs are retried only with `retry_failed`
  or once their cell's config changed.
  """
  workdir = check_path(workdir)
  if ablation.get("analysis"):
    analysis = ablation_plots.ANALYSES.get(ablation.analysis)
    return analysis(ablation, workdir, command) if mesh_lib.is_primary() else []
  one_of("ablation vectorize", ablation.vectorize, VECTORIZE)
  for name in ablation.metrics:
    METRICS.get(name)
  # Several processes train each group together; process 0 locks and writes the sweep's files.
  write = mesh_lib.is_primary()
  stored = sweep_workdir.read(workdir)
  if table_only:
    if not stored:
      raise ConfigError(f"--workdir={workdir!r} holds no ablation (no "
                        f"{sweep_workdir.ABLATION_FILE}); check the path, or leave out "
                        "--table_only to train it")
    _, specs = _resolve(ablation, workdir, stored, extra)
    sweep_workdir.changed_runs(ablation, stored, workdir, specs)
    return write_outputs(ablation, workdir, specs) if write else []
  _resolve(ablation, workdir, stored, extra)  # the configs alone, before the workdir is made
  with sweep_workdir.locked(workdir, enabled=write):
    stored = sweep_workdir.read(workdir)  # as the lock's previous holder left it
    added, specs = _resolve(ablation, workdir, stored, extra)
    changed = sweep_workdir.changed_runs(ablation, stored, workdir, specs)
    retrain = {s.workdir for s in changed} | (
        {s.workdir for s in specs if s.status == "failed"} if retry_failed else set())
    groups = plan_groups(specs, ablation.vectorize, ablation.max_replicas, retrain=retrain,
                         fresh={s.workdir for s in changed})
    datasets = check_with_data(groups)
    if write:
      io.remove_temporaries(workdir)  # left by a runner killed mid-write
      sweep_workdir.discard(changed)
      sweep_workdir.record(ablation, workdir, specs, added, command)
    _train(ablation, workdir, specs, groups, datasets, write)
    return write_outputs(ablation, workdir, specs) if write else []


def _train(ablation, workdir: str, specs, groups, datasets: dict, write: bool) -> None:
  """Trains the groups in order, rewriting the sweep's outputs after each."""
  progress = ablation.base.training.progress
  to_train = sum(len(g) for g in groups)
  with tqdm(total=len(specs), initial=len(specs) - to_train, unit="run", desc=ablation.name,
            position=0, disable=not progress, dynamic_ncols=True) as bar:
    for group in groups:
      data_key = _data_key(group[0])
      if data_key not in datasets:
        datasets = {data_key: data_lib.load(group[0].config.data)}  # keep one in memory
      resumed = [s for s in group if _checkpoint_steps(s.workdir)]
      tic = time.time()
      train.train_group([s.config for s in group], [s.workdir for s in group],
                        raise_on_failure=False, desc=_group_label(group),
                        dataset=datasets[data_key], position=1)
      bar.update(len(group))
      if write:
        sweep_workdir.log_group(workdir, group, time.time() - tic, resumed)
        write_outputs(ablation, workdir, specs)


def write_outputs(ablation, workdir: str, specs) -> list[dict]:
  """Writes results.csv, table.md and the ablation's figures (atomically); returns the rows."""
  os.makedirs(workdir, exist_ok=True)
  rows = [tables.read_row(spec, workdir) for spec in specs]
  tables.write_csv(os.path.join(workdir, tables.CSV_FILE), rows)
  io.write_text_atomic(os.path.join(workdir, tables.TABLE_FILE),
                       tables.markdown(ablation, rows, specs, workdir))
  if any(r["status"] == "done" for r in rows):
    for name in ablation.figures:
      ablation_plots.FIGURES.get(name)(ablation, rows, specs, workdir)
  return rows
