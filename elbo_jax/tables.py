"""An ablation's outputs: results.csv (one row per cell and seed), table.md (mean +- std over seeds
with published references where the runs' data and evaluation are the references'), with a
column per metric of `elbo_jax.results.METRICS`. Everything is read back from the runs'
results.json, so `experiments.ablate --table_only` rebuilds it all from disk (`sweep.write_outputs`,
which also draws the figures).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
from collections.abc import Sequence

import numpy as np

from elbo_jax import config as config_lib
from elbo_jax import io, sweep_workdir
from elbo_jax.results import METRICS
from elbo_jax.workdir import FAILED_FILE, RESULTS_FILE, RUN_INFO_FILE

CSV_FILE = "results.csv"  # an ablation's rows, in its workdir
TABLE_FILE = "table.md"


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


def _lookup(results: dict, path: str):
  """results["a"]["b"] for path "a.b"; None where it is absent."""
  node = results
  for part in path.split("."):
    node = node.get(part) if isinstance(node, dict) else None
  return node


def references(ablation, specs) -> tuple[dict, list[str]]:
  """The published numbers that compare with the runs, and why the others are left out.

  Returns ({cell: {metric: value}}, lines for under the table). A cell's references are shown
  once it has finished runs and every one of them recorded in its results.json the setup the
  references were measured on (`ablation.reference_setup`, e.g. {"data": {"name": "mnist"},
  "test": {"num_importance_samples": 5000}}): the data and evaluation the runs actually had, not
  what a variant is called. Without a reference_setup every reference is shown.
  """
  refs = {cell: dict(v) for cell, v in dict(ablation.references).items()}
  setup = config_lib.flatten(config_lib.to_json(ablation.reference_setup))
  if not refs or not setup:
    return refs, []
  shown, recorded, left_out = {}, {}, []
  order = list(dict.fromkeys(s.cell.name for s in specs))
  for cell, values in sorted(refs.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order
                             else len(order)):
    done = _done_results([s for s in specs if s.cell.name == cell])
    differing = {path: _lookup(r, path) for r in done for path, want in setup.items()
                 if _lookup(r, path) != want}
    if done and not differing:
      shown[cell] = values
    elif differing:
      left_out.append(cell)
      for path, value in differing.items():
        recorded.setdefault(path, []).append(value)
  if not left_out:
    return shown, []
  wanted = ", ".join(f"{path}={want!r}" for path, want in setup.items())
  got = ", ".join(f"{path}={' / '.join(map(repr, dict.fromkeys(values)))}"
                  for path, values in recorded.items())
  return shown, [f"Published numbers are left out for {', '.join(f'`{c}`' for c in left_out)}: "
                 f"they were measured with {wanted} (results.json), these runs have {got}.", ""]


def _data_variant(data: dict) -> str:
  """How a run's data were prepared: its binarisation, else its preprocessing (float, uint8)."""
  binarization = data.get("binarization")
  return binarization if binarization not in (None, "none") else (
      f"preprocessing {data.get('preprocessing')}")


def _description(ablation, specs, done: Sequence[dict]) -> str:
  """The ablation's description, "{K}" replaced by the K its runs evaluated with (as configured
  where none has finished)."""
  ks = dict.fromkeys(r["test"]["num_importance_samples"] for r in done) or dict.fromkeys(
      s.config.eval.num_samples for s in specs)
  return ablation.description.replace("{K}", " / ".join(map(str, ks)))


def _code(spec, results: dict) -> str:
  """The code a finished run was made with, "elbo_jax <version>, commit <short hash>": from its
  results.json, or (written before results.json recorded it) its run_info.json."""
  code = results.get("code")
  if code is None:
    info_path = os.path.join(spec.workdir, RUN_INFO_FILE)
    info = io.read_json(info_path) if os.path.exists(info_path) else {}
    code = {"elbo_jax_version": info.get("packages", {}).get("elbo_jax"),
            "git_commit": info.get("git_commit")}
  commit = code.get("git_commit") or "unrecorded"
  return (f"elbo_jax {code.get('elbo_jax_version') or '(version unrecorded)'}, commit "
          f"{_short(commit) if commit not in ('unknown', 'unrecorded') else commit}")


