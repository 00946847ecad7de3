"""A likelihood, an objective, a metric and a figure added from outside the library
(tests/extension/) are selected from a config and go through training, evaluation and the
ablation runner without any library file knowing their names."""

import contextlib
import importlib
import io as std_io
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import stats

from elbo_jax import build, io, likelihoods, objectives, results
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax.ablation_plots import base as figures
from elbo_jax.registry import ConfigError
from experiments import cli
from tests.conftest import REPO

EXTENSION = ("tests.extension", "tests.extension.components", "tests.extension.ablation")


@pytest.fixture(scope="module", autouse=True)
def extension():
  """Imports tests/extension (which registers its additions, as a user's module would) for this
  file's tests only: the registries are as before once they are done."""
  registries = (likelihoods.LIKELIHOODS, objectives.OBJECTIVES, results.METRICS, figures.FIGURES)
  saved = [dict(r._items) for r in registries]
  ablation = importlib.import_module("tests.extension.ablation")
  yield ablation.components, ablation
  for registry, items in zip(registries, saved):
    registry._items = items
  for name in EXTENSION:
    sys.modules.pop(name, None)


def _config(**fields):
  c = importlib.import_module("tests.extension.ablation").get_config().base
  with c.unlocked():
    for field, value in fields.items():
      section, name = field.split(".")
      c[section][name] = value
  return c


@pytest.fixture(scope="module")
def model_and_data():
  config = _config()
  dataset = data_lib.load(config.data)
  model = build.build_model(config, dataset)
  params = model.init(jax.random.key(0), dataset.test[0], jax.random.key(1))
  return config, model, params, dataset.test[:5]


def test_the_likelihoods_option_comes_from_its_config_section(extension):
  components, _ = extension
  dataset = data_lib.load(_config().data)
  likelihood = build.build_model(_config(**{"likelihood.epsilon": 0.2}), dataset).likelihood
  assert isinstance(likelihood, components.RobustBernoulli) and likelihood.epsilon == 0.2


def test_the_robust_bernoulli_is_the_bernoulli_of_its_clipped_probability(extension):
  components, _ = extension
  raw = np.linspace(-4, 4, 12).reshape(3, 4)
  x = (np.arange(12).reshape(3, 4) % 2).astype(np.float32)
  robust = components.RobustBernoulli(event_shape=(4,), epsilon=0.1)
  p = 0.1 + 0.8 / (1 + np.exp(-raw))
  np.testing.assert_allclose(robust.apply({}, raw, x, method=robust.log_prob),
                             stats.bernoulli(p).logpmf(x).sum(-1), rtol=1e-5)
  plain = likelihoods.Bernoulli(event_shape=(4,))
  at_zero = components.RobustBernoulli(event_shape=(4,), epsilon=0.0)
  np.testing.assert_allclose(at_zero.apply({}, raw, x, method=at_zero.log_prob),
                             plain.apply({}, raw, x, method=plain.log_prob), rtol=1e-5)


def test_the_renyi_bound_lies_between_the_elbo_and_iwae_and_its_alpha_is_traced(model_and_data):
  config, model, params, x = model_and_data
  assert build.vectorizable_fields(config)[-1] == "objective.alpha"
  f = objectives.from_config(model, _config(**{"objective.num_samples": 50}).objective)
  key = jax.random.key(3)
  for example in x:
    iwae, half, elbo = (f(params, example, key, alpha=a) for a in (0.0, 0.5, 0.999))
    log_w = np.asarray(iwae["log_weights"], np.float64)
    np.testing.assert_allclose(iwae["bound"], np.logaddexp.reduce(log_w) - math.log(50),
                               rtol=1e-5)
    np.testing.assert_allclose(elbo["bound"], log_w.mean(), rtol=1e-3)
    assert elbo["bound"] <= half["bound"] <= iwae["bound"]


def test_an_option_of_another_objective_is_refused_by_name():
  with pytest.raises(ConfigError, match=r"^objective.alpha=0.2 applies to objective.name in: "
                     r"renyi; use objective.alpha=0.5$"):
    build.check_config(_config(**{"objective.name": "iwae", "objective.alpha": 0.2}))


def test_an_unread_option_is_no_part_of_a_runs_identity():
  a = config_lib.to_json(_config(**{"likelihood.num_mixtures": 3}))
  b = config_lib.to_json(_config(**{"likelihood.num_mixtures": 7}))
  assert config_lib.differences(a, b) == []
  c = config_lib.to_json(_config(**{"likelihood.epsilon": 0.02}))
  assert config_lib.differences(a, c) == ["likelihood.epsilon"]


@pytest.mark.slow  # 23 s; each addition is tested on its own above
def test_an_ablation_of_the_additions_trains_as_one_program_and_tabulates_the_metric(tmp_path):
  workdir = str(tmp_path / "renyi")
  out = subprocess.run(
      [sys.executable, "-m", "experiments.ablate", "--config=tests/extension/ablation.py",
       f"--workdir={workdir}", "--config.base.likelihood.epsilon=0.001"],
      cwd=REPO, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  # The cells differ only in the traced alpha: one program trained both.
  (logged,) = io.read_jsonl(os.path.join(workdir, "sweep_log.jsonl"))
  assert len(logged["runs"]) == 2
  mses, bounds = [], []
  for alpha in (0.0, 0.5):
    run = os.path.join(workdir, "cells", f"alpha={alpha}", "seed-0")
    saved = config_lib.load(run)
    assert (saved.objective.alpha, saved.likelihood.epsilon) == (alpha, 0.001)
    results = io.read_json(os.path.join(run, "results.json"))
    mses.append(results["test"]["reconstruction_mse"])
    bounds.append([r["train/bound"] for r in io.read_jsonl(os.path.join(run, "metrics.jsonl"))])
    printed = std_io.StringIO()
    with contextlib.redirect_stdout(printed):
      cli.print_results(results, run)
    assert f"reconstruction MSE: {mses[-1]:.4f}" in printed.getvalue()
  assert bounds[0] != bounds[1] and all(0 < m < 1 for m in mses)
  table = open(os.path.join(workdir, "table.md")).read()
  assert "| alpha | test ELBO | reconstruction MSE | seeds |" in table
  assert f"{mses[0]:.4f}" in table and f"{mses[0]:.4f}" in out.stdout
  assert os.path.exists(os.path.join(workdir, "mse_by_cell.png"))
  rows = open(os.path.join(workdir, "results.csv")).read().splitlines()
  assert "reconstruction_mse" in rows[0].split(",")
