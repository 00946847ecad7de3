"""Every config in configs/ builds its model and objective and takes one training step.

The MNIST and CIFAR configs are pointed at a small synthetic .npz of the right image shape through
the local-file option, so no test needs downloaded data.
"""

import copy
import glob
import importlib
import os

import jax
import numpy as np
import pytest

from configs import digits_vae
from elbo_jax import config as config_lib
from elbo_jax import data as data_lib
from elbo_jax import mesh, train
from elbo_jax.build import build_trainer

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")) if "__init__" not in p)


def _synthetic_npz(tmp_path, shape):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (260, *shape)).astype(np.uint8)
  path = tmp_path / "images.npz"
  np.savez(path, train=images[:200], validation=images[200:220], test=images[220:])
  return str(path)


# The conv nets (dsprites_vae's too) and the VampPrior take 8-20 s each to compile on 2 cores: they
# run with the slow tests, the MLP configs in the default suite.
SLOW_CONFIGS = ("cifar", "conv", "vamp", "dsprites")


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if any(s in n for s in SLOW_CONFIGS) else n
    for n in CONFIGS])
def test_config_takes_a_training_step(tmp_path, name):
  config = importlib.import_module(f"configs.{name}").get_config()
  shape = (32, 32, 3) if "cifar" in name else (28, 28, 1)
  with config.unlocked():
    if config.data.name == "sprites":  # generated: a small draw of it
      config.data.num_examples = 200
    elif name != "digits_vae":
      config.data.source = "local"
      config.data.path = _synthetic_npz(tmp_path, shape)
      config.data.validation_size = 20
    config.training.batch_size = 20
    if config.prior.name == "vamp":
      config.prior.num_pseudo_inputs = 10
  dataset = data_lib.load(config.data)
  trainer = build_trainer([config], dataset)
  group = train.prepare_group(trainer, mesh.make_mesh(jax.devices()), dataset, [config])
  metrics = group.step(group.epoch_order(0), 0, 1)
  assert int(group.state.step[0]) == 1 and np.isfinite(metrics["loss"]).all()
  assert not np.asarray(metrics["nonfinite"]).any()


def test_the_paper_variant_is_the_protocol_of_burdas_text():
  from configs import mnist_iwae, mnist_vae, mnist_vae_2layer
  c = mnist_vae.get_config("paper")
  # Section 5.1: Glorot init; Adam b1 = 0.9, b2 = 0.999, eps = 1e-4; batch 20; 3^i epochs at
  # 1e-3 * 10^(-i/7). (The authors' code's b1 = 0.99 and output bias are options, not defaults.)
  assert (c.training.batch_size, c.training.num_epochs, c.optimizer.b1, c.optimizer.b2,
          c.optimizer.eps) == (20, 3280, 0.9, 0.999, 1e-4)
  assert (c.optimizer.name, c.optimizer.schedule, c.optimizer.learning_rate) == (
      "adam", "burda", 1e-3)
  assert (c.model.init, c.model.output_bias) == ("glorot", "zero")
  iwae, two_layer = mnist_iwae.get_config("paper,k=50"), mnist_vae_2layer.get_config("paper")
  for other in (iwae, two_layer):
    assert (other.optimizer.to_dict(), other.training.num_epochs, other.model.init) == (
        c.optimizer.to_dict(), 3280, "glorot")
  assert (iwae.objective.name, iwae.objective.num_samples) == ("iwae", 50)
  default_iwae = mnist_iwae.get_config()
  assert (default_iwae.model.init, default_iwae.objective.num_samples) == ("default", 5)


def test_where_a_run_runs_is_not_part_of_its_identity_but_its_compute_dtype_is():
  base = config_lib.to_json(digits_vae.get_config())
  moved = copy.deepcopy(base)
  moved["accelerator"].update(platform="gpu", num_devices=2, distributed="explicit",
                              coordinator_address="127.0.0.1:12399", num_processes=2,
                              process_id=1, replica_parallelism=2)
  assert config_lib.differences(base, moved) == []
  moved["accelerator"]["compute_dtype"] = "bfloat16"
  assert config_lib.differences(base, moved) == ["accelerator.compute_dtype"]
