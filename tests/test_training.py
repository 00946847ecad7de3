"""The training loop: it learns, resumes bitwise after SIGKILL, stops on NaN, refuses bad input."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from elbo_jax import io
from elbo_jax.registry import ConfigError
from elbo_jax.train import (
  WATCHED_TERMS,
  DivergenceError,
  NonFiniteError,
  chunk_plan,
  failure,
  train_and_evaluate,
)
from tests.conftest import REPO, tiny_config, train_command, train_metrics


def test_training_raises_the_validation_elbo_and_writes_results_and_figures(tmp_path):
  results = train_and_evaluate(tiny_config(**{"training.num_epochs": 6}), str(tmp_path))
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r["eval/elbo"] for r in records if "eval/elbo" in r]
  assert len(evals) == 6 and evals[-1] > evals[0] + 5
  test = json.load(open(tmp_path / "results.json"))["test"]
  assert test == json.loads(json.dumps(results["test"]))
  # The K-sample bound is the tighter one, on the same examples.
  assert test["log_likelihood"] >= test["elbo_on_ll_examples"] - 0.5
  for name in ("samples.png", "reconstructions.png", "training_curves.png", "config.json",
               "run_info.json"):
    assert os.path.getsize(tmp_path / name) > 0
  info = json.load(open(tmp_path / "run_info.json"))
  assert info["seed"] == 0 and info["packages"]["jax"] and "git_commit" in info
  assert results["data"]["preprocessing"] == "dynamic_binarization"


@pytest.mark.slow  # 9 s; the validation curve of every run is checked in the default suite
def test_test_set_elbo_curves_are_logged_every_epoch_on_request(tmp_path):
  train_and_evaluate(tiny_config(**{"eval.curve_num_test": 50}), str(tmp_path))
  records = [r for r in io.read_jsonl(tmp_path / "metrics.jsonl") if "test/elbo" in r]
  assert [r["step"] for r in records] == [14, 28, 42]  # every epoch of 14 steps
  for r in records:
    assert r["test/elbo"] == pytest.approx(r["test/log_px_given_z"] - r["test/kl"], abs=1e-4)
  assert records[-1]["test/elbo"] > records[0]["test/elbo"]


@pytest.mark.slow
def test_two_dimensional_latents_get_a_manifold_plot(tmp_path):
  results = train_and_evaluate(tiny_config(**{"model.latent_dim": 2,
                                              "training.num_epochs": 1}), str(tmp_path))
  assert results["figures"]["latent_manifold"] == "latent_manifold.png"


def _final_state(workdir):
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  return step, manager.restore(step, args=ocp.args.StandardRestore())


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_bitwise_identical_parameters(tmp_path):
  epochs = 12
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  subprocess.run(train_command(straight, epochs), cwd=REPO, check=True, capture_output=True)
  proc = subprocess.Popen(train_command(killed, epochs), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(killed, "checkpoints")
  deadline = time.time() + 120
  # Kill once a checkpoint exists and the run is still going: mid-training, maybe mid-save.
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints)):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
  subprocess.run(train_command(killed, epochs), cwd=REPO, check=True, capture_output=True)
  (step_a, state_a), (step_b, state_b) = _final_state(straight), _final_state(killed)
  assert step_a == step_b
  import jax
  for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_array_equal(a, b)
  assert train_metrics(straight) == train_metrics(killed)
  ra, rb = (json.load(open(os.path.join(d, "results.json")))["test"] for d in (straight, killed))
  assert ra["log_likelihood"] == rb["log_likelihood"] and ra["elbo"] == rb["elbo"]


@pytest.mark.slow
def test_a_batch_split_over_two_devices_trains_as_on_one_and_evaluates_on_one(tmp_path):
  # The config names the global batch; every draw is per example, so splitting the batch over a
  # 2-device mesh changes only the summation order. The 2-device checkpoint restores on 1 device.
  from elbo_jax.train import evaluate_workdir
  two = str(tmp_path / "two")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  subprocess.run(train_command(two, 3), cwd=REPO, env=env, check=True, capture_output=True)
  assert json.load(open(os.path.join(two, "run_info.json")))["devices"] == ["cpu:0", "cpu:1"]
  trained_on_two = json.load(open(os.path.join(two, "results.json")))["test"]
  one = train_and_evaluate(tiny_config(**{"training.num_epochs": 3}), str(tmp_path / "one"))
  assert trained_on_two["elbo"] == pytest.approx(one["test"]["elbo"], abs=1e-4)
  assert trained_on_two["log_likelihood"] == pytest.approx(one["test"]["log_likelihood"], abs=1e-4)
  again = evaluate_workdir(two)["test"]  # this process has one device
  assert again["log_likelihood"] == trained_on_two["log_likelihood"]


def test_a_half_written_checkpoint_is_never_read_back(tmp_path):
  workdir = str(tmp_path)
  train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), workdir)
  step, _ = _final_state(workdir)
  # What a kill mid-save leaves: orbax's temporary directory for a later step, never renamed.
  partial = os.path.join(workdir, "checkpoints", f"{step + 10}.orbax-checkpoint-tmp")
  os.makedirs(os.path.join(partial, "default"))
  open(os.path.join(partial, "default", "garbage"), "w").write("half")
  results = train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), workdir)
  assert _final_state(workdir)[0] == step and results["test"]["num_examples"] == 30


def test_evaluate_reproduces_results_json_from_the_workdir(tmp_path):
  from elbo_jax.train import evaluate_workdir
  first = train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), str(tmp_path))
  again = evaluate_workdir(str(tmp_path))
  for key in ("log_likelihood", "elbo", "kl", "active_units"):
    assert first["test"][key] == again["test"][key]


def test_a_workdir_holding_a_different_config_is_refused(tmp_path):
  train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), str(tmp_path))
  with pytest.raises(ConfigError, match=r"different config \(differs in: prior.name\)"):
    train_and_evaluate(tiny_config(**{"training.num_epochs": 1, "prior.name": "mog"}),
                       str(tmp_path))


def test_a_chunk_ends_at_steps_per_call_the_epochs_end_or_the_runs_end():
  # 10 steps per epoch, 4 per call, 25 in all.
  assert [chunk_plan(s, 10, 4, 25) for s in (0, 4, 8, 10, 20, 24)] == [
      (0, 0, 4), (0, 4, 4), (0, 8, 2), (1, 0, 4), (2, 0, 4), (2, 4, 1)]


def _chunk(bound=(-100.0, -100.0, -100.0), grad_norm=(1.0, 1.0, 1.0), nonfinite_at=None):
  nonfinite = np.zeros((3, len(WATCHED_TERMS)), bool)
  if nonfinite_at is not None:
    nonfinite[nonfinite_at[0], WATCHED_TERMS.index(nonfinite_at[1])] = True
  return {"bound": np.array(bound), "grad_norm": np.array(grad_norm), "nonfinite": nonfinite}


def test_failure_names_the_first_bad_step_and_what_went_wrong():
  config, initial = tiny_config(), {"bound": -100.0, "grad_norm": 1.0}
  assert failure(_chunk(), initial, config, first_step=10) is None
  stopped = failure(_chunk(nonfinite_at=(1, "kl")), initial, config, first_step=10)
  assert isinstance(stopped, NonFiniteError) and str(stopped) == "non-finite kl at step 11"
  skipping = tiny_config(**{"training.on_nonfinite": "skip"})
  assert failure(_chunk(nonfinite_at=(1, "kl")), initial, skipping, first_step=10) is None
  # The bound's floor: -100 minus divergence_factor (10) times 100.
  fallen = failure(_chunk(bound=(-100.0, -1000.0, -1200.0)), initial,
                   tiny_config(**{"training.divergence_factor": 10.0}), first_step=10)
  assert isinstance(fallen, DivergenceError) and "at step 12" in str(fallen)
  assert "fell below -1100" in str(fallen)
  # The gradient norm's ceiling: 1e4 times its first value.
  grown = failure(_chunk(grad_norm=(1.0, 2e4, 1.0)), initial, config, first_step=10)
  assert isinstance(grown, DivergenceError) and "gradient norm 2e+04 grew past 1e+04" in str(grown)
  off = tiny_config(**{"training.divergence_grad_factor": 0.0})
  assert failure(_chunk(grad_norm=(1.0, 2e4, 1.0)), initial, off, first_step=10) is None


def _nan_config(policy):
  # A fixed Gaussian standard deviation of 1e-30 makes (x - mean)^2 / s^2 overflow at step 1.
  return tiny_config(**{"likelihood.name": "gaussian", "likelihood.variance": "fixed",
                        "likelihood.scale": 1e-30, "data.preprocessing": "float",
                        "training.on_nonfinite": policy, "training.num_epochs": 1})


def test_a_nonfinite_loss_stops_the_run_naming_the_step_and_term(tmp_path):
  with pytest.raises(NonFiniteError, match=r"non-finite log_px_given_z.* at step 1;"):
    train_and_evaluate(_nan_config("stop"), str(tmp_path))
  assert not [n for n in os.listdir(tmp_path / "checkpoints") if n.isdigit()]


@pytest.mark.slow  # 8 s; stopping on a non-finite loss stays in the default suite
def test_nonfinite_steps_can_be_skipped_instead(tmp_path):
  train_and_evaluate(_nan_config("skip"), str(tmp_path))
  records = io.read_jsonl(tmp_path / "metrics.jsonl")
  assert records[-1]["train/skipped_steps"] == records[-1]["step"] > 0


@pytest.mark.parametrize("override,message", [
    ({"prior.name": "vampire"}, "prior.name='vampire' is not known; allowed values: "),
    ({"likelihood.name": "poisson"}, "likelihood.name='poisson' is not known"),
    ({"posterior.name": "nf"}, "posterior.name='nf' is not known"),
    ({"objective.name": "vi"}, "objective.name='vi' is not known"),
    ({"data.name": "imagenet"}, "data.name='imagenet' is not known"),
    ({"model.latent_dim": 0}, "model.latent_dim=0 must be a positive integer"),
    ({"objective.num_samples": -5}, "objective.num_samples=-5 must be a positive integer"),
    ({"training.batch_size": 0}, "training.batch_size=0 must be a positive integer"),
    ({"likelihood.name": "categorical"}, "likelihood.name='categorical'"),
    ({"accelerator.platform": "tpu"}, "accelerator.platform='tpu' is not present"),
])
def test_bad_input_is_a_one_line_error_naming_the_field(tmp_path, override, message):
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(tiny_config(**override), str(tmp_path))
  assert message in str(error.value) and "\n" not in str(error.value)


def test_the_script_reports_bad_input_without_a_stack_trace(tmp_path):
  out = subprocess.run(train_command(str(tmp_path), 1) + ["--config.prior.name=vampire"], cwd=REPO,
                       capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1].startswith("error: prior.name='vampire' is not known")
  assert "Traceback" not in out.stderr
