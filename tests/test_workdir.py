"""The workdir and the scripts as a new user meets them: a refused config leaves nothing behind, a
fresh start forgets a killed attempt, checkpoints by wall time, one-line errors for bad flags, and
one process per workdir."""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from elbo_jax import io, workdir
from elbo_jax.registry import ConfigError
from elbo_jax.train import DivergenceError, train_and_evaluate
from tests.conftest import REPO, tiny_config, train_command, train_metrics

NO_CHECKPOINTS = ("--config.training.checkpoint_every=1000000",
                  "--config.training.checkpoint_every_seconds=0")


def _checkpoint_steps(path):
  directory = os.path.join(path, "checkpoints")
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(
      directory) else []


def _kill_when(proc, ready, what):
  """SIGKILLs `proc` as soon as ready() holds; fails if it ends first."""
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ready():
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  assert proc.wait() == -signal.SIGKILL, f"the run ended before {what}"


@pytest.mark.parametrize("override", [
    {"training.batch_size": 100000},
    {"objective.estimator": "dreg"},  # an IWAE estimator, on the ELBO
    {"objective.name": "iwae", "objective.estimator": "dreg", "posterior.name": "iaf"},
    {"prior.name": "mog", "prior.num_components": 0},  # checked in the prior's setup
    {"eval.num_test": 1},  # met only by the final evaluation
])
def test_a_refused_config_writes_nothing_to_its_workdir(tmp_path, override):
  with pytest.raises(ConfigError) as error:
    train_and_evaluate(tiny_config(**override), str(tmp_path / "run"))
  assert "\n" not in str(error.value)
  assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two script runs (8 s); the refusals themselves stay in the default suite
def test_the_corrected_command_trains_in_the_workdir_of_a_refused_one(tmp_path):
  run = str(tmp_path / "run")
  out = subprocess.run(train_command(run, 1, "--config.training.batch_size=100000"), cwd=REPO,
                       capture_output=True, text=True, check=False)
  assert out.returncode == 2 and "training.batch_size=100000 exceeds" in out.stderr
  train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), run)
  assert os.path.exists(os.path.join(run, "results.json"))


@pytest.mark.slow
def test_a_workdir_without_progress_is_taken_over_by_a_new_config(tmp_path):
  # A learning rate of 1e6 diverges at step 2, before the first checkpoint.
  with pytest.raises(DivergenceError):
    train_and_evaluate(tiny_config(**{"optimizer.learning_rate": 1e6}), str(tmp_path))
  assert os.path.exists(tmp_path / "failed.json") and not _checkpoint_steps(tmp_path)
  results = train_and_evaluate(tiny_config(), str(tmp_path))
  assert io.read_json(tmp_path / "config.json")["optimizer"]["learning_rate"] == 1e-3
  assert not os.path.exists(tmp_path / "failed.json")
  assert results["test"]["elbo"] > -60


