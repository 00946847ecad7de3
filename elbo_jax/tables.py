"""An ablation's outputs: results.csv (one row per cell and seed), table.md (mean +- std over seeds
with published references), and its figures. Everything is read back from the runs' results.json,
so `experiments.ablate --table_only` rebuilds it all from disk.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from elbo_jax import ablation_plots, io
from elbo_jax.registry import Registry
from elbo_jax.workdir import FAILED_FILE, RESULTS_FILE

FIGURES = ablation_plots.FIGURES


@dataclasses.dataclass(frozen=True)
class Metric:
  """A column: its header and how to read it from a run's results.json (None if absent)."""

  label: str
  read: Callable[[dict], float | None]
  digits: int = 2


def _test(name: str, sign: float = 1.0) -> Callable[[dict], float | None]:
  return lambda r: None if r["test"].get(name) is None else sign * r["test"][name]


METRICS: Registry[Metric] = Registry("ablation metrics")
METRICS.register("log_likelihood")(Metric("test log p(x)", _test("log_likelihood")))
METRICS.register("nll")(Metric("test NLL", _test("log_likelihood", -1.0)))
METRICS.register("elbo")(Metric("test ELBO", _test("elbo")))
METRICS.register("reconstruction")(Metric("E_q log p(x|z)", _test("log_px_given_z")))
METRICS.register("kl")(Metric("KL(q||p)", _test("kl")))
# Alemi et al. 2018: rate = E_x KL(q(z|x) || p(z)), distortion = -E_x E_q log p(x|z).
METRICS.register("rate")(Metric("rate", _test("kl")))
METRICS.register("distortion")(Metric("distortion", _test("log_px_given_z", -1.0)))
# On the same examples: the log-likelihood may run on a subset of the test set.
METRICS.register("gap")(Metric("log p(x) - ELBO", lambda r: r["test"]["log_likelihood"]
                                - r["test"]["elbo_on_ll_examples"]))
METRICS.register("active_units")(Metric("active units", _test("active_units"), digits=1))
METRICS.register("bpd")(Metric("bits/dim", _test("bpd"), digits=3))


def read_row(spec, workdir: str) -> dict:
  """The results.csv row of one (cell, seed): its labels, status, every metric, its overrides."""
  row = {"cell": spec.cell.name, **spec.cell.labels, "seed": spec.seed, "status": spec.status}
  if spec.status == "done":
    results = io.read_json(os.path.join(spec.workdir, RESULTS_FILE))
    for name in METRICS.names():
      try:
        value = METRICS.get(name).read(results)
      except KeyError:
        value = None
      if value is not None:
        row[name] = float(value)
  elif spec.status == "failed":
    row["error"] = io.read_json(os.path.join(spec.workdir, FAILED_FILE))["error"]
  row["overrides"] = json.dumps(spec.cell.overrides, sort_keys=True)
  row["workdir"] = os.path.relpath(spec.workdir, workdir)
  return row


def summarize(rows: Sequence[dict], metric: str) -> dict[str, tuple[float, float, int]]:
  """{cell: (mean, std over seeds (ddof 1; nan for one seed), seeds)} of `metric` over done rows."""
  values: dict[str, list[float]] = {}
  for row in rows:
    if metric in row:
      values.setdefault(row["cell"], []).append(row[metric])
  return {cell: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v))
          for cell, v in values.items()}


def _format(mean: float, std: float, digits: int) -> str:
  text = f"{mean:.{digits}f}"
  return text if math.isnan(std) else f"{text} ± {std:.{digits}f}"


def _done_results(specs) -> list[dict]:
  return [io.read_json(os.path.join(s.workdir, RESULTS_FILE)) for s in specs if s.status == "done"]


def _data_variant(data: dict) -> str:
  """How a run's data were prepared: its binarisation, else its preprocessing (float, uint8)."""
  binarization = data.get("binarization")
  return binarization if binarization not in (None, "none") else (
      f"preprocessing {data.get('preprocessing')}")


def _code(code: dict | None) -> str:
  if not code:
    return "elbo_jax before 0.2.0 (no version recorded)"
  return f"elbo_jax {code.get('elbo_jax_version')} at commit {str(code.get('git_commit'))[:7]}"


