"""An ablation's workdir as the sweep keeps it (`elbo_jax.workdir` is one run's):

workdir/
  .lock            held (fcntl) by the runner for the whole sweep, taken before it loads data or
                   writes anything, so a second runner is refused at once (one line naming it)
  ablation.json    the ablation, every run's resolved config, the cells added with --cell (later
                   commands keep them without repeating the flag) and the last training command
  sweep_log.jsonl  one line per trained program: its runs, seconds, which of them resumed
  cells/<cell>/seed-<s>/   the runs, ordinary run directories

A run's config is settled once it has trained: a finished run, or one holding a checkpoint, that
the ablation now configures differently is refused. A run without progress takes the new config
(like a single run's workdir), and so does a failed run, trained afresh: a typo or a diverged
cell is corrected in the same workdir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator, Sequence

from elbo_jax import config as config_lib
from elbo_jax import io
from elbo_jax.registry import ConfigError
from elbo_jax.workdir import LOCK_FILE, WorkdirLock, has_progress

ABLATION_FILE = "ablation.json"
LOG_FILE = "sweep_log.jsonl"
# Fields of the run config that an ablation's identity ignores (they change no number).
NOT_IDENTITY = ("training.progress", "accelerator")


@contextlib.contextmanager
def locked(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds workdir/.lock for the block (only where `enabled`: process 0 of several).

  Creates the workdir; if the block fails before anything but the lock was written there, the
  directories this call created are removed again, so a refused command leaves nothing behind.
  """
  if not enabled:
    yield
    return
  existing = workdir
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  lock = WorkdirLock(workdir, "sweep")
  try:
    yield
  except BaseException:
    if existing != workdir and os.listdir(workdir) == [LOCK_FILE]:
      os.remove(os.path.join(workdir, LOCK_FILE))
      lock.release()
      path = workdir
      while path != existing and not os.listdir(path):
        os.rmdir(path)
        path = os.path.dirname(path)
    raise
  finally:
    lock.release()


def read(workdir: str) -> dict:
  """ablation.json, or {} where there is none; a corrupt one is a one-line ConfigError."""
  path = os.path.join(workdir, ABLATION_FILE)
  if not os.path.exists(path):
    return {}
  try:
    stored = io.read_json(path)
  except ValueError as e:
    raise ConfigError(f"{e}; restore it, or use a new --workdir") from None
  return stored


def added_cells(stored: dict) -> list[tuple[str, dict]]:
  """The cells earlier commands added with --cell: [(name, {"section.field": value})]."""
  tuples = lambda v: tuple(tuples(x) for x in v) if isinstance(v, list) else v
  return [(c["name"], {k: tuples(v) for k, v in c["overrides"].items()})
          for c in stored.get("added_cells", [])]


def changed_runs(ablation, stored: dict, workdir: str, specs: Sequence) -> list:
  """The failed runs that the ablation now configures differently (to be trained afresh).

  Raises a ConfigError if the workdir holds another ablation, or a run that has trained (results
  or a checkpoint) and is now configured differently. New cells and seeds are welcome; so are
  changed metrics, references and figures (they change no run), and new configs for runs that
  have not trained.
  """
  if stored and stored.get("name") != ablation.name:
    raise ConfigError(f"--workdir={workdir!r} holds ablation {stored.get('name')!r}, not "
                      f"{ablation.name!r}; use a new --workdir")
  recorded = stored.get("runs", {})
  changed = []
  for spec in specs:
    before = recorded.get(os.path.relpath(spec.workdir, workdir))
    before = config_lib.read_saved(spec.workdir) if before is None else (
        config_lib.with_defaults(before))
    differing = [] if before is None else config_lib.differences(
        before, config_lib.to_json(spec.config), ignore=NOT_IDENTITY)
    if not differing:
      continue
    if spec.status == "failed":
      changed.append(spec)
    elif has_progress(spec.workdir):
      cell = os.path.relpath(os.path.dirname(spec.workdir), workdir)
      raise ConfigError(
          f"--workdir={workdir!r} holds ablation {ablation.name!r} with a different config "
          f"(cell {spec.cell.name!r} differs in: {', '.join(differing)}) for runs that have "
          f"trained; use a new --workdir, or delete {cell} to retrain that cell")
  return changed


def discard(specs: Sequence) -> None:
  """Deletes the run directories of failed runs whose config changed: they train afresh."""
  for spec in specs:
    shutil.rmtree(spec.workdir)


def record(ablation, workdir: str, specs: Sequence, added: Sequence, command: str) -> None:
  """Writes ablation.json: the ablation, every run's resolved config, the cells added with --cell
  (`added`: Cells) and the command that trained."""
  stored = read(workdir) or {"runs": {}}
  stored["name"] = ablation.name
  stored["command"] = command
  stored["ablation"] = config_lib.to_json(
      {k: v for k, v in ablation.to_dict().items() if k != "base"})
  stored["added_cells"] = [{"name": c.name, "overrides": config_lib.to_json(c.overrides)}
                           for c in added]
  for spec in specs:
    stored["runs"][os.path.relpath(spec.workdir, workdir)] = config_lib.to_json(spec.config)
  io.write_json_atomic(os.path.join(workdir, ABLATION_FILE), stored)


def log_group(workdir: str, group: Sequence, seconds: float, resumed: Sequence) -> None:
  """Appends a trained program to sweep_log.jsonl: its runs, its wall time, and the runs that
  resumed from a checkpoint (the time before their interruption is in no entry)."""
  entry = {"runs": [os.path.relpath(s.workdir, workdir) for s in group], "seconds": seconds,
           "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
  if resumed:
    entry["resumed"] = [os.path.relpath(s.workdir, workdir) for s in resumed]
  io.append_jsonl(os.path.join(workdir, LOG_FILE), entry)
