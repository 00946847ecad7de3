r"""Trains a VAE from a config and evaluates it on the test set.

  python -m experiments.train --config=configs/digits_vae.py --workdir=runs/digits
  python -m experiments.train --config=configs/mnist_vae.py --workdir=runs/mnist \
      --config.data.path=../shared/data/mnist.pkl.gz --config.prior.name=vamp

A run's saved config is a config too: `--config=runs/mnist/config.json` (e.g. one cell of an
ablation, `<sweep>/cells/<cell>/seed-<s>/config.json`), with --config.<field> overrides as above.

Running again with the same --workdir resumes an interrupted run. Several processes (e.g. two on
one machine) train one run together with --config.accelerator.distributed=explicit and
--config.accelerator.{coordinator_address,num_processes,process_id}, or =auto under SLURM or on a
Cloud TPU slice (README: "Running on GPU/TPU and on several hosts").
"""

from absl import app, flags

from experiments import cli

_CONFIG = cli.define_config_file(
    "config", "Experiment config file (path.py[:variant]), or a run's saved config.json.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from elbo_jax import mesh
  from elbo_jax.train import train_and_evaluate

  cli.run_or_exit(mesh.initialize_distributed, _CONFIG.value.accelerator)  # before any device
  results = cli.run_or_exit(train_and_evaluate, _CONFIG.value, _WORKDIR.value)
  if mesh.is_primary():
    cli.print_results(results, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
