"""Ablations: the shipped smoke sweeps run end to end; a replica of a vectorised group is its
standalone run; sweeps resume, grow and refuse as promised; bad ablation configs are one line."""

import csv
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import io, sweep, sweep_workdir, train
from elbo_jax.registry import ConfigError
from elbo_jax.version import __version__
from elbo_jax.workdir import WorkdirLock
from tests.conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ablation(**fields):
  c = sweep.default_config()
  c.name = "tiny"
  c.base = tiny_config()
  c.axes = (sweep.grid("objective.beta", (0.5, 1.0)),)
  c.seeds = (0, 1)
  c.metrics = ("elbo", "rate", "distortion")
  for key, value in fields.items():
    c[key] = value
  return c


def _rows(workdir):
  with open(os.path.join(workdir, "results.csv")) as f:
    return list(csv.DictReader(f))


def _params(workdir):
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  return manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())["params"]


@pytest.mark.slow
def test_the_beta_smoke_ablation_trains_21_runs_as_one_program_and_plots_the_plane(tmp_path):
  from configs.ablations import beta_rate_distortion
  rows = sweep.run(beta_rate_distortion.get_config("smoke"), str(tmp_path))
  assert len(rows) == 21 and all(r["status"] == "done" for r in rows)
  log = io.read_jsonl(tmp_path / "sweep_log.jsonl")
  assert len(log) == 1 and len(log[0]["runs"]) == 21
  table = (tmp_path / "table.md").read_text()
  assert "| beta=8.0 |" in table and "3/3" in table and "K=50 importance samples" in table
  assert os.path.getsize(tmp_path / "rate_distortion.png") > 10_000
  rate = {b: np.mean([r["rate"] for r in rows if r["cell"] == f"beta={b}"]) for b in (0.1, 8.0)}
  assert rate[0.1] > rate[8.0]  # a heavier KL weight buys less rate


@pytest.mark.slow
def test_the_burda_smoke_ablation_on_digits_leaves_out_the_papers_mnist_column(tmp_path):
  from configs.ablations import burda_table1
  rows = sweep.run(burda_table1.get_config("smoke"), str(tmp_path))
  assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
  assert len(io.read_jsonl(tmp_path / "sweep_log.jsonl")) == 6  # seeds share a program
  table = (tmp_path / "table.md").read_text()
  assert "| 1 | iwae_k5 |" in table and "| 2 | vae_k5 |" in table
  assert "| 2 | iwae_k50_dreg |" in table
  # MNIST's published NLLs do not compare with digits at K = 50: said, not tabulated.
  assert "| 85.54 |" not in table and "| layers | objective | test NLL | test ELBO |" in table
  assert "Published numbers are left out for `1-vae_k5`, `1-iwae_k5`, `2-vae_k5`" in table
  assert "test NLL with K = 50.\n" in table
  with open(tmp_path / "results.csv") as f:
    assert {"cell", "layers", "objective", "seed", "status", "nll", "elbo", "active_units",
            "overrides", "workdir"} <= set(csv.DictReader(f).fieldnames)


def test_the_burda_paper_variant_has_both_rows_all_six_columns_and_the_published_numbers():
  from configs.ablations import burda_table1
  ablation = burda_table1.get_config()
  specs = sweep.run_specs(ablation, "/nonexistent")
  assert [s.cell.name for s in specs] == [
      f"{layers}-{objective}" for layers in ("1", "2") for objective in (
          "vae_k1", "vae_k5", "vae_k50", "iwae_k5", "iwae_k50", "iwae_k50_dreg")]
  two_layer_k50 = next(s.config for s in specs if s.cell.name == "2-iwae_k50")
  assert (two_layer_k50.model.name, two_layer_k50.model.latent_dim, two_layer_k50.model.latent2_dim,
          two_layer_k50.objective.num_samples) == ("two_layer", 100, 50, 50)
  assert two_layer_k50.training.num_epochs == 3280 and two_layer_k50.training.batch_size == 20
  assert (two_layer_k50.model.init, two_layer_k50.optimizer.b1) == ("glorot", 0.9)
  assert config_lib.to_json(burda_table1.get_config("paper")) == config_lib.to_json(ablation)
  assert dict(ablation.references["2-iwae_k50"]) == {"nll": 82.90}


