"""Ablations: many runs of one base config, trained together where they can be, then tabulated.

An ablation config (`configs/ablations/<name>.py`, `get_config(arg)` -> `default_config()` filled
in) names a base run config, axes of named override sets whose product is the cells, the seeds,
the metrics to tabulate with published references, and its figures. Each (cell, seed) is an
ordinary run directory, `<workdir>/cells/<cell>/seed-<s>/`, that `experiments.evaluate` can open.

  axes       ((axis name, ((value name, {"section.field": value, ...}), ...)), ...); build them
             with `axis(...)` and `grid(...)`; cells are their product, named "v1-v2-..."
  vectorize  "auto": runs that differ only in `build.VECTORIZABLE_FIELDS` (seed, beta, free bits,
             warm-up, learning rate, weight decay) train as one vmapped program, the rest one group
             after another; "all": every run must fit in one group (else a one-line error);
             "none": one run at a time.

Running the same command again skips finished runs, resumes killed ones from their checkpoints,
and trains only what was added; a workdir holding a different ablation is refused.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
from tqdm import tqdm

from elbo_jax import ablation_plots, build, io, objectives, snr, tables, train
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import mesh as mesh_lib
from elbo_jax.registry import ConfigError
from elbo_jax.workdir import FAILED_FILE, RESULTS_FILE, check_path

VECTORIZE = ("auto", "all", "none")
ABLATION_FILE = "ablation.json"
LOG_FILE = "sweep_log.jsonl"
# Fields of the run config that an ablation's identity ignores (they change no number).
NOT_IDENTITY = ("training.progress", "accelerator")


def default_config() -> ml_collections.ConfigDict:
  """The fields of an ablation config; `base` is a full run config (e.g. mnist_vae.get_config())."""
  c = ml_collections.ConfigDict()
  c.name = ""
  c.description = ""
  c.base_config = ""        # the configs/ file the base came from, for the table's header
  c.base = ml_collections.ConfigDict()
  c.axes = ()
  c.seeds = (0,)
  c.metrics = ("log_likelihood", "elbo", "active_units")
  c.references = {}         # {cell name: {metric: published value}}
  c.reference_source = ""   # where the references come from, printed under the table
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


def check_identity(ablation, workdir: str, specs: Sequence[RunSpec]) -> None:
  """Refuses a workdir holding another ablation, or the same cells with other configs.

  New cells and seeds are welcome; so are changed metrics, references and figures (they change
  no run).
  """
  path = os.path.join(workdir, ABLATION_FILE)
  if not os.path.exists(path):
    return
  stored = io.read_json(path)
  if stored.get("name") != ablation.name:
    raise ConfigError(f"--workdir={workdir!r} holds ablation {stored.get('name')!r}, not "
                      f"{ablation.name!r}; use a new --workdir")
  for spec in specs:
    before = stored["runs"].get(os.path.relpath(spec.workdir, workdir))
    if before is None:
      continue
    differing = config_lib.differences(before, config_lib.to_json(spec.config),
                                       ignore=NOT_IDENTITY)
    if differing:
      raise ConfigError(
          f"--workdir={workdir!r} holds ablation {ablation.name!r} with a different config "
          f"(cell {spec.cell.name!r} differs in: {', '.join(differing)}); use a new --workdir")


def record_identity(ablation, workdir: str, specs: Sequence[RunSpec], command: str) -> None:
  """Writes ablation.json: the ablation, every run's resolved config, the command that ran it."""
  path = os.path.join(workdir, ABLATION_FILE)
  stored = io.read_json(path) if os.path.exists(path) else {"runs": {}}
  stored["name"] = ablation.name
  stored["command"] = command
  stored["ablation"] = config_lib.to_json(
      {k: v for k, v in ablation.to_dict().items() if k != "base"})
  for spec in specs:
    stored["runs"][os.path.relpath(spec.workdir, workdir)] = config_lib.to_json(spec.config)
  io.write_json_atomic(path, stored)