def _short(commit: str) -> str:
  """A commit's first 7 hex digits, keeping `workdir.read_git_commit`'s "+modified" mark."""
  sha, _, mark = commit.partition("+")
  return sha[:7] + (f"+{mark}" if mark else "")


def _code_line(specs) -> str | None:
  done = [s for s in specs if s.status == "done"]
  if not done:
    return None
  counts: dict[str, int] = {}
  for spec in done:
    code = _code(spec, io.read_json(os.path.join(spec.workdir, RESULTS_FILE)))
    counts[code] = counts.get(code, 0) + 1
  # CHANGELOG.md lists the changes that move numbers, by version.
  if len(counts) == 1:
    return f"Code: {next(iter(counts))} (all {len(done)} finished runs)."
  return "Code: " + "; ".join(f"{code} ({n} run{'s' * (n > 1)})"
                             for code, n in counts.items()) + "."


def _cell_flag(cell: dict) -> str:
  """The --cell flag that adds a recorded cell: name:field=value,... (values as literals)."""
  overrides = ",".join(f"{k}={v!r}" for k, v in cell["overrides"].items())
  return shlex.quote(f"--cell={cell['name']}:{overrides}")


def _wall_time(specs, workdir: str) -> str | None:
  """What sweep_log.jsonl says of the time the runs took, and which runs' time it misses."""
  log = os.path.join(workdir, sweep_workdir.LOG_FILE)
  if not os.path.exists(log):
    return None
  entries = io.read_jsonl(log)
  seconds = sum(e["seconds"] for e in entries)
  trained = {os.path.relpath(s.workdir, workdir): s.status for s in specs
             if s.status != "pending"}
  finished = sum(status == "done" for status in trained.values())
  failed = len(trained) - finished
  logged = {run for e in entries for run in e["runs"]}
  # Runs that ran partly in an interrupted invocation: killed before their program's entry was
  # written (so in no entry), or resumed from a checkpoint (the time before is in no entry).
  partly = {run for run in trained if run not in logged} | {
      run for e in entries for run in e.get("resumed", ()) if run in trained}
  line = (f"Wall time: {seconds / 60:.1f} min in {len(entries)} program(s), training and "
          f"evaluation (sweep_log.jsonl), for {len(trained)} runs"
          + (f" ({finished} finished, {failed} failed)" if failed else ""))
  if partly:
    line += (f"; {len(partly)} of them ran partly in an interrupted invocation, whose time "
             "before the interruption is not included")
  return line + "."


def header(ablation, specs, workdir: str) -> list[str]:
  """What the table's numbers mean: command, code, base schedule, data, evaluation, seeds, wall
  time."""
  base = ablation.base
  stored = sweep_workdir.read(workdir)
  done = _done_results(specs)
  lines = [f"# {ablation.name}", "", _description(ablation, specs, done), ""]
  if stored.get("command"):
    lines.append(f"Command: `{stored['command']}`")
  if stored.get("added_cells"):
    lines.append("Cells added with --cell (recorded in ablation.json; later commands keep them): "
                 + ", ".join(f"`{_cell_flag(c)}`" for c in stored["added_cells"]) + ".")
  code = _code_line(specs)
  if code:
    lines.append(code)
  opt, training, model = base.optimizer, base.training, base.model
  bias = ", output bias at the logit of the training mean" * (model.output_bias == "data_mean")
  lines.append(
      f"Base config: `{ablation.base_config or 'inline'}`; schedule: {training.num_epochs} epochs "
      f"at batch {training.batch_size}, {opt.name} learning rate {opt.learning_rate:g} "
      f"({opt.schedule}), {model.init} initialisation{bias}; cells override it as listed below "
      "the table.")
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
  lines.append(f"Mean ± std (sample std) over seeds {', '.join(map(str, ablation.seeds))}.")
  wall_time = _wall_time(specs, workdir)
  if wall_time:
    lines.append(wall_time)
  return lines + [""]


def markdown(ablation, rows: Sequence[dict], specs, workdir: str) -> str:
  """table.md: the header, then one line per cell with each metric's mean ± std."""
  cells = list(dict.fromkeys(spec.cell.name for spec in specs))
  label_keys = list(dict.fromkeys(k for spec in specs for k in spec.cell.labels))
  refs, left_out = references(ablation, specs)
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
  lines += left_out
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
