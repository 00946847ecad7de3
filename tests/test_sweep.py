"""Ablations: the shipped smoke sweeps run end to end; a replica of a vectorised group is its
standalone run; sweeps resume, grow and refuse as promised; bad ablation configs are one line."""

import csv
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elbo_jax import config as config_lib
from elbo_jax import io, sweep, train
from elbo_jax.registry import ConfigError
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


def test_the_burda_smoke_ablation_fills_the_paper_column(tmp_path):
  from configs.ablations import burda_table1
  rows = sweep.run(burda_table1.get_config("smoke"), str(tmp_path))
  assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
  assert len(io.read_jsonl(tmp_path / "sweep_log.jsonl")) == 6  # seeds share a program
  table = (tmp_path / "table.md").read_text()
  assert "| 1 | iwae_k5 |" in table and "| 85.54 |" in table and "| 2 | vae_k5 |" in table
  assert "| 2 | iwae_k50_dreg |" in table
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
  ablation = _ablation(seeds=(0,))
  specs = sweep.run_specs(ablation, str(tmp_path))
  sweep.record_identity(ablation, str(tmp_path), specs, "")
  stored = io.read_json(tmp_path / "ablation.json")
  for run in stored["runs"].values():  # as written before training.early_stopping_patience
    del run["training"]["early_stopping_patience"]
  io.write_json_atomic(tmp_path / "ablation.json", stored)
  sweep.check_identity(ablation, str(tmp_path), specs)  # the new field at its default: the same
  with ablation.base.unlocked():
    ablation.base.training.early_stopping_patience = 5
  with pytest.raises(ConfigError, match="differs in: training.early_stopping_patience"):
    sweep.check_identity(ablation, str(tmp_path), sweep.run_specs(ablation, str(tmp_path)))


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