@pytest.mark.slow
def test_a_replica_of_a_vectorised_group_ends_as_its_standalone_run(tmp_path):
  # The replicas differ in every field a group may vary; each must match its own single run.
  variants = [
      {"seed": 0},
      {"seed": 1, "objective.beta": 0.5, "optimizer.learning_rate": 3e-3},
      {"seed": 2, "objective.warmup_epochs": 2, "objective.free_bits": 0.2},
  ]
  configs = [tiny_config(**{"training.num_epochs": 8, **v}) for v in variants]
  group = [str(tmp_path / f"group{i}") for i in range(len(configs))]
  grouped = train.train_group(configs, group)
  for i, config in enumerate(configs):
    alone = train.train_and_evaluate(config, str(tmp_path / f"alone{i}"))
    for a, b in zip(jax.tree.leaves(_params(group[i])),
                    jax.tree.leaves(_params(str(tmp_path / f"alone{i}")))):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("elbo", "kl", "log_likelihood", "active_units"):
      assert grouped[i]["test"][key] == pytest.approx(alone["test"][key], rel=1e-5, abs=1e-5)
    group_metrics = io.read_jsonl(os.path.join(group[i], "metrics.jsonl"))
    alone_metrics = io.read_jsonl(tmp_path / f"alone{i}" / "metrics.jsonl")
    assert [r["step"] for r in group_metrics] == [r["step"] for r in alone_metrics]
    np.testing.assert_allclose([r["train/elbo"] for r in group_metrics],
                               [r["train/elbo"] for r in alone_metrics], rtol=1e-5)


def _ablate_cmd(config, workdir, *extra):
  return [sys.executable, "-m", "experiments.ablate", f"--config={config}",
          f"--workdir={workdir}", *extra]


@pytest.mark.slow
def test_a_sweep_killed_mid_run_resumes_to_the_same_results(tmp_path):
  from tests import tiny_ablation
  config = "tests/tiny_ablation.py"
  straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
  sweep.run(tiny_ablation.get_config(), straight)
  proc = subprocess.Popen(_ablate_cmd(config, killed), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 180
  checkpoint = os.path.join(killed, "cells", "beta=0.5", "seed-0", "checkpoints")
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoint) and any(n.isdigit() for n in os.listdir(checkpoint)):
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  assert proc.wait() == -signal.SIGKILL, "the sweep ended before it could be killed"
  subprocess.run(_ablate_cmd(config, killed), cwd=REPO, check=True, capture_output=True)
  assert _rows(straight) == _rows(killed)


@pytest.mark.slow
def test_adding_a_cell_trains_only_that_cell(tmp_path):
  workdir = str(tmp_path)
  sweep.run(_ablation(), workdir)
  first = os.path.getmtime(tmp_path / "cells" / "beta=0.5" / "seed-0" / "results.json")
  rows = sweep.run(_ablation(), workdir, extra=[sweep.parse_cell("big:objective.beta=4.0")])
  log = io.read_jsonl(tmp_path / "sweep_log.jsonl")
  assert [sorted(entry["runs"]) for entry in log[1:]] == [
      ["cells/big/seed-0", "cells/big/seed-1"]]
  assert os.path.getmtime(tmp_path / "cells" / "beta=0.5" / "seed-0" / "results.json") == first
  assert [r["cell"] for r in rows] == ["beta=0.5"] * 2 + ["beta=1.0"] * 2 + ["big"] * 2
  assert "| big |" in (tmp_path / "table.md").read_text()
  # --table_only rebuilds the same outputs from disk.
  os.remove(tmp_path / "table.md")
  assert sweep.run(_ablation(), workdir, extra=[sweep.parse_cell("big:objective.beta=4.0")],
                   table_only=True) == rows
  assert "| big |" in (tmp_path / "table.md").read_text()


@pytest.mark.slow  # 9 s; test_workdir keeps refusing a different config in the default suite
def test_a_workdir_holding_a_different_ablation_is_refused(tmp_path):
  workdir = str(tmp_path)
  sweep.run(_ablation(seeds=(0,)), workdir)
  changed = _ablation(seeds=(0,))
  with changed.base.unlocked():
    changed.base.optimizer.learning_rate = 5e-3
  with pytest.raises(ConfigError, match=r"cell 'beta=0.5' differs in: optimizer.learning_rate"):
    sweep.run(changed, workdir)
  with pytest.raises(ConfigError, match="holds ablation 'tiny', not 'other'"):
    sweep.run(_ablation(seeds=(0,), name="other"), workdir)
  # Changing what is tabulated changes no run: accepted.
  sweep.run(_ablation(seeds=(0,), metrics=("elbo",)), workdir, table_only=True)


