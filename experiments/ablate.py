r"""Runs an ablation: every cell x seed of an ablation config, then its table and figures.

  python -m experiments.ablate --config=configs/ablations/beta_rate_distortion.py:short \
      --workdir=runs/beta --config.base.data.path=../shared/data/mnist.pkl.gz
  python -m experiments.ablate ... --cell='beta=16:objective.beta=16'   # one more row
  python -m experiments.ablate ... --table_only                        # rebuild outputs from disk

Run from the project root, where `configs` is importable; an ablation config of your own may live
anywhere (`--config=my_ablations/widths.py:smoke`). Running the same command again skips finished
runs, resumes interrupted ones and trains only what was added; cells added with --cell are kept
by later commands without the flag. A run that has not trained, or that failed, may be given a
new config in place (the same --cell name with new values, or an edited config); failed runs are
otherwise tried again only with --retry_failed. `<workdir>/cells/<cell>/seed-<s>/` are ordinary
run directories, and their config.json a config for `experiments.train`.

Exit status: 0 when every run has finished, 1 when some failed (after writing the table), 2 for a
refused command, 130 when interrupted.
"""

import os
import shlex
import sys

from absl import app, flags

from experiments import cli

_CONFIG = cli.define_config_file("config", "Ablation config file (path.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the sweep's runs and outputs.")
_CELLS = flags.DEFINE_multi_string(
    "cell", [], "An extra cell: name:section.field=value[,section.field=value...]; recorded in "
    "the workdir, so later commands keep it. A cell of the same name replaces it.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False,
                                "Only rebuild results.csv, table.md and the figures from disk.")
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", False,
                                  "Train failed runs again (from their last good checkpoint).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from elbo_jax import mesh, sweep, tables

  cli.run_or_exit(mesh.initialize_distributed, _CONFIG.value.base.accelerator)  # before any device

  def run():
    extra = [sweep.parse_cell(spec) for spec in _CELLS.value]
    return sweep.run(_CONFIG.value, _WORKDIR.value, extra=extra, table_only=_TABLE_ONLY.value,
                     retry_failed=_RETRY_FAILED.value,
                     command=shlex.join(["python", "-m", "experiments.ablate", *sys.argv[1:]]))

  rows = cli.run_or_exit(run)
  if not mesh.is_primary():
    return
  with open(os.path.join(_WORKDIR.value, tables.TABLE_FILE)) as f:
    print(f.read())
  failed = [r for r in rows if r["status"] == "failed"]
  if failed and not _TABLE_ONLY.value:
    cells = ", ".join(dict.fromkeys(r["cell"] for r in failed))
    print(f"error: {len(failed)} of {len(rows)} runs failed (cells: {cells}; why: 'Stopped runs' "
          "in table.md); give a cell new values in place (the same --cell name, or the edited "
          "config) and rerun, or rerun with --retry_failed", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
