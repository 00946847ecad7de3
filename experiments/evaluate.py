r"""Re-evaluates a saved run from its workdir (config.json + latest checkpoint) into results.json.

  python -m experiments.evaluate --workdir=runs/mnist [--num_samples=5000] [--num_test=0]
      [--batch_size=20]
"""

from absl import app, flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "Override eval.num_samples (K).")
_NUM_TEST = flags.DEFINE_integer("num_test", None, "Override eval.num_test (0 = all).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "Override eval.batch_size.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  from elbo_jax.train import evaluate_workdir

  overrides = {"num_samples": _NUM_SAMPLES.value, "num_test": _NUM_TEST.value,
               "batch_size": _BATCH_SIZE.value}
  results = cli.run_or_exit(evaluate_workdir, _WORKDIR.value,
                            {k: v for k, v in overrides.items() if v is not None})
  cli.print_results(results, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