def test_a_sweep_recorded_before_a_config_field_existed_still_resumes(tmp_path):
  ablation, workdir = _ablation(seeds=(0,)), str(tmp_path)
  specs = sweep.run_specs(ablation, workdir)
  sweep_workdir.record(ablation, workdir, specs, (), "")
  for spec in specs:  # runs that have trained: a changed config is refused, not taken over
    os.makedirs(spec.workdir)
    io.write_json_atomic(os.path.join(spec.workdir, "results.json"), {})
  stored = io.read_json(tmp_path / "ablation.json")
  for run in stored["runs"].values():  # as written before training.early_stopping_patience
    del run["training"]["early_stopping_patience"]
  # The new field at its default: the same runs.
  assert sweep_workdir.changed_runs(ablation, stored, workdir, specs) == []
  with ablation.base.unlocked():
    ablation.base.training.early_stopping_patience = 5
  with pytest.raises(ConfigError, match="differs in: training.early_stopping_patience"):
    sweep_workdir.changed_runs(ablation, stored, workdir, sweep.run_specs(ablation, workdir))


@pytest.mark.slow  # 11 s; the test above keeps a sweep older than a field in the default suite
def test_a_workdir_recorded_before_a_config_field_existed_is_the_same_ablation(tmp_path):
  workdir = str(tmp_path)
  sweep.run(_ablation(seeds=(0,)), workdir)
  path = tmp_path / "ablation.json"
  stored = io.read_json(path)
  for run in stored["runs"].values():  # as written before model.init and output_bias existed
    del run["model"]["init"], run["model"]["output_bias"]
  io.write_json_atomic(path, stored)
  sweep.run(_ablation(seeds=(0,)), workdir, table_only=True)


@pytest.mark.parametrize("fields,message", [
    ({"axes": (sweep.grid("objective.betta", (1.0,)),)},
     "ablation cell 'betta=1.0': 'objective.betta' is not a config field; closest: objective.beta"),
    ({"axes": (sweep.grid("objective.beta", ()),)}, "axis 'beta' has no values"),
    ({"axes": (sweep.grid("objective.beta", ("big",)),)},
     "objective.beta='big' has the wrong type; it is a float, e.g. 1.0"),
    ({"axes": (sweep.grid("model.latent_dim", (2, 3)),), "vectorize": "all"},
     "runs of one vectorised group differ in model.latent_dim"),
    ({"seeds": ()}, "seeds=() is empty"),
    ({"vectorize": "some"}, "vectorize='some' is not known; allowed values: auto, all, none"),
    ({"metrics": ("nlll",)}, "ablation metrics='nlll' is not known; allowed values: "),
    ({"axes": (sweep.grid("objective.beta", (-1.0,)),)}, "objective.beta=-1.0 must be"),
])
def test_bad_ablation_configs_are_one_line_errors(tmp_path, fields, message):
  with pytest.raises(ConfigError) as error:
    sweep.run(_ablation(**fields), str(tmp_path / "w"))
  assert message in str(error.value) and "\n" not in str(error.value)
  assert not (tmp_path / "w").exists()  # refused before anything is written


@pytest.mark.slow  # 10 s; a diverging single run is checked in the default suite (test_divergence)
def test_a_diverging_replica_stops_alone_and_is_reported(tmp_path):
  ablation = _ablation(axes=(sweep.grid("optimizer.learning_rate", (1e-3, 1e6)),), seeds=(0,),
                       vectorize="all")
  rows = sweep.run(ablation, str(tmp_path))
  status = {r["cell"]: r["status"] for r in rows}
  assert status == {"learning_rate=0.001": "done", "learning_rate=1000000.0": "failed"}
  assert "training diverged at step" in next(r["error"] for r in rows if r["status"] == "failed")
  assert "Stopped runs:" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("steps,plan", [
    ([[], []], [(None, [0, 1])]),
    ([[10, 20], [10, 20]], [(20, [0, 1])]),
    ([[10, 20], [10]], [(10, [0, 1])]),        # killed between the two runs' saves
    ([[10], [], []], [(None, [0, 1, 2])]),       # killed during the first round of saves
    ([[10, 20], []], [(20, [0]), (None, [1])]),  # a new seed beside a half-trained one
    ([[10, 20], [5]], [(20, [0]), (5, [1])]),
])
def test_runs_resume_together_from_their_common_checkpoint(steps, plan):
  assert train.plan_resume(steps) == plan