def header(ablation, specs, workdir: str) -> list[str]:
  """What the table's numbers mean: command, base schedule, data, evaluation, the code version,
  seeds, wall time."""
  base = ablation.base
  stored = io.read_json(os.path.join(workdir, "ablation.json")) if os.path.exists(
      os.path.join(workdir, "ablation.json")) else {}
  lines = [f"# {ablation.name}", "", ablation.description, ""]
  if stored.get("command"):
    lines.append(f"Command: `{stored['command']}`")
  opt, training, model = base.optimizer, base.training, base.model
  bias = ", output bias at the logit of the training mean" * (model.output_bias == "data_mean")
  lines.append(
      f"Base config: `{ablation.base_config or 'inline'}`; schedule: {training.num_epochs} epochs "
      f"at batch {training.batch_size}, {opt.name} learning rate {opt.learning_rate:g} "
      f"({opt.schedule}), {model.init} initialisation{bias}; cells override it as listed below "
      "the table.")
  done = _done_results(specs)
  if done:
    data, test = done[0]["data"], done[0]["test"]
    sizes = data.get("sizes", {})
    # Cells may prepare the data differently (e.g. one per likelihood): name every variant.
    variants = "; ".join(dict.fromkeys(_data_variant(r["data"]) for r in done))
    lines.append(
        f"Data: {data.get('name')} ({variants}; split {data.get('split')}: {sizes.get('train')} "
        f"/ {sizes.get('validation')} / {sizes.get('test')}).")
    subset = test.get("num_examples")
    elbo_n = test.get("elbo_num_examples", subset)
    lines.append(
        f"Evaluation: log-likelihood with K={test['num_importance_samples']} importance samples "
        f"on {'the first ' if subset != sizes.get('test') else ''}{subset} of "
        f"{sizes.get('test')} test images; ELBO, its terms and active units on {elbo_n}.")
    # The version that made the numbers, per run (a resumed sweep may span commits).
    codes = "; ".join(dict.fromkeys(_code(r.get("code")) for r in done))
    lines.append(f"Code: {codes} (CHANGELOG.md lists the changes that move numbers).")
  lines.append(f"Mean ± std (sample std) over seeds {', '.join(map(str, ablation.seeds))}.")
  log = os.path.join(workdir, "sweep_log.jsonl")
  if os.path.exists(log):
    entries = io.read_jsonl(log)
    seconds = sum(e["seconds"] for e in entries)
    runs = sum(len(e["runs"]) for e in entries)
    lines.append(f"Wall time: {seconds / 60:.1f} min for {runs} runs in {len(entries)} "
                 f"program(s), training and evaluation (sweep_log.jsonl).")
  return lines + [""]


def markdown(ablation, rows: Sequence[dict], specs, workdir: str) -> str:
  """table.md: the header, then one line per cell with each metric's mean ± std."""
  cells = list(dict.fromkeys(spec.cell.name for spec in specs))
  label_keys = list(dict.fromkeys(k for spec in specs for k in spec.cell.labels))
  refs = {cell: dict(v) for cell, v in dict(ablation.references).items()}
  columns = [*label_keys]
  for metric in ablation.metrics:
    # A "|" in a label (KL(q||p)) would end the markdown cell.
    columns.append(METRICS.get(metric).label.replace("|", "\\|"))
    if any(metric in r for r in refs.values()):
      columns += ["paper", "diff"]
  columns.append("seeds")
  lines = header(ablation, specs, workdir)
  lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  summaries = {m: summarize(rows, m) for m in ablation.metrics}
  for cell in cells:
    spec = next(s for s in specs if s.cell.name == cell)
    out = [spec.cell.labels.get(k, "") for k in label_keys]
    seeds = 0
    for metric in ablation.metrics:
      m = METRICS.get(metric)
      mean, std, n = summaries[metric].get(cell, (math.nan, math.nan, 0))
      seeds = max(seeds, n)
      out.append(_format(mean, std, m.digits) if n else "—")
      if any(metric in r for r in refs.values()):
        ref = refs.get(cell, {}).get(metric)
        out.append("" if ref is None else f"{ref:.{m.digits}f}")
        out.append("" if ref is None or not n else f"{mean - ref:+.{m.digits}f}")
    total = len(ablation.seeds)
    failed = sum(r["status"] == "failed" for r in rows if r["cell"] == cell)
    out.append(f"{seeds}/{total}" + (f" ({failed} failed)" if failed else ""))
    lines.append("| " + " | ".join(out) + " |")
  lines.append("")
  if ablation.reference_source:
    lines += [f"Published numbers: {ablation.reference_source}", ""]
  if ablation.notes:
    lines += [ablation.notes.strip(), ""]
  lines.append("Cells (overrides of the base config):")
  for cell in cells:
    spec = next(s for s in specs if s.cell.name == cell)
    overrides = ", ".join(f"{k}={v!r}" for k, v in spec.cell.overrides.items()) or "(the base)"
    lines.append(f"- `{cell}`: {overrides}")
  errors = [r for r in rows if r["status"] == "failed"]
  if errors:
    lines += ["", "Stopped runs:"] + [f"- `{r['workdir']}`: {r['error']}" for r in errors]
  return "\n".join(lines) + "\n"


def write_csv(path: str, rows: Sequence[dict]) -> None:
  fields = list(dict.fromkeys(k for row in rows for k in row))
  with io.atomic_writer(path, "w") as f:
    writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_outputs(ablation, workdir: str, specs) -> list[dict]:
  """Writes results.csv, table.md and the ablation's figures (atomically); returns the rows."""
  os.makedirs(workdir, exist_ok=True)
  rows = [read_row(spec, workdir) for spec in specs]
  write_csv(os.path.join(workdir, "results.csv"), rows)
  io.write_text_atomic(os.path.join(workdir, "table.md"), markdown(ablation, rows, specs, workdir))
  if any(r["status"] == "done" for r in rows):
    for name in ablation.figures:
      FIGURES.get(name)(ablation, rows, specs, workdir)
  return rows
