"""What the experiment scripts share: user errors as one line (no stack trace), result printing."""

import sys

from elbo_jax.registry import ConfigError


def run_or_exit(fn, *args):
  """Calls fn(*args); a ConfigError or a stopped training run exits with its one-line message."""
  from absl import logging

  from elbo_jax.train import TrainingStopped

  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO level

  try:
    return fn(*args)
  except (ConfigError, TrainingStopped) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def print_results(results: dict, workdir: str) -> None:
  test = results["test"]
  k = test["num_importance_samples"]
  lines = [
      (f"data: {results['data'].get('name')} ({results['data'].get('preprocessing')}, "
       f"split {results['data'].get('split')}), {test['num_examples']} test examples"),
      f"test log-likelihood (K={k}): {test['log_likelihood']:.2f} nats"
      + (f" +- {test[f'nll_k{k}_std']:.2f}" if test[f"nll_k{k}_std"] else ""),
      (f"test ELBO: {test['elbo']:.2f} = {test['log_px_given_z']:.2f} (reconstruction) "
       f"- {test['kl']:.2f} (KL)"),
      f"active units: {test['active_units']} of {test['latent_dim']}",
  ]
  if "bpd" in test:
    lines.append(f"bits/dim: {test['bpd']:.3f}")
  lines.append(f"results and figures in {workdir}")
  print("\n".join(lines))