def test_a_cell_from_the_command_line_parses_its_values():
  cell = sweep.parse_cell("k50:objective.name=iwae,objective.num_samples=50,model.hidden=(8,8)")
  assert cell.overrides == {"objective.name": "iwae", "objective.num_samples": 50,
                            "model.hidden": (8, 8)}
  with pytest.raises(ConfigError, match="must look like name:section.field=value"):
    sweep.parse_cell("objective.beta=2")


# What a researcher trips over (issue 18): mistakes are corrected in the same workdir, exit codes
# and errors are honest, and nothing is loaded or written before the sweep's lock is held.

ADDED = "c:optimizer.learning_rate=0.002"  # a cell added from the command line


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory):
  """A finished sweep of two axis cells and one cell added with --cell, one seed each; tests work
  on copies (`_copy`)."""
  workdir = str(tmp_path_factory.mktemp("trained") / "sweep")
  sweep.run(_ablation(seeds=(0,)), workdir, extra=[sweep.parse_cell(ADDED)],
            command=f"python -m experiments.ablate --cell={ADDED}")
  return workdir


def _copy(trained_sweep, tmp_path):
  return shutil.copytree(trained_sweep, str(tmp_path / "sweep"))


@pytest.mark.parametrize("field,value", [
    ("data.path", "/nonexistent/mnist.pkl.gz"), ("data.preprocessing", "dynamic"),
    ("data.name", "mnistt")])
def test_a_command_refused_for_its_data_writes_nothing(tmp_path, field, value):
  ablation = _ablation(seeds=(0,))
  with ablation.base.unlocked():
    ablation.base[field.split(".")[0]][field.split(".")[1]] = value
  with pytest.raises(ConfigError) as error:
    sweep.run(ablation, str(tmp_path / "w"))
  assert str(error.value).startswith("ablation cell 'beta=0.5': ") and field in str(error.value)
  assert not (tmp_path / "w").exists()  # so the corrected command finds a free workdir


@pytest.mark.slow
def test_runs_that_have_not_trained_take_the_corrected_config(tmp_path):
  # What an earlier runner left after a typo: ablation.json recording configs that never trained.
  workdir = tmp_path / "w"
  typo = _ablation(seeds=(0,))
  with typo.base.unlocked():
    typo.base.data.path = "/nonexistent/mnist.pkl.gz"
  specs = sweep.run_specs(typo, str(workdir))
  os.makedirs(specs[0].workdir)
  io.write_json_atomic(workdir / "ablation.json", {"name": "tiny", "runs": {
      os.path.relpath(s.workdir, workdir): config_lib.to_json(s.config) for s in specs}})
  rows = sweep.run(_ablation(seeds=(0,)), str(workdir))
  assert [r["status"] for r in rows] == ["done", "done"]
  assert io.read_json(workdir / "ablation.json")["runs"]["cells/beta=0.5/seed-0"]["data"][
      "path"] == ""


def test_every_cell_is_checked_against_the_data_before_the_first_run_starts(tmp_path):
  gaussian = sweep.parse_cell("g:likelihood.name=gaussian,likelihood.variance=foo")
  with pytest.raises(ConfigError, match=r"^ablation cell 'g': likelihood.variance='foo' is not "
                                        "known; allowed values: fixed, global, per_pixel$"):
    sweep.run(_ablation(seeds=(0,)), str(tmp_path / "w"), extra=[gaussian])
  assert not (tmp_path / "w").exists()  # no other cell trained first


