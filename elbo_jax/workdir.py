"""A run's workdir: the lock, provenance, checkpoints (orbax) and metrics.

workdir/
  config.json      the resolved config; a different config in the same workdir is refused once the
                   run has a checkpoint or results (before that, the new config takes it over)
  run_info.json    package versions, git commit, seed, command line, devices
  checkpoints/     orbax checkpoints; orbax writes each into a temporary directory and renames it
                   when complete, so a run killed mid-save resumes from the last complete one
  best/            with early stopping only: the best-validation parameters (orbax), kept apart
                   from checkpoints/ so that its pruning never removes them
  metrics.jsonl, tensorboard/   scalars every `training.steps_per_call` steps
  failed.json      why training stopped (non-finite values, divergence), when it did
  results.json, samples.png, ... written by `elbo_jax.report`
  .lock            held (fcntl) by the process using the workdir; the kernel releases it when that
                   process dies, so a killed run never leaves it stuck
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

import jax
import orbax.checkpoint as ocp

from elbo_jax import config as config_lib
from elbo_jax import io
from elbo_jax import mesh as mesh_lib
from elbo_jax.metrics import METRICS_FILE, TENSORBOARD_DIR, MetricWriter, read_metrics
from elbo_jax.registry import ConfigError

PACKAGES = ("elbo_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
            "tensorflow-datasets", "ml-collections")
LOCK_FILE = ".lock"
FAILED_FILE = "failed.json"
RESULTS_FILE = "results.json"


def read_git_commit(directory: str) -> str:
  """HEAD of the git checkout holding `directory`, with "+modified" when tracked files differ
  from it; "unknown" outside a checkout or without git."""
  def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False,
                          cwd=directory).stdout.strip()

  try:
    head = git("rev-parse", "HEAD")
    if not head:
      return "unknown"
    return head + ("+modified" if git("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.TimeoutExpired):
    return "unknown"


# Read once, when this process imports the library: the code it runs. A commit made in the
# checkout while a long sweep runs must not relabel the sweep's later runs.
_COMMIT_AT_IMPORT = read_git_commit(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
  """The commit this process's elbo_jax code came from (`read_git_commit` at import time)."""
  return _COMMIT_AT_IMPORT


def provenance(config) -> dict:
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return {"seed": config.seed, "git_commit": git_commit(), "packages": versions,
          "python": sys.version.split()[0], "platform": platform.platform(),
          "devices": [str(d) for d in jax.devices()], "command": sys.argv}