def plan_groups(specs: Sequence[RunSpec], vectorize: str, max_replicas: int) -> list[list[RunSpec]]:
  """The pending runs in groups that train as one program each, in order of first appearance."""
  if vectorize not in VECTORIZE:
    raise ConfigError(f"ablation vectorize={vectorize!r} is not known; allowed values: "
                      f"{', '.join(VECTORIZE)}")
  pending = [s for s in specs if s.status == "pending"]
  if vectorize == "none":
    return [[s] for s in pending]
  if vectorize == "all" and pending:
    build.check_group([s.config for s in pending])
  ignore = config_lib.NON_IDENTITY_FIELDS + build.VECTORIZABLE_FIELDS
  by_key: dict[str, list[RunSpec]] = {}
  for s in pending:
    key = io.json_line(config_lib.identity(config_lib.to_json(s.config), ignore))
    by_key.setdefault(key, []).append(s)
  groups = []
  for members in by_key.values():
    for step, indices in train.plan_resume([_checkpoint_steps(m.workdir) for m in members]):
      del step
      subgroup = [members[i] for i in indices]
      size = max_replicas or len(subgroup)
      groups += [subgroup[i:i + size] for i in range(0, len(subgroup), size)]
  return groups


def _checkpoint_steps(workdir: str) -> list[int]:
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints):
    return []
  return sorted(int(n) for n in os.listdir(checkpoints) if n.isdigit())


def _group_label(group: Sequence[RunSpec]) -> str:
  first = f"{group[0].cell.name} seed {group[0].seed}"
  return first if len(group) == 1 else f"{first} +{len(group) - 1} vectorised"


def run(ablation, workdir: str, *, extra: Sequence[Cell] = (), table_only: bool = False,
        command: str = "") -> list[dict]:
  """Trains and evaluates what is missing, then writes results.csv, table.md and the figures.

  Returns the rows of results.csv. Everything is checked before the first run starts.
  """
  workdir = check_path(workdir)
  if ablation.get("analysis"):
    analysis = ablation_plots.ANALYSES.get(ablation.analysis)
    return analysis(ablation, workdir, command) if mesh_lib.is_primary() else []
  if ablation.vectorize not in VECTORIZE:
    raise ConfigError(f"ablation vectorize={ablation.vectorize!r} is not known; allowed values: "
                      f"{', '.join(VECTORIZE)}")
  for name in ablation.metrics:
    tables.METRICS.get(name)
  specs = run_specs(ablation, workdir, extra)
  ablation_plots.check_options(ablation, specs)
  check_identity(ablation, workdir, specs)
  # Several processes train each group together; process 0 writes the sweep's files.
  write = mesh_lib.is_primary()
  if table_only:
    return tables.write_outputs(ablation, workdir, specs) if write else []
  groups = plan_groups(specs, ablation.vectorize, ablation.max_replicas)
  if write:
    os.makedirs(workdir, exist_ok=True)
    record_identity(ablation, workdir, specs, command)
  datasets: dict[str, Any] = {}
  progress = ablation.base.training.progress
  done = sum(s.status != "pending" for s in specs)
  with tqdm(total=len(specs), initial=done, unit="run", desc=ablation.name, position=0,
            disable=not progress, dynamic_ncols=True) as bar:
    for group in groups:
      data_key = io.json_line(config_lib.to_json(group[0].config.data))
      if data_key not in datasets:
        datasets = {data_key: data_lib.load(group[0].config.data)}  # keep one in memory
      tic = time.time()
      train.train_group([s.config for s in group], [s.workdir for s in group],
                        raise_on_failure=False, desc=_group_label(group),
                        dataset=datasets[data_key], position=1)
      bar.update(len(group))
      if write:
        io.append_jsonl(os.path.join(workdir, LOG_FILE), {
            "runs": [os.path.relpath(s.workdir, workdir) for s in group],
            "seconds": time.time() - tic, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
        tables.write_outputs(ablation, workdir, specs)
  return tables.write_outputs(ablation, workdir, specs) if write else []