def test_a_workdir_holding_a_checkpoint_or_results_of_another_config_is_refused(tmp_path):
  trained = tmp_path / "trained"
  train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), str(trained))
  only_checkpoints, only_results = tmp_path / "checkpoints_only", tmp_path / "results_only"
  shutil.copytree(trained, only_checkpoints)
  os.remove(only_checkpoints / "results.json")
  shutil.copytree(trained, only_results)
  shutil.rmtree(only_results / "checkpoints")
  for path in (only_checkpoints, only_results):
    with pytest.raises(ConfigError, match=r"holds a run of a different config \(differs in: "
                                          r"training.num_epochs\)"):
      train_and_evaluate(tiny_config(**{"training.num_epochs": 2}), str(path))


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_starts_afresh_with_clean_metrics(tmp_path):
  # 60 epochs of ~3 chunks each: time to kill the run after its first metrics, before its end.
  epochs, killed = 60, str(tmp_path / "killed")
  metrics = os.path.join(killed, "metrics.jsonl")
  proc = subprocess.Popen(train_command(killed, epochs, *NO_CHECKPOINTS), cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _kill_when(proc, lambda: os.path.exists(metrics) and len(io.read_jsonl(metrics)) >= 2,
             "it logged metrics")
  assert not _checkpoint_steps(killed)
  config = tiny_config(**{"training.num_epochs": epochs, "training.checkpoint_every": 1000000,
                          "training.checkpoint_every_seconds": 0.0})
  train_and_evaluate(config, killed)  # the same config as the command line's
  steps = [r["step"] for r in io.read_jsonl(metrics)]
  assert steps == sorted(set(steps))
  straight = str(tmp_path / "straight")
  train_and_evaluate(config, straight)
  assert train_metrics(killed) == train_metrics(straight)


@pytest.mark.slow
def test_checkpoint_every_seconds_saves_by_wall_time_without_changing_the_numbers(tmp_path,
                                                                                  monkeypatch):
  saved = []
  save = workdir.Run.save
  monkeypatch.setattr(workdir.Run, "save",
                      lambda self, state: (saved.append(int(state.step)), save(self, state)))
  runs = {}
  for name, seconds in (("by_time", 1e-9), ("at_the_end", 0.0)):
    saved.clear()
    train_and_evaluate(tiny_config(**{"training.num_epochs": 2,
                                      "training.checkpoint_every": 1000000,
                                      "training.checkpoint_every_seconds": seconds}),
                       str(tmp_path / name))
    runs[name] = list(saved)
  # 14 steps per epoch in chunks of at most 5: a save after every chunk, or only the final one.
  assert runs == {"by_time": [5, 10, 14, 19, 24, 28], "at_the_end": [28]}
  assert train_metrics(tmp_path / "by_time") == train_metrics(tmp_path / "at_the_end")
  import orbax.checkpoint as ocp
  finals = [ocp.CheckpointManager(str(tmp_path / name / "checkpoints")).restore(
      28, args=ocp.args.StandardRestore()) for name in runs]
  for a, b in zip(*(jax.tree.leaves(f) for f in finals)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("script,args,message", [
    ("train", ["--config.nonexistent=3"],
     "--config.nonexistent is not a field of the config; the config's top-level names are: "),
    ("train", ["--config.model.latnt_dim=3"],
     "--config.model.latnt_dim is not a field of the config; did you mean model.latent_dim"),
    ("train", ["--config.training.batch_size=abc"],
     "flag --config.training.batch_size=abc: invalid literal for int()"),
    ("train", ["--workdir=README.md"], "--workdir='README.md' is an existing file"),
    # get_config raising: its message, without the traceback ml_collections folds in.
    ("train", ["--config=configs/mnist_vae.py:foo"],
     "flag --config=configs/mnist_vae.py:foo: configs/mnist_vae.py: unknown variant 'foo'; "
     "allowed: paper, runlocal"),
    # A config file that does not exist: named at once, not when the config is first read.
    ("train", ["--config=configs/nonexist.py"],
     "--config=configs/nonexist.py: [Errno 2] No such file or directory: 'configs/nonexist.py'"),
    ("train", ["--config=configs/nonexist.py", "--config.prior.name=vamp"],
     "--config=configs/nonexist.py: [Errno 2] No such file or directory"),
    ("train", ["--workdir=README.md/run"], "--workdir='README.md/run' lies under "),
    # A saved config.json as the config: one that is missing, or is not a run's config.
    ("train", ["--config=tests/nonexistent.json"],
     "flag --config=tests/nonexistent.json: tests/nonexistent.json: file not found"),
    ("train", ["--config=docs/mnist_450/results.json"],
     "flag --config=docs/mnist_450/results.json: docs/mnist_450/results.json is not a run's "
     "config.json (unknown top-level names: "),
    ("evaluate", ["--workdir=README.md"], "--workdir='README.md' is an existing file"),
    ("evaluate", ["--workdir=runs/none", "--num_samples=abc"], "flag --num_samples=abc: "),
])
def test_bad_flags_are_one_line_on_stderr_with_exit_status_2(tmp_path, script, args, message):
  command = [sys.executable, "-m", f"experiments.{script}"]
  if script == "train":
    command += ["--config=tests/tiny_config.py", f"--workdir={tmp_path / 'run'}"]
  out = subprocess.run(command + args, cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [out.stderr.strip()]
  assert out.stderr.startswith(f"error: {message}")


@pytest.mark.slow
def test_a_runs_saved_config_json_is_a_config_for_experiments_train(tmp_path):
  # E.g. one cell of an ablation, <sweep>/cells/<cell>/seed-<s>/config.json, rerun alone.
  first, again = tmp_path / "first", tmp_path / "again"
  train_and_evaluate(tiny_config(**{"training.num_epochs": 1}), str(first))
  out = subprocess.run([sys.executable, "-m", "experiments.train",
                        f"--config={first / 'config.json'}", f"--workdir={again}",
                        "--config.training.num_epochs=2"],
                       cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0, out.stderr
  saved, rerun = (io.read_json(path / "config.json") for path in (first, again))
  assert rerun["training"]["num_epochs"] == 2 and rerun["model"]["hidden"] == [32]
  assert {**rerun, "training": saved["training"]} == saved


def _pid_holding(path):
  """The pid that workdir/.lock names once a process has locked it, else None."""
  lock = pathlib.Path(path, workdir.LOCK_FILE)
  text = lock.read_text() if lock.exists() else ""
  return int(text.split()[1]) if text.startswith("process ") else None


@pytest.mark.slow
def test_a_second_process_in_a_busy_workdir_is_refused_and_the_first_finishes_cleanly(tmp_path):
  run = str(tmp_path / "run")
  processes = []
  for _ in range(2):  # the same command twice, a second apart
    processes.append(subprocess.Popen(train_command(run, 30), cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    time.sleep(1.0)
  deadline = time.time() + 300
  while not os.path.exists(os.path.join(run, "config.json")) and time.time() < deadline:
    time.sleep(0.05)  # written once a run holds the lock
  processes.append(subprocess.Popen([sys.executable, "-m", "experiments.evaluate",
                                     f"--workdir={run}"], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True))
  outputs = []
  for p in processes:
    _, stderr = p.communicate()
    outputs.append((p.returncode, stderr))
  holder = _pid_holding(run)
  finished = [i for i, (rc, _) in enumerate(outputs) if rc == 0]
  # The two training commands are the same; whichever locked the workdir first trains.
  assert len(finished) == 1 and processes[finished[0]].pid == holder
  for rc, stderr in (o for i, o in enumerate(outputs) if i != finished[0]):
    assert rc == 2 and stderr.strip().splitlines() == [stderr.strip()]
    assert stderr.startswith(f"error: --workdir={run!r} is in use by process {holder} on ")
    assert "(training: train.py " in stderr
  steps = [r["step"] for r in io.read_jsonl(os.path.join(run, "metrics.jsonl"))]
  assert steps == sorted(set(steps)) and steps[-1] == 30 * 14
  assert io.read_json(os.path.join(run, "results.json"))["test"]["num_examples"] == 30


@pytest.mark.slow
def test_a_run_killed_while_holding_the_lock_leaves_the_workdir_free_to_resume(tmp_path):
  run = str(tmp_path / "run")
  proc = subprocess.Popen(train_command(run, 60), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  _kill_when(proc, lambda: bool(_checkpoint_steps(run)), "its first checkpoint")
  assert _pid_holding(run) == proc.pid
  resumed_at = max(_checkpoint_steps(run))
  before = [r for r in io.read_jsonl(os.path.join(run, "metrics.jsonl")) if r["step"] <= resumed_at]
  train_and_evaluate(tiny_config(**{"training.num_epochs": 60}), run)
  after = io.read_jsonl(os.path.join(run, "metrics.jsonl"))
  # A resumed run keeps what was logged up to its checkpoint, wall-clock speeds included.
  assert after[:len(before)] == before and after[-1]["step"] == 60 * 14


def test_a_checkpoint_written_before_the_critic_field_existed_restores_with_no_critic(tmp_path):
  import flax.struct
  import orbax.checkpoint as ocp

  from elbo_jax.train import TrainState

  @flax.struct.dataclass
  class StateBeforeCritics:  # TrainState as checkpoints up to elbo_jax 0.2.0 hold it
    step: jax.Array
    params: dict
    opt_state: tuple
    num_skipped: jax.Array
    initial: dict

  fields = dict(step=np.int32(7), params={"w": np.arange(3.0, dtype=np.float32)},
                opt_state=(np.ones(2, np.float32),), num_skipped=np.int32(1),
                initial={"bound": np.float32(-3.0), "grad_norm": np.float32(2.0)})
  as_arrays = lambda tree: jax.tree.map(jax.numpy.asarray, tree)
  manager = ocp.CheckpointManager(tmp_path / "old")
  manager.save(7, args=ocp.args.StandardSave(as_arrays(StateBeforeCritics(**fields))))
  manager.wait_until_finished()
  restored = workdir.restore_step(manager, 7, as_arrays(TrainState(**fields)))
  assert restored.critic is None and int(restored.step) == 7
  np.testing.assert_array_equal(restored.params["w"], fields["params"]["w"])
  # A state with a critic restores it whole.
  critic = {"params": {"k": np.full(4, 2.0, np.float32)}, "opt_state": (np.zeros(1, np.float32),)}
  manager = ocp.CheckpointManager(tmp_path / "new")
  manager.save(7, args=ocp.args.StandardSave(as_arrays(TrainState(**fields, critic=critic))))
  manager.wait_until_finished()
  restored = workdir.restore_step(manager, 7, as_arrays(TrainState(
      **fields, critic=jax.tree.map(np.zeros_like, critic))))
  np.testing.assert_array_equal(restored.critic["params"]["k"], critic["params"]["k"])


def test_the_recorded_commit_is_the_imported_codes_and_says_when_files_were_modified(tmp_path,
                                                                                     monkeypatch):
  git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True,
                                     capture_output=True, text=True).stdout.strip()
  assert workdir.read_git_commit(str(tmp_path)) == "unknown"
  git("init", "-q")
  (tmp_path / "code.py").write_text("a = 1\n")
  git("add", "code.py")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
  head = git("rev-parse", "HEAD")
  assert workdir.read_git_commit(str(tmp_path)) == head
  (tmp_path / "code.py").write_text("a = 2\n")
  assert workdir.read_git_commit(str(tmp_path)) == head + "+modified"
  (tmp_path / "notes.txt").write_text("untracked files are not the code\n")
  (tmp_path / "code.py").write_text("a = 1\n")
  assert workdir.read_git_commit(str(tmp_path)) == head
  # The library's own commit was read once, at import: later commits do not relabel a process.
  imported = workdir.git_commit()
  monkeypatch.setattr(workdir, "read_git_commit", lambda directory: "a later commit")
  assert workdir.git_commit() == imported