def check_path(workdir: str) -> str:
  """The absolute workdir; a ConfigError if the path, or the nearest part of it that exists, is
  not a directory (e.g. --workdir=README.md/sub)."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={workdir!r} is an existing file, not a directory; "
                      "name a new or existing directory")
  above = os.path.dirname(path)
  while not os.path.exists(above) and os.path.dirname(above) != above:
    above = os.path.dirname(above)
  if not os.path.isdir(above):
    raise ConfigError(f"--workdir={workdir!r} lies under {above!r}, an existing file, not a "
                      "directory; name a new or existing directory")
  return path


class WorkdirLock:
  """An exclusive lock on workdir/.lock for as long as this process uses the workdir.

  A second process is refused at once with a one-line error naming the holder (pid, host,
  command). fcntl locks belong to the process, so the kernel drops one when its holder dies.
  """

  def __init__(self, workdir: str, purpose: str):
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(self._fd, 4096).decode("utf-8", "replace").strip() or "another process"
      os.close(self._fd)
      raise ConfigError(f"--workdir={workdir!r} is in use by {holder}; wait for it to finish or "
                        "use another --workdir") from None
    os.ftruncate(self._fd, 0)
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    os.write(self._fd, f"process {os.getpid()} on {socket.gethostname()} ({purpose}: "
                       f"{command})\n".encode())

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # closing the descriptor releases the flock
      self._fd = None


BEST_DIR = "best"
CHECKPOINT_DIR = "checkpoints"
RUN_INFO_FILE = "run_info.json"


def _checkpoint_manager(workdir: str, directory: str = CHECKPOINT_DIR,
                        max_to_keep: int | None = 2) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(workdir, directory),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                           enable_async_checkpointing=False))


def has_progress(workdir: str) -> bool:
  """Whether `workdir` holds a complete checkpoint or results (then its config is settled)."""
  if os.path.exists(os.path.join(workdir, RESULTS_FILE)):
    return True
  checkpoints = os.path.join(workdir, CHECKPOINT_DIR)
  return os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints))


def check_config_matches(workdir: str, config) -> None:
  """Refuses (ConfigError) a workdir that holds progress of a different config."""
  saved = config_lib.read_saved(workdir) if has_progress(workdir) else None
  if saved is None:
    return
  differing = config_lib.differences(saved, config_lib.to_json(config))
  if differing:
    raise ConfigError(f"--workdir={workdir!r} holds a run of a different config (differs in: "
                      f"{', '.join(differing)}); use a new --workdir")


class Run:
  """The bookkeeping of one training run in `workdir`: call `start` before logging metrics.

  Creating a Run locks the workdir and writes config.json and run_info.json; call it only once
  the config has been checked against the data (`build.build_trainer`). In a multi-process run
  every process makes one (checkpoints are written collectively) but only process 0 locks and
  writes files.
  """

  def __init__(self, workdir: str, config):
    self.workdir = check_path(workdir)
    self.primary = mesh_lib.is_primary()
    self._lock = WorkdirLock(self.workdir, "training") if self.primary else None
    try:
      if self.primary:
        io.remove_temporaries(self.workdir)  # left by a process killed mid-write
      check_config_matches(self.workdir, config)
      if self.primary:
        resolved = config_lib.to_json(config)
        saved = config_lib.read_saved(self.workdir)
        if saved is None or config_lib.differences(saved, resolved):
          # No progress yet (checked above): a different config takes the workdir over.
          io.write_json_atomic(os.path.join(self.workdir, config_lib.CONFIG_FILE), resolved)
        io.write_json_atomic(os.path.join(self.workdir, RUN_INFO_FILE), provenance(config))
      self.manager = _checkpoint_manager(self.workdir)
      # Pruned by `save` only: see `prune_best`.
      self.best = (_checkpoint_manager(self.workdir, BEST_DIR, None)
                   if config.training.early_stopping_patience else None)
    except BaseException:
      self._release()
      raise
    self.writer = None
    self.started = time.perf_counter()

  def checkpoint_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def latest_step(self):
    return self.manager.latest_step()

  def start(self, state, step: int | None):
    """Restores checkpoint `step` into `state`'s structure, or starts afresh if `step` is None.

    Checkpoints and best parameters after `step` (all of them, on a fresh start) are deleted.
    What was logged after it (everything, on a fresh start, e.g. by a run killed before its first
    checkpoint) is dropped from metrics.jsonl, and TensorBoard hides it, so no curve shows a step
    twice.
    """
    for manager in [m for m in (self.manager, self.best) if m is not None]:
      for later in sorted(manager.all_steps()):
        if step is None or later > step:
          manager.delete(later)
    restored = state if step is None else restore_step(self.manager, step, state)
    if self.primary:
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(self.workdir, FAILED_FILE))
      metrics = os.path.join(self.workdir, METRICS_FILE)
      if step is None:
        with contextlib.suppress(FileNotFoundError):
          os.remove(metrics)
        shutil.rmtree(os.path.join(self.workdir, TENSORBOARD_DIR), ignore_errors=True)
      else:
        kept = [r for r in read_metrics(self.workdir) if r["step"] <= step] if os.path.exists(
            metrics) else []
        io.write_text_atomic(metrics, "".join(io.json_line(r) for r in kept))
    self.writer = MetricWriter(self.workdir, purge_step=None if step is None else step + 1)
    return restored

  def save(self, state):
    step = int(mesh_lib.to_host(state.step))
    if self.manager.latest_step() != step:
      self.manager.save(step, args=ocp.args.StandardSave(state))
      self.manager.wait_until_finished()
    if self.best is not None:
      self.prune_best()

  def save_best(self, step: int, params) -> None:
    """Saves the parameters that set a new best validation bound at `step`."""
    self.best.save(step, args=ocp.args.StandardSave(params))
    self.best.wait_until_finished()

  def prune_best(self) -> None:
    """Deletes the best parameters that no regular checkpoint can resume to.

    A run resumes from a regular checkpoint (or, in a group, the one before the latest), and
    its best is then the newest best at or before that step: every best newer than the oldest
    regular checkpoint stays, and the newest one before it.
    """
    steps = self.checkpoint_steps()
    if not steps:
      return
    before = [s for s in self.best.all_steps() if s <= steps[0]]
    for s in before:
      if s < max(before):
        self.best.delete(s)

  def write_metrics(self, step: int, scalars: dict):
    self.writer.write_scalars(step, scalars)

  def fail(self, message: str, step: int) -> None:
    """Records why training stopped, for the user and for sweeps (which then skip the run)."""
    if self.primary:
      io.write_json_atomic(os.path.join(self.workdir, FAILED_FILE),
                           {"step": step, "error": message, "last_checkpoint": self.latest_step()})

  def _release(self):
    if self._lock is not None:
      self._lock.release()

  def close(self):
    if self.writer is not None:
      self.writer.close()
    self.manager.close()
    if self.best is not None:
      self.best.close()
    self._release()


def restore_step(manager, step: int, state):
  """Checkpoint `step` restored into `state`'s structure (arrays or shape structs).

  `state` gives the structure, shapes and dtypes to restore into, and the arrays their
  shardings. Shape structs without one are restored onto this process's first device, whatever
  devices wrote the checkpoint: a run trained on two devices evaluates on one.
  """
  first_device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def abstract(leaf):
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if getattr(struct, "sharding", None) is None:
      struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype, sharding=first_device)
    return struct

  target = jax.tree.map(abstract, state)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(target))
  except ValueError as error:
    # Written before the state gained a field that holds nothing here (TrainState.critic of an
    # objective without a critic): restore the others; the empty ones keep `state`'s values.
    if not dataclasses.is_dataclass(target):
      raise
    fields = {f.name: getattr(target, f.name) for f in dataclasses.fields(target)
              if jax.tree.leaves(getattr(target, f.name))}
    if len(fields) == len(dataclasses.fields(target)):
      raise
    try:
      return state.replace(**manager.restore(step, args=ocp.args.StandardRestore(fields)))
    except ValueError:
      raise error from None  # a checkpoint of another structure: the first mismatch says how


def restore_params(workdir: str, state, best_step: int | None = None):
  """The parameters of the latest checkpoint in `workdir`, restored into `state`'s structure, or
  with `best_step` those saved in workdir/best/ at that step (early stopping)."""
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR))
  step = manager.latest_step()
  if step is None:
    raise ConfigError(f"--workdir={workdir!r} holds no complete checkpoint")
  if best_step is None:
    return restore_step(manager, step, state).params
  return restore_best(workdir, best_step, state.params)


def restore_best(workdir: str, step: int, params):
  """The best-validation parameters saved at `step`, restored into `params`' structure."""
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), BEST_DIR))
  if step not in manager.all_steps():
    raise ConfigError(f"--workdir={workdir!r} holds no best-validation parameters of step {step} "
                      f"in {BEST_DIR}/ (it holds steps {sorted(manager.all_steps())}); the run "
                      "cannot test the parameters early stopping selected")
  return restore_step(manager, step, params)
