"""Divergence stops a run like a NaN does, naming the step and the term; ordinary runs never trip
it (training.divergence_factor, training.divergence_grad_factor)."""

import importlib
import os
import subprocess

import pytest

from elbo_jax import io
from elbo_jax.train import DivergenceError, train_and_evaluate
from tests.conftest import REPO, tiny_config, train_command


def _checkpoint_steps(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


@pytest.mark.slow  # 6.5 s (a script run); the in-process divergence stops stay in the default suite
def test_a_learning_rate_of_1e6_stops_the_script_with_one_line_and_no_checkpoint(tmp_path):
  out = subprocess.run(train_command(tmp_path, 3, "--config.optimizer.learning_rate=1e6"),
                       cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [out.stderr.strip()]
  assert out.stderr.startswith("error: training diverged at step 2: the training bound ")
  failed = io.read_json(tmp_path / "failed.json")
  assert failed["step"] == 2 and failed["last_checkpoint"] is None
  assert "no checkpoint had been written" in failed["error"]
  assert not _checkpoint_steps(tmp_path) and not os.path.exists(tmp_path / "results.json")


def test_a_diverging_run_keeps_its_last_checkpoint_before_the_divergence(tmp_path):
  # The learning rate ramps up linearly (cosine warm-up towards 1e6) by 0.02 per step: training
  # goes well at first, checkpoints every chunk, and diverges once the rate nears 1.
  config = tiny_config(**{"optimizer.learning_rate": 1e6, "optimizer.schedule": "cosine",
                          "optimizer.warmup_steps": 50_000_000, "training.checkpoint_every": 5,
                          "training.num_epochs": 10})
  with pytest.raises(DivergenceError, match=r"^training diverged at step (\d+): the "
                                            r"(training bound|gradient norm) ") as error:
    train_and_evaluate(config, str(tmp_path))
  step = error.value.step
  kept = _checkpoint_steps(tmp_path)
  assert kept and max(kept) < step
  assert f"the last good checkpoint (step {max(kept)}) is kept" in str(error.value)
  assert io.read_json(tmp_path / "failed.json") == {
      "step": step, "error": str(error.value), "last_checkpoint": max(kept)}
  assert max(r["step"] for r in io.read_jsonl(tmp_path / "metrics.jsonl")) < step


def _digits_vae(**overrides):
  config = importlib.import_module("configs.digits_vae").get_config()
  with config.unlocked():
    # A small evaluation: it does not change training.
    overrides = {"training.num_epochs": 10, "training.progress": False, "eval.num_samples": 20,
                 "eval.num_test": 30, **overrides}
    for key, value in overrides.items():
      section, field = key.split(".")
      config[section][field] = value
  return config


ORDINARY_RUNS = {
    "tiny": tiny_config,
    "digits_vae": _digits_vae,
    "kl_warmup": lambda: _digits_vae(**{"objective.warmup_epochs": 5}),
    "beta_0.1": lambda: _digits_vae(**{"objective.beta": 0.1}),
}


# 5-12 s each: the slow suite (the default suite checks that a diverging run stops; that an
# ordinary one does not is what these add).
@pytest.mark.slow
@pytest.mark.parametrize("name", ORDINARY_RUNS)
def test_ordinary_runs_do_not_trip_the_divergence_checks(tmp_path, name):
  results = train_and_evaluate(ORDINARY_RUNS[name](), str(tmp_path))
  assert not os.path.exists(tmp_path / "failed.json") and results["test"]["elbo"] > -60
