"""Early stopping on the validation bound, with the best-validation parameters as the tested ones.

With `training.early_stopping_patience` = P > 0, each epoch's validation ELBO ("eval/elbo": the
single-sample bound on the validation set, with the fixed evaluation key, that the trainer logs)
is compared with the best so far. A strictly higher value is the new best: its parameters are
saved to workdir/best/ (`workdir.Run.save_best`), apart from checkpoints/, so the regular
checkpoints' pruning never removes them. P epochs in a row without a new best stop the run, and
the test evaluation (results.json, figures) uses the best parameters. P = 0 (the default) changes
nothing: no best is kept and the last parameters are tested.

Epochs of the KL warm-up (1-based epoch < objective.warmup_epochs) may set a new best but do not
count towards P, as in Tomczak & Welling's code (jmtomczak/vae_vampprior,
utils/perform_experiment.py: `if epoch < args.warmup: e = 0`): while beta < 1 the training
objective is not the bound being validated. Their code stops once the counter exceeds P (P + 1
epochs without a new best); here P epochs stop the run.

The tracker saves no state of its own: it is replayed from metrics.jsonl, which a resumed run
truncates at the checkpoint it resumes from, so it is by construction the state of that
checkpoint (best value, best epoch, epochs without a new best).
"""

from __future__ import annotations

import dataclasses
import math

MONITOR = "eval/elbo"


@dataclasses.dataclass
class Tracker:
  """One run's early-stopping state; `patience` 0 tracks nothing and never stops."""

  patience: int
  warmup_epochs: float
  best: float = -math.inf
  best_epoch: int = 0  # 1-based; 0 before the first validation
  bad_epochs: int = 0

  @classmethod
  def from_config(cls, config) -> Tracker:
    return cls(config.training.early_stopping_patience, config.objective.warmup_epochs)

  @property
  def enabled(self) -> bool:
    return self.patience > 0

  @property
  def stopped(self) -> bool:
    return self.enabled and self.bad_epochs >= self.patience

  def update(self, epoch: int, value: float) -> bool:
    """Records the validation bound after 1-based `epoch`; returns whether it is a new best."""
    if value > self.best:  # a NaN is never a new best
      self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
      return True
    if epoch >= self.warmup_epochs:
      self.bad_epochs += 1
    return False

  def replay(self, records: list[dict], steps_per_epoch: int, up_to_step) -> Tracker:
    """This tracker, reset and fed the validation bounds logged at steps <= up_to_step (None:
    none, a fresh start; math.inf: all) in metrics.jsonl's `records`."""
    self.best, self.best_epoch, self.bad_epochs = -math.inf, 0, 0
    if self.enabled and up_to_step is not None:
      for r in records:
        if MONITOR in r and r["step"] <= up_to_step:
          self.update(r["step"] // steps_per_epoch, r[MONITOR])
    return self

  def best_step(self, steps_per_epoch: int) -> int:
    return self.best_epoch * steps_per_epoch

  def report(self, steps_per_epoch: int, step: int) -> dict:
    """results.json's account of the tested parameters, after training stopped at `step`."""
    return {"selected_by": f"best validation ELBO ({MONITOR}), early stopping with patience "
                           f"{self.patience} epochs",
            "epoch": self.best_epoch, "step": self.best_step(steps_per_epoch),
            "validation_elbo": self.best, "epochs_trained": step // steps_per_epoch,
            "stopped_early": self.stopped}
