"""accelerator.compute_dtype: bfloat16 networks train as well as float32 ones, keep float32
parameters and optimiser state, and are evaluated in float32."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from elbo_jax import data as data_lib
from elbo_jax import evaluation, io, mesh, report, train
from elbo_jax.build import build_trainer
from elbo_jax.registry import ConfigError
from tests.conftest import tiny_config

EPOCHS = 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{"float32": (workdir, results), "bfloat16": (...)}: the tiny digits config in each dtype."""
  out = {}
  for dtype in ("float32", "bfloat16"):
    workdir = str(tmp_path_factory.mktemp(dtype))
    config = tiny_config(**{"accelerator.compute_dtype": dtype, "training.num_epochs": EPOCHS})
    out[dtype] = workdir, train.train_and_evaluate(config, workdir)
  return out


@pytest.mark.slow  # the two trained runs of `runs` (10 s); the step and evaluation dtypes stay
def test_a_bfloat16_run_ends_within_half_a_nat_of_the_float32_run(runs):
  elbo32 = runs["float32"][1]["test"]["elbo"]
  elbo16 = runs["bfloat16"][1]["test"]["elbo"]
  assert abs(elbo16 - elbo32) < 0.5, (elbo16, elbo32)


@pytest.mark.slow  # the two trained runs of `runs` (10 s); the step and evaluation dtypes stay
def test_results_record_a_float32_evaluation_of_a_bfloat16_run(runs):
  test = runs["bfloat16"][1]["test"]
  assert test["log_likelihood_dtype"] == "float32" and test["compute_dtype"] == "bfloat16"
  assert runs["float32"][1]["test"]["compute_dtype"] == "float32"


@pytest.mark.slow  # the two trained runs of `runs` (10 s); the step and evaluation dtypes stay
def test_a_bfloat16_run_keeps_float32_parameters_and_optimizer_state(runs):
  workdir = runs["bfloat16"][0]
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  state = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
  floats = [a.dtype for a in jax.tree.leaves((state["params"], state["opt_state"]))
            if jnp.issubdtype(a.dtype, jnp.floating)]
  assert floats and all(d == jnp.float32 for d in floats)


def _trainer_and_state(compute_dtype):
  config = tiny_config(**{"accelerator.compute_dtype": compute_dtype})
  dataset = data_lib.load(config.data)
  trainer = build_trainer([config], dataset)
  state = train.create_train_state(trainer.model, trainer.optimizer(), dataset.train[0],
                                   jax.random.key(0))
  return config, dataset, trainer, state


def test_the_train_step_runs_the_decoder_matmul_in_bfloat16():
  config, dataset, trainer, state = _trainer_and_state("bfloat16")
  step = jax.jit(train.make_train_step(trainer, mesh.make_mesh(jax.devices())))
  batch = dataset.train[:config.training.batch_size]
  program = step.lower(state, batch, jax.random.key(1),
                       train.hyperparameters(config, trainer)).as_text()
  # The decoder's output layer, [B, S, 32] x [32, 64] -> the 8x8 digits' logits, asks for bfloat16
  # (XLA:CPU then computes it in float32 from the bfloat16-rounded operands; accelerators use bf16).
  assert re.search(r"dot_general.*: \(tensor<[\dx]+x32xbf16>, tensor<32x64xbf16>\)", program)


def test_evaluation_computes_in_float32_for_a_bfloat16_run():
  config, dataset, _, state = _trainer_and_state("bfloat16")
  model = report.eval_model(config, dataset)
  log_likelihood = evaluation.importance_log_likelihood(model, num_samples=20, chunk_size=10)
  program = jax.jit(log_likelihood).lower(state.params, dataset.test[0], jax.random.key(2))
  assert "bf16" not in program.as_text()
  np.testing.assert_equal(jax.tree.map(jnp.shape, model.init(jax.random.key(0), dataset.test[0],
                                                             jax.random.key(1))),
                          jax.tree.map(jnp.shape, state.params))


def test_an_unknown_compute_dtype_is_a_one_line_error_listing_the_allowed_values(tmp_path):
  with pytest.raises(ConfigError) as error:
    train.train_and_evaluate(tiny_config(**{"accelerator.compute_dtype": "float16"}),
                             str(tmp_path))
  assert str(error.value) == ("accelerator.compute_dtype='float16' is not known; allowed values: "
                              "float32, bfloat16")


@pytest.mark.slow  # 8 s; test_sweep keeps a workdir older than a field in the default suite
def test_a_workdir_written_before_compute_dtype_existed_resumes_and_evaluates_as_float32(tmp_path):
  config = tiny_config(**{"training.num_epochs": 1})
  train.train_and_evaluate(config, str(tmp_path))
  path = tmp_path / "config.json"
  saved = io.read_json(path)
  del saved["accelerator"]["compute_dtype"]
  io.write_json_atomic(str(path), saved)
  assert train.evaluate_workdir(str(tmp_path))["test"]["compute_dtype"] == "float32"
  train.train_and_evaluate(config, str(tmp_path))  # not refused as a different config