@pytest.mark.slow
def test_a_failed_cell_may_be_changed_in_place_and_is_retried_only_when_asked(trained_sweep,
                                                                            tmp_path):
  workdir = _copy(trained_sweep, tmp_path)
  run = os.path.join(workdir, "cells", "c", "seed-0")
  # The added cell failed after its first checkpoint (kept, as a diverged run keeps it).
  os.remove(os.path.join(run, "results.json"))
  io.write_json_atomic(os.path.join(run, "failed.json"),
                       {"step": 40, "error": "training diverged at step 40", "last_checkpoint": 40})
  marker = os.path.join(run, "written_by_the_failed_attempt")
  open(marker, "w").close()
  assert sweep.run(_ablation(seeds=(0,)), workdir)[-1]["status"] == "failed"  # not retried
  assert os.path.exists(marker)
  rows = sweep.run(_ablation(seeds=(0,)), workdir,
                   extra=[sweep.parse_cell("c:optimizer.learning_rate=0.001")])
  assert rows[-1]["status"] == "done" and not os.path.exists(os.path.join(run, "failed.json"))
  assert io.read_json(os.path.join(run, "config.json"))["optimizer"]["learning_rate"] == 0.001
  # Trained afresh under the new config, not resumed from the old config's checkpoint.
  last = io.read_jsonl(os.path.join(workdir, "sweep_log.jsonl"))[-1]
  assert last["runs"] == ["cells/c/seed-0"] and "resumed" not in last
  assert not os.path.exists(marker)
  # A run that finished keeps its config.
  with pytest.raises(ConfigError, match=r"cell 'c' differs in: optimizer.learning_rate\) for "
                                        r"runs that have trained; .* or delete cells/c "):
    sweep.run(_ablation(seeds=(0,)), workdir,
              extra=[sweep.parse_cell("c:optimizer.learning_rate=0.003")])


@pytest.mark.slow
def test_cells_added_with_cell_are_kept_by_later_commands(trained_sweep, tmp_path):
  workdir = _copy(trained_sweep, tmp_path)
  rows = sweep.run(_ablation(seeds=(0,)), workdir, table_only=True)  # no --cell
  assert [r["cell"] for r in rows] == ["beta=0.5", "beta=1.0", "c"]
  table = open(os.path.join(workdir, "table.md")).read()
  assert "| c |" in table and f"`--cell={ADDED}`" in table
  log = io.read_jsonl(os.path.join(workdir, "sweep_log.jsonl"))
  assert sweep.run(_ablation(seeds=(0,)), workdir) == rows  # trains nothing
  assert io.read_jsonl(os.path.join(workdir, "sweep_log.jsonl")) == log


@pytest.mark.slow
def test_the_header_counts_every_run_and_a_restart_removes_what_a_kill_left(trained_sweep,
                                                                            tmp_path):
  workdir = _copy(trained_sweep, tmp_path)
  # Killed after two runs had written their results but before their program's log entry; the
  # rerun trained the third, resumed from its checkpoint.
  log = os.path.join(workdir, "sweep_log.jsonl")
  io.write_text_atomic(log, io.json_line({"runs": ["cells/c/seed-0"], "seconds": 30.0,
                                          "resumed": ["cells/c/seed-0"]}))
  orphan = os.path.join(workdir, ".results.csv.0123456789abcdef0123456789abcdef.tmp")
  open(orphan, "w").close()
  sweep.run(_ablation(seeds=(0,)), workdir)
  header = open(os.path.join(workdir, "table.md")).read()
  assert ("Wall time: 0.5 min in 1 program(s), training and evaluation (sweep_log.jsonl), for 3 "
          "runs; 3 of them ran partly in an interrupted invocation, whose time before the "
          "interruption is not included.") in header
  assert not os.path.exists(orphan)


@pytest.mark.slow
def test_the_header_names_the_package_version_and_commit_even_for_older_results(trained_sweep,
                                                                              tmp_path):
  workdir = _copy(trained_sweep, tmp_path)
  table = open(os.path.join(workdir, "table.md")).read()
  commit = io.read_json(os.path.join(workdir, "cells", "c", "seed-0", "results.json"))["code"][
      "git_commit"]
  assert f"Code: elbo_jax {__version__}, commit {commit[:7]} (all 3 finished runs)." in table
  # results.json before it recorded the code: run_info.json says it, or nothing does.
  for cell in ("beta=0.5", "beta=1.0", "c"):
    run = os.path.join(workdir, "cells", cell, "seed-0")
    results = io.read_json(os.path.join(run, "results.json"))
    del results["code"]
    io.write_json_atomic(os.path.join(run, "results.json"), results)
  os.remove(os.path.join(workdir, "cells", "c", "seed-0", "run_info.json"))
  sweep.run(_ablation(seeds=(0,)), workdir, table_only=True)
  table = open(os.path.join(workdir, "table.md")).read()
  info = io.read_json(os.path.join(workdir, "cells", "beta=0.5", "seed-0", "run_info.json"))
  installed = importlib.metadata.version("elbo_jax")
  assert (f"Code: elbo_jax {installed}, commit {info['git_commit'][:7]} (2 runs); elbo_jax "
          "(version unrecorded), commit unrecorded (1 run).") in table
  assert "| c |" in table


