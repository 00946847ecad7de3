"""Several devices and several processes compute what one device computes.

Two processes on this machine, each with one CPU device, join over loopback (gloo) as two hosts
would; forced host devices (--xla_force_host_platform_device_count) stand in for accelerators.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import train
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # subprocesses and compilation: about a minute each; CI runs them


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(devices: int = 1) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _train(workdir, *flags, devices=1):
  return subprocess.run([sys.executable, "-m", "experiments.train", "--config=tests/tiny_config.py",
                         f"--workdir={workdir}", "--config.training.num_epochs=20", *flags],
                        cwd=REPO, env=_env(devices), check=True, capture_output=True, text=True)


def _two_processes(workdir, *flags, kill_after_checkpoint=False):
  """Starts processes 0 and 1 of one run; returns their Popen objects (running)."""
  port = _port()
  common = ["--config=tests/tiny_config.py", f"--workdir={workdir}",
            "--config.training.num_epochs=20", "--config.accelerator.distributed=explicit",
            f"--config.accelerator.coordinator_address=127.0.0.1:{port}",
            "--config.accelerator.num_processes=2", *flags]
  return [subprocess.Popen([sys.executable, "-m", "experiments.train", *common,
                            f"--config.accelerator.process_id={i}"], cwd=REPO, env=_env(1),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def _wait(procs):
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]


def _params(workdir):
  config = config_lib.load(workdir)
  return train.restore_run(workdir, config, data_lib.load(config.data))[1]


def _results(workdir):
  return json.load(open(os.path.join(workdir, "results.json")))["test"]


def _assert_same_run(a, b):
  for x, y in zip(jax.tree.leaves(_params(a)), jax.tree.leaves(_params(b))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  ra, rb = _results(a), _results(b)
  for key in ("log_likelihood", "elbo", "kl", "active_units"):
    assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-5), key
  ma = [r["train/elbo"] for r in map(json.loads, open(os.path.join(a, "metrics.jsonl")))]
  mb = [r["train/elbo"] for r in map(json.loads, open(os.path.join(b, "metrics.jsonl")))]
  np.testing.assert_allclose(ma, mb, rtol=1e-5)


def test_two_processes_train_as_one_process_with_two_devices_and_as_one_device(tmp_path):
  two_processes = str(tmp_path / "two_processes")
  _wait(_two_processes(two_processes))
  _train(tmp_path / "two_devices", devices=2)
  _train(tmp_path / "one_device", devices=1)
  _assert_same_run(two_processes, str(tmp_path / "two_devices"))
  _assert_same_run(two_processes, str(tmp_path / "one_device"))
  # Process 0 alone wrote the files: one copy of every metric.
  steps = [json.loads(line)["step"] for line in open(os.path.join(two_processes, "metrics.jsonl"))]
  assert steps == sorted(set(steps))


def test_a_two_process_run_resumes_after_one_of_its_processes_is_killed(tmp_path):
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  _wait(_two_processes(straight))
  procs = _two_processes(killed)
  checkpoints = os.path.join(killed, "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and procs[1].poll() is None:
    if os.path.isdir(checkpoints) and any(n.isdigit() for n in os.listdir(checkpoints)):
      procs[1].send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  assert procs[1].wait() == -signal.SIGKILL, "the run ended before it could be killed"
  # The survivor cannot go on without its peer; a scheduler restarts the whole job.
  procs[0].kill()
  procs[0].wait()
  _wait(_two_processes(killed))
  _assert_same_run(straight, killed)


def test_two_processes_start_the_output_bias_at_the_whole_training_sets_mean(tmp_path):
  # Each process holds half the training rows; a mean over its own half would start process 0's
  # parameters away from the one-device run's.
  flags = ("--config.training.num_epochs=2", "--config.model.output_bias=data_mean",
           "--config.model.init=glorot")
  two_processes = str(tmp_path / "two_processes")
  _wait(_two_processes(two_processes, *flags))
  _train(tmp_path / "one_device", *flags)
  _assert_same_run(two_processes, str(tmp_path / "one_device"))


@pytest.mark.parametrize("devices", [2, 8])
def test_the_test_log_likelihood_is_the_same_sharded_over_devices(tmp_path, devices):
  one = str(tmp_path / "one")
  _train(one, "--config.training.num_epochs=2", "--config.eval.num_test=0",
         "--config.eval.batch_size=16")
  on_one_device = _results(one)
  again = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", f"--workdir={one}", "--batch_size=16"],
      cwd=REPO, env=_env(devices), check=True, capture_output=True, text=True)
  assert "test log-likelihood" in again.stdout
  sharded = _results(one)  # rewritten by the evaluation on `devices` devices
  assert sharded["num_examples"] == on_one_device["num_examples"] == 297
  # The same per-example keys and parameters: the number one device gave, to float rounding.
  for key in ("log_likelihood", "elbo", "active_units"):
    assert sharded[key] == pytest.approx(on_one_device[key], abs=1e-4), key


def test_replicas_laid_on_the_mesh_replica_axis_give_the_same_runs(tmp_path):
  results = {}
  for parallelism, devices in ((1, 1), (2, 2)):
    workdir = tmp_path / f"replicas{parallelism}"
    subprocess.run([sys.executable, "-m", "experiments.ablate", "--config=tests/tiny_ablation.py",
                    f"--workdir={workdir}",
                    f"--config.base.accelerator.replica_parallelism={parallelism}"],
                   cwd=REPO, env=_env(devices), check=True, capture_output=True)
    results[parallelism] = list(csv.DictReader(open(workdir / "results.csv")))
  assert len(results[1]) == len(results[2]) == 4
  for a, b in zip(results[1], results[2]):
    assert a["cell"] == b["cell"] and a["seed"] == b["seed"]
    for key in ("elbo", "rate", "distortion", "log_likelihood"):
      assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-5), key


def test_asking_for_more_devices_than_exist_is_one_line(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.train", "--config=tests/tiny_config.py",
                        f"--workdir={tmp_path}", "--config.accelerator.num_devices=4"],
                       cwd=REPO, env=_env(2), capture_output=True, text=True)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == (
      "error: accelerator.num_devices=4 but 1 process(es) hold 2 cpu device(s) "
      "(cpu:0, cpu:1); ask for at most that many, a multiple of the number of processes")
