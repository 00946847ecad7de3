"""Scalar metric logging: TensorBoard event files plus a plain metrics.jsonl.

TensorBoard is for looking at a run live; metrics.jsonl is the record that scripts, plots and tests
read back (no TensorFlow/TensorBoard reader needed). Each jsonl line is {"step": int, name: float}
with names like "train/elbo" or "eval/nll_k5000". In multi-host runs only process 0 writes, so the
files hold one copy of every value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
from tensorboardX import SummaryWriter

from elbo_jax.io import append_jsonl, read_jsonl

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
  """Writes scalars to workdir/tensorboard (event files) and workdir/metrics.jsonl.

  A no-op when `enabled` is False or when this is not JAX process 0. Usable as a context manager,
  which closes it on exit. `purge_step`: for a resumed run, the first step it logs again;
  TensorBoard then hides the events at steps >= purge_step that the interrupted run wrote, so
  no curve shows those steps twice.
  """

  def __init__(self, workdir: str | os.PathLike, enabled: bool = True,
               purge_step: int | None = None):
    self.active = enabled and jax.process_index() == 0
    self.metrics_path = os.path.join(os.fspath(workdir), METRICS_FILE)
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(logdir=os.path.join(os.fspath(workdir), TENSORBOARD_DIR),
                               purge_step=purge_step)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs {name: value} at `step`; values may be Python, NumPy or (scalar) JAX numbers."""
    if not self.active:
      return
    if self._tb is None:
      raise RuntimeError("MetricWriter.write_scalars called after close()")
    if "step" in scalars:
      raise ValueError("'step' is reserved in metrics.jsonl; rename that metric")
    # float() pulls JAX values to the host once, so both sinks log the same number.
    values = {name: float(value) for name, value in scalars.items()}
    append_jsonl(self.metrics_path, {"step": int(step), **values})
    for name, value in values.items():
      self._tb.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    # metrics.jsonl is flushed on every write; only the event file buffers.
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """Returns the records of workdir/metrics.jsonl in file order, skipping a truncated last line."""
  return read_jsonl(os.path.join(os.fspath(workdir), METRICS_FILE))
