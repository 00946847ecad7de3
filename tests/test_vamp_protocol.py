"""The VampPrior configs: `:paper` variants are Tomczak & Welling's protocol (their code's), the
others keep the runs they always made."""

import numpy as np
import pytest

from configs import mnist_vamp
from configs.ablations import priors
from elbo_jax import data, sweep
from elbo_jax.build import build_trainer

AUTHORS_PROTOCOL = {
    "data.name": "binarized_mnist", "data.preprocessing": "static_binarization",
    "data.split": "standard", "optimizer.name": "adam_normgrad", "optimizer.learning_rate": 5e-4,
    "optimizer.b1": 0.9, "optimizer.b2": 0.999, "optimizer.eps": 1e-8,
    "training.batch_size": 100, "objective.warmup_epochs": 100, "training.num_epochs": 2000,
    "training.early_stopping_patience": 50, "eval.num_samples": 5000, "eval.num_test": 0,
    "model.latent_dim": 40, "model.hidden": (300, 300), "model.gated": True,
    "prior.num_pseudo_inputs": 500,
}


def _fields(config, names):
  return {name: config[name.split(".")[0]][name.split(".")[1]] for name in names}


def test_the_paper_variants_are_the_authors_protocol():
  assert _fields(mnist_vamp.get_config("paper"), AUTHORS_PROTOCOL) == AUTHORS_PROTOCOL
  specs = sweep.run_specs(priors.get_config("paper"), "/x")
  assert [s.cell.name for s in specs] == list(priors.PRIORS)
  for spec in specs:
    assert _fields(spec.config, AUTHORS_PROTOCOL) == AUTHORS_PROTOCOL
  with pytest.raises(ValueError, match="unknown variant 'papr'"):
    mnist_vamp.get_config("papr")


def test_the_other_variants_keep_our_static_draw_plain_adam_and_a_fixed_schedule():
  ours = {"data.name": "mnist", "data.preprocessing": "static_binarization",
          "optimizer.name": "adam", "training.early_stopping_patience": 0}
  assert _fields(mnist_vamp.get_config(), ours) == ours
  assert mnist_vamp.get_config().training.num_epochs == 200
  full, default = priors.get_config("full"), priors.get_config()
  assert full.base.to_dict() == default.base.to_dict() == {
      **mnist_vamp.get_config().to_dict(),
      "prior": {**mnist_vamp.get_config().prior.to_dict(), "num_components": 500}}
  short = priors.get_config("short").base
  assert (short.training.num_epochs, short.objective.warmup_epochs, short.eval.num_test) == (
      12, 6, 300)
  assert _fields(short, ours) == ours


def test_the_paper_variant_reads_the_amat_files_and_builds(tmp_path):
  rng = np.random.default_rng(0)
  for split, n in (("train", 200), ("valid", 20), ("test", 20)):
    rows = (rng.random((n, 784)) < 0.2).astype(int)
    (tmp_path / f"binarized_mnist_{split}.amat").write_text(
        "".join(" ".join(map(str, r)) + "\n" for r in rows))
  config = mnist_vamp.get_config("paper")
  with config.unlocked():
    config.data.path = str(tmp_path)
  dataset = data.load(config.data)
  assert dataset.info["binarization"].startswith("fixed") and dataset.info["sizes"] == {
      "train": 200, "validation": 20, "test": 20}
  trainer = build_trainer([config], dataset)  # traced, not compiled
  assert trainer.steps_per_epoch == 2 and trainer.total_steps == 4000
