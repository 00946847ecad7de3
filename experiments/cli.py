"""What the experiment scripts share: the config flag (a config file, or a run's saved
config.json), user errors and Ctrl-C as one line (no stack trace), result printing."""

import difflib
import os
import re
import sys

from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from elbo_jax import config as config_lib
from elbo_jax import io
from elbo_jax import results as results_lib
from elbo_jax.registry import ConfigError

INTERRUPTED = 130  # the exit status of a process stopped by Ctrl-C (128 + SIGINT)


class _ConfigFileParser(ConfigFileFlagParser):
  """ml_collections' parser of a config file (`path.py[:variant]`), which also reads a run's
  resolved config as its workdir saved it (`<workdir>/config.json`), fields added since at their
  defaults; `--config.<field>=value` overrides apply to either."""

  def parse(self, path):
    file, sep, variant = path.partition(":")
    if not file.endswith(".json"):
      return super().parse(path)
    if sep:
      raise ValueError(f"{file} is a saved config (JSON) and takes no variant ':{variant}'")
    try:
      saved = io.read_json(file)
    except OSError as e:  # read_json's messages name the file; a corrupt one is a ValueError
      raise ValueError(str(e)) from None
    unknown = sorted(set(saved) - set(config_lib.default_config())) if isinstance(
        saved, dict) else ["(not a JSON object)"]
    if unknown:
      raise ValueError(f"{file} is not a run's config.json (unknown top-level names: "
                       f"{', '.join(unknown)})")
    return config_lib.from_json(config_lib.with_defaults(saved))


def define_config_file(name: str, help_string: str) -> flags.FlagHolder:
  """A config flag: a config file `path.py[:variant]` or a saved
  config.json, with `--<name>.<field>=value` overrides (ml_collections' DEFINE_config_file)."""
  holder = config_flags.DEFINE_config_file(name, None, help_string)
  flags.FLAGS[name].parser = _ConfigFileParser(name=name, lock_config=True)
  return holder


def exit_with_error(message: str) -> None:
  """Prints `message` as one line on stderr and exits with status 2 (a user error)."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for `app.run(main, flags_parser=parse_flags)`, bad flags as one line.

  ml_collections applies --config.<field> overrides while absl parses, before `main` runs, and an
  unknown field there escapes as an AttributeError with a long stack trace; a config file that
  cannot be read surfaces only when the config is first used.
  """
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:  # a value of the wrong type, an unknown or missing flag
    exit_with_error(_without_traceback(str(e)))
  except (AttributeError, KeyError, OSError):
    message = _unloadable_config() or _unknown_field(argv)
    if message is None:
      raise
    exit_with_error(message)
  message = _unloadable_config()
  if message is not None:
    exit_with_error(message)
  return remaining


def _unloadable_config() -> str | None:
  """The error for a config file that could not be read (e.g. a wrong path), or None.

  ml_collections defers that error until the config is first read, deep inside the script.
  """
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if (isinstance(flag.parser, ConfigFileFlagParser)
        and _load_error(flag.value) is not None):
      return _unreadable(name, flag.value, flag.serialize().partition("=")[2])
  return None


def _load_error(config) -> OSError | None:
  """What ml_collections met reading a config file, if `config` is the placeholder it leaves."""
  error = getattr(config, "_error", None)  # a ConfigDict has no such attribute
  return error if isinstance(error, OSError) else None


def _unreadable(name: str, config, path: str) -> str:
  return f"--{name}={path}: {str(_load_error(config)).splitlines()[-1].strip()}"


def _without_traceback(message: str) -> str:
  """A flag error without the traceback ml_collections folds into it when a config file's
  get_config raises (e.g. an unknown variant): the flag, then the exception's own message."""
  flag, sep, trace = message.partition("Error whilst parsing config file:")
  if not sep or "Traceback" not in trace:
    return message
  return flag + re.sub(r"^[\w.]+: ", "", trace.strip().splitlines()[-1])


def _unknown_field(argv: list[str]) -> str | None:
  """The error for the first --<config flag>.<path> in argv that names no field, or None."""
  for override in argv:
    match = re.match(r"--?(?:no)?(\w+)\.([^=]+)", override)
    if not match or match[1] not in flags.FLAGS:
      continue
    name, path = match[1], match[2]
    # The config file as given (--config=path or --config path; absl takes the last).
    given = [m[1] if m[1] is not None else argv[i + 1] for i, arg in enumerate(argv)
             if (m := re.fullmatch(rf"--?{name}(?:=(.*))?", arg))]
    config = flags.FLAGS[name].parser.parse(given[-1])
    if _load_error(config) is not None:
      return _unreadable(name, config, given[-1])
    fields = sorted(config_lib.flatten(config.to_dict()))
    if path in fields or path in config:
      continue
    close = difflib.get_close_matches(path, fields, n=3)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            f"the config's top-level names are: {', '.join(sorted(config.keys()))}")
    return f"--{name}.{path} is not a field of the config; {hint}"
  return None


def run_or_exit(fn, *args):
  """Calls fn(*args); a ConfigError or a stopped training run exits with its one-line message,
  Ctrl-C with one line saying that the same command resumes."""
  from absl import logging

  from elbo_jax.train import TrainingStopped

  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO level

  try:
    return fn(*args)
  except (ConfigError, TrainingStopped) as e:
    exit_with_error(str(e))
  except KeyboardInterrupt:
    print("interrupted: checkpoints and finished results are kept; run the same command "
          "again to resume", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit at once, without the interpreter's shutdown: orbax's writer threads, caught mid-save,
    # then log errors, warn of unawaited coroutines or abort the process (seen on a busy machine).
    # Nothing is lost: results are written atomically, an unfinished checkpoint sits in a
    # temporary directory that is never read back, and the workdir lock dies with the process.
    os._exit(INTERRUPTED)


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
  if test.get("khat_median") is not None:
    lines.append(f"importance weights: Pareto k-hat median {test['khat_median']:.2f}, max "
                 f"{test['khat_max']:.2f}, {test['khat_share_above_0.7']:.1%} of examples above "
                 f"0.7; median ESS {test['ess_median']:.0f} of K={k}")
  lines += results_lib.printed_lines(test)
  lines.append(f"results and figures in {workdir}")
  print("\n".join(lines))
  warning = khat_warning(test)
  if warning:
    print(warning, file=sys.stderr)


def khat_warning(test: dict) -> str | None:
  """One line when more than `psis.WARN_SHARE` of the examples have k-hat above 0.7, else None."""
  from elbo_jax import psis

  share = test.get("khat_share_above_0.7")
  if share is None or share <= psis.WARN_SHARE:
    return None
  return (f"warning: {share:.0%} of the test examples have Pareto k-hat > "
          f"{psis.KHAT_THRESHOLD} (median {test['khat_median']:.2f}): their importance weights "
          f"are too heavy-tailed for the K={test['num_importance_samples']} log-likelihood to be "
          "reliable (Vehtari et al.); see khat.png")
