"""Early stopping: a run stops `patience` epochs after its last new best validation bound, tests
its best-validation parameters, keeps them through the checkpoints' pruning, resumes after a kill
to the same end, and each replica of a group stops as its standalone run does."""

import math
import os
import shutil
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elbo_jax import data, io, report, train
from elbo_jax.early_stopping import Tracker
from elbo_jax.registry import ConfigError
from tests.conftest import REPO, tiny_config, train_command, train_metrics
from tests.test_workdir import _checkpoint_steps, _kill_when

# Updates that underflow to exactly zero: the gradient clipped to norm 1e-30, times a rate of
# 1e-30. The parameters never change, so the validation bound repeats its first value exactly.
FROZEN = {"optimizer.name": "sgd", "optimizer.b1": 0.0, "optimizer.learning_rate": 1e-30,
          "optimizer.clip_norm": 1e-30, "training.num_epochs": 20,
          "training.checkpoint_every": 14}  # one epoch of 1,400 digits in batches of 100
# 40 training images in batches of 10 (4 steps an epoch): the validation bound peaks after ~20
# epochs and then falls as the model overfits.
OVERFIT = {"data.preprocessing": "static_binarization", "training.batch_size": 10,
           "optimizer.learning_rate": 1e-2, "training.early_stopping_patience": 3,
           "training.num_epochs": 200, "training.checkpoint_every": 4}


def _validation_curve(workdir):
  return [r["eval/elbo"] for r in io.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "eval/elbo" in r]


def _numbers(results):
  """The test numbers of results.json, without the wall time they took."""
  return {k: v for k, v in results["test"].items() if k != "log_likelihood_seconds"}


def _tiny_data(tmp_path):
  """40 training digits, the 100 validation ones and 40 test ones, as a .npz file."""
  digits = data.load(data.default_config())
  path = str(tmp_path / "tiny.npz")
  np.savez(path, train=digits.train[:40, ..., 0], validation=digits.validation[..., 0],
           test=digits.test[:40, ..., 0])
  return path


def test_the_tracker_counts_epochs_without_a_new_best_after_the_warmup():
  tracker = Tracker(patience=2, warmup_epochs=3)
  # epoch: (validation bound, epochs without a new best after it, stopped)
  steps = {1: (-10.0, 0, False), 2: (-11.0, 0, False),  # a warm-up epoch does not count
           3: (-12.0, 1, False), 4: (-9.0, 0, False),  # a new best resets the count
           5: (math.nan, 1, False), 6: (-9.0, 2, True)}  # NaN and a tie are no new best
  for epoch, (value, bad, stopped) in steps.items():
    assert tracker.update(epoch, value) == (bad == 0 and epoch in (1, 4))
    assert (tracker.bad_epochs, tracker.stopped) == (bad, stopped)
  assert (tracker.best, tracker.best_epoch, tracker.best_step(7)) == (-9.0, 4, 28)
  # Replayed from metrics.jsonl records (7 steps an epoch), up to a checkpoint's step.
  records = [{"step": 7 * e, "eval/elbo": v} for e, (v, _, _) in steps.items()]
  records.insert(2, {"step": 10, "train/elbo": 0.0})
  replayed = Tracker(patience=2, warmup_epochs=3).replay(records, 7, 35)
  assert (replayed.best_epoch, replayed.bad_epochs, replayed.stopped) == (4, 1, False)
  assert Tracker(2, 3).replay(records, 7, None).best_epoch == 0  # a fresh start
  off = Tracker(patience=0, warmup_epochs=0).replay(records, 7, math.inf)
  assert not off.stopped and off.best_epoch == 0


def test_a_run_whose_validation_bound_stops_improving_stops_after_patience_epochs(tmp_path):
  config = tiny_config(**FROZEN, **{"training.early_stopping_patience": 2})
  results = train.train_and_evaluate(config, str(tmp_path))
  curve = _validation_curve(tmp_path)
  assert len(curve) == 3 and len(set(curve)) == 1  # epoch 1 the best, then 2 without a new one
  assert results["tested_parameters"] | {"selected_by": ""} == {
      "selected_by": "", "epoch": 1, "step": 14, "validation_elbo": curve[0],
      "epochs_trained": 3, "stopped_early": True}
  assert io.read_json(tmp_path / "results.json")["tested_parameters"]["epoch"] == 1
  assert _checkpoint_steps(tmp_path) == [28, 42]


def test_early_stopping_is_off_by_default_and_its_patience_is_checked(tmp_path):
  assert tiny_config().training.early_stopping_patience == 0
  with pytest.raises(ConfigError, match=r"training\.early_stopping_patience=-1 must be a "
                                        r"non-negative integer"):
    train.train_and_evaluate(tiny_config(**{"training.early_stopping_patience": -1}),
                             str(tmp_path))
  assert not os.listdir(tmp_path)