def test_table_only_on_a_workdir_without_an_ablation_is_refused(tmp_path):
  with pytest.raises(ConfigError, match=r"holds no ablation \(no ablation.json\); check the "
                                        "path, or leave out --table_only to train it"):
    sweep.run(_ablation(), str(tmp_path / "typo"), table_only=True)
  assert not (tmp_path / "typo").exists()


def test_a_second_runner_is_refused_before_it_loads_data_or_writes(tmp_path, monkeypatch):
  workdir = str(tmp_path / "w")
  held = WorkdirLock(workdir, "sweep")  # a runner at work
  try:
    monkeypatch.setattr(data_lib, "load", lambda *a, **k: pytest.fail("loaded data"))
    with pytest.raises(ConfigError, match=rf"--workdir={workdir!r} is in use by process "
                                          rf"{os.getpid()} on .* \(sweep: "):
      sweep.run(_ablation(), workdir)
    assert sorted(os.listdir(workdir)) == [".lock"]
  finally:
    held.release()


def _ablate(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "experiments.ablate", *args], cwd=REPO,
                        capture_output=True, text=True, check=False, **kwargs)


@pytest.mark.slow
def test_a_sweep_with_failed_runs_exits_non_zero_after_writing_its_table(tmp_path):
  workdir = str(tmp_path / "w")
  command = ["--config=tests/tiny_ablation.py", f"--workdir={workdir}", "--config.seeds=(0,)",
             "--cell=lr:optimizer.learning_rate=1e6"]
  out = _ablate(*command)
  assert out.returncode == 1 and "| lr | — | — | — | 0/1 (1 failed) |" in out.stdout
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: 1 of 3 runs failed (cells: lr; why: 'Stopped runs' in table.md)")
  assert "--retry_failed" in out.stderr
  out = _ablate(*command, "--retry_failed")  # tried again: diverges again
  assert out.returncode == 1
  assert len(io.read_jsonl(os.path.join(workdir, "sweep_log.jsonl"))) == 2
  out = _ablate(*command[:-1], "--cell=lr:optimizer.learning_rate=3e-3")  # the advice, in place
  assert out.returncode == 0 and "| lr | " in out.stdout and "0/1" not in out.stdout


def test_a_workdir_under_a_file_is_a_one_line_error(tmp_path):
  out = _ablate("--config=tests/tiny_ablation.py", "--workdir=README.md/sweep")
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      f"error: --workdir='README.md/sweep' lies under {os.path.join(REPO, 'README.md')!r}, an "
      "existing file, not a directory; name a new or existing directory"]


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_same_command_resumes(tmp_path):
  workdir = str(tmp_path / "w")
  command = [sys.executable, "-m", "experiments.ablate", "--config=tests/tiny_ablation.py",
             f"--workdir={workdir}", "--config.seeds=(0,)", "--config.base.training.num_epochs=8"]
  # SIGINT at its default (a shell may start background jobs ignoring it).
  proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                      signal.SIG_DFL))
  checkpoint = os.path.join(workdir, "cells", "beta=0.5", "seed-0", "checkpoints")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(checkpoint) and any(n.isdigit() for n in os.listdir(checkpoint)):
      proc.send_signal(signal.SIGINT)
      break
    time.sleep(0.05)
  _, stderr = proc.communicate()
  assert proc.returncode == 130, stderr
  assert stderr.strip().splitlines() == [
      "interrupted: checkpoints and finished results are kept; run the same command again to "
      "resume"]
  out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  assert out.returncode == 0 and "| beta=1.0 | " in out.stdout
  assert io.read_jsonl(os.path.join(workdir, "sweep_log.jsonl"))[-1]["resumed"]
