r"""Runs an ablation: every cell x seed of an ablation config, then its table and figures.

  python -m experiments.ablate --config=configs/ablations/beta_rate_distortion.py:short \
      --workdir=runs/beta --config.base.data.path=../shared/data/mnist.pkl.gz
  python -m experiments.ablate ... --cell='beta=16:objective.beta=16'   # one more row
  python -m experiments.ablate ... --table_only                        # rebuild outputs from disk

Running the same command again skips finished runs, resumes interrupted ones and trains only what
was added; `<workdir>/cells/<cell>/seed-<s>/` are ordinary run directories.
"""

import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Ablation config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep's runs and outputs.")
_CELLS = flags.DEFINE_multi_string(
    "cell", [], "An extra cell: name:section.field=value[,section.field=value...].")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False,
                                "Only rebuild results.csv, table.md and the figures from disk.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from elbo_jax import mesh, sweep

  cli.run_or_exit(mesh.initialize_distributed, _CONFIG.value.base.accelerator)  # before any device

  def run():
    extra = [sweep.parse_cell(spec) for spec in _CELLS.value]
    return sweep.run(_CONFIG.value, _WORKDIR.value, extra=extra, table_only=_TABLE_ONLY.value,
                     command=shlex.join(["python", "-m", "experiments.ablate", *sys.argv[1:]]))

  cli.run_or_exit(run)
  if not mesh.is_primary():
    return
  with open(os.path.join(_WORKDIR.value, "table.md")) as f:
    print(f.read())


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