def _params(directory, step):
  return ocp.CheckpointManager(directory).restore(step, args=ocp.args.StandardRestore())


@pytest.mark.slow
def test_the_best_validation_parameters_are_tested_and_survive_the_pruning(tmp_path):
  config = tiny_config(**OVERFIT, **{"data.path": _tiny_data(tmp_path)})
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  curve, tested = _validation_curve(workdir), results["tested_parameters"]
  best = int(np.argmax(curve)) + 1
  assert (tested["epoch"], tested["step"], tested["validation_elbo"]) == (best, 4 * best,
                                                                           max(curve))
  assert tested["epochs_trained"] == len(curve) == best + 3 < 200 and tested["stopped_early"]
  # The regular checkpoints were pruned past the best epoch; its parameters were kept apart.
  steps = _checkpoint_steps(workdir)
  assert steps == [4 * len(curve) - 4, 4 * len(curve)] and tested["step"] not in steps
  assert sorted(map(int, os.listdir(os.path.join(workdir, "best")))) == [tested["step"]]
  # Those parameters give the best epoch's validation bound, the last ones the last epoch's.
  dataset = data.load(config.data)
  validate = report.make_validator(config, dataset, dataset.validation, dataset.test)
  best_params = _params(os.path.join(workdir, "best"), tested["step"])
  last_params = _params(os.path.join(workdir, "checkpoints"), steps[-1])["params"]
  assert validate(best_params)["eval/elbo"] == max(curve)
  assert validate(last_params)["eval/elbo"] == curve[-1] < max(curve)
  # And the test numbers in results.json are those of the best parameters.
  os.makedirs(tmp_path / "direct")
  shutil.copy(os.path.join(workdir, "metrics.jsonl"), tmp_path / "direct")  # for the curves
  direct = report.evaluate_run(str(tmp_path / "direct"), config, dataset, best_params,
                               progress=False)
  assert _numbers(direct) == _numbers(results)
  # Re-evaluated from its workdir, the run tests the same parameters.
  again = train.evaluate_workdir(workdir)
  assert again["tested_parameters"] == tested and _numbers(again) == _numbers(results)


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_best_parameters_and_stop(tmp_path):
  flags = [f"--config.{k}={v}" for k, v in OVERFIT.items() if k != "training.num_epochs"]
  flags.append(f"--config.data.path={_tiny_data(tmp_path)}")
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  subprocess.run(train_command(straight, 200, *flags), cwd=REPO, check=True, capture_output=True)
  proc = subprocess.Popen(train_command(killed, 200, *flags), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  # Mid-training, once a best and a later checkpoint exist (the best is pruned by then).
  _kill_when(proc, lambda: len(_checkpoint_steps(killed)) >= 2 and len(_validation_curve(killed))
             >= 8, "its eighth epoch")
  subprocess.run(train_command(killed, 200, *flags), cwd=REPO, check=True, capture_output=True)
  assert train_metrics(killed) == train_metrics(straight)
  a, b = (io.read_json(os.path.join(d, "results.json")) for d in (straight, killed))
  assert a["tested_parameters"] == b["tested_parameters"] and _numbers(a) == _numbers(b)
  assert os.listdir(os.path.join(killed, "best")) == os.listdir(os.path.join(straight, "best"))
  step = a["tested_parameters"]["step"]
  for x, y in zip(jax.tree.leaves(_params(os.path.join(straight, "best"), step)),
                  jax.tree.leaves(_params(os.path.join(killed, "best"), step))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_each_replica_of_a_group_stops_on_its_own_patience_as_its_standalone_run(tmp_path):
  # Frozen parameters: the replica without warm-up stops after epoch 3; the other's patience
  # counts from epoch 4 (objective.warmup_epochs = 4), so it stops after epoch 5.
  configs = [tiny_config(**FROZEN, **{"training.early_stopping_patience": 2,
                                      "objective.warmup_epochs": w}) for w in (0, 4)]
  group = [str(tmp_path / f"group{i}") for i in range(2)]
  grouped = train.train_group(configs, group)
  for i, (config, epochs) in enumerate(zip(configs, (3, 5))):
    alone = train.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
    assert grouped[i]["tested_parameters"] == alone["tested_parameters"]
    assert alone["tested_parameters"]["epochs_trained"] == epochs
    assert _checkpoint_steps(group[i])[-1] == 14 * epochs
    assert train_metrics(group[i]) == pytest.approx(train_metrics(tmp_path / f"alone{i}"),
                                                    rel=1e-5)
    for key in ("elbo", "kl", "log_likelihood"):
      assert grouped[i]["test"][key] == pytest.approx(alone["test"][key], rel=1e-5, abs=1e-5)
  # Run again, the finished group (checkpoints at different steps) trains no further.
  again = train.train_group(configs, group)
  assert [_numbers(r) for r in again] == [_numbers(r) for r in grouped]
  assert [_checkpoint_steps(g)[-1] for g in group] == [42, 70]
