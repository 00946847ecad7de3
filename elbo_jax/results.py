"""What a run reports: each metric of results.json's "test" section defined once.

A `Metric` is a name in METRICS with its label, format and how to read it from a run's
results.json; the ablation tables (`elbo_jax.tables`, a column per name in an ablation's
`metrics`), their figures and results.csv read metrics through it. A metric that the built-in
evaluation does not compute brings its own `compute`, which `elbo_jax.report.evaluate_run` calls
on the test set, writes into results.json and the CLI prints (`printed_lines`):

    @results.register("posterior_std")
    def posterior_std(run: results.TestSet) -> dict:   # {"posterior_std": value, ...}
      ...

`register` is that decorator; `METRICS.register(name)(Metric(...))` adds a column that reads
values results.json already holds.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import jax

from elbo_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Metric:
  """A reported number: its label (table header, printout), how to read it from a run's
  results.json (None where absent) and its digits.

  bars: whether `ablation_plots.metric_bars` draws it as bars from zero, for a magnitude whose
  ratios mean something (a count, a KL); else as each cell's mean with a std error bar on an axis
  fitted to the values, for a quantity whose zero lies far from its differences (log-likelihoods,
  ELBOs). compute: for a metric the built-in evaluation does not produce, fn(TestSet) -> {name:
  value} merged into results.json's "test" section.
  """

  label: str
  read: Callable[[dict], float | None]
  digits: int = 2
  bars: bool = False
  compute: Callable[[Any], dict] | None = None
  printed: bool = False  # a line of the CLI's printout (the metrics `register` adds)


@dataclasses.dataclass(frozen=True)
class TestSet:
  """What a computed metric sees (`Metric.compute`): the run's config, its data set, the
  evaluation model (float32) and tested parameters, the test images as evaluated ([N, *shape],
  binarised once where the data are binarised dynamically), a key of the metric's own stream, and
  the mesh for `evaluation.map_dataset`."""

  config: Any
  dataset: Any
  model: Any
  params: Any
  x: Any
  key: jax.Array
  mesh: Any = None


def test_value(name: str, sign: float = 1.0) -> Callable[[dict], float | None]:
  """A reader of results.json's test[name], times `sign`."""
  return lambda r: None if r["test"].get(name) is None else sign * r["test"][name]


METRICS: Registry[Metric] = Registry("ablation metrics")
METRICS.register("log_likelihood")(Metric("test log p(x)", test_value("log_likelihood")))
METRICS.register("nll")(Metric("test NLL", test_value("log_likelihood", -1.0)))
METRICS.register("elbo")(Metric("test ELBO", test_value("elbo")))
METRICS.register("reconstruction")(Metric("E_q log p(x|z)", test_value("log_px_given_z")))
METRICS.register("kl")(Metric("KL(q||p)", test_value("kl"), bars=True))
# Alemi et al. 2018: rate = E_x KL(q(z|x) || p(z)), distortion = -E_x E_q log p(x|z).
METRICS.register("rate")(Metric("rate", test_value("kl"), bars=True))
METRICS.register("distortion")(Metric("distortion", test_value("log_px_given_z", -1.0)))
# On the same examples: the log-likelihood may run on a subset of the test set.
METRICS.register("gap")(Metric("log p(x) - ELBO", lambda r: r["test"]["log_likelihood"]
                                - r["test"]["elbo_on_ll_examples"], bars=True))
METRICS.register("active_units")(Metric("active units", test_value("active_units"), digits=1,
                                        bars=True))
METRICS.register("bpd")(Metric("bits/dim", test_value("bpd"), digits=3))


def register(name: str, label: str | None = None, digits: int = 2, bars: bool = False,
             also: Sequence[tuple[str, str]] = ()):
  """Registers fn(TestSet) -> {name: value, ...} as the computed metric `name` (a decorator):
  evaluation writes what it returns into results.json's "test" section, and the column `name`
  reads test[name]. also: (name, label) of further values fn returns, each a column of its own.
  fn may return {} where the metric does not apply to a run (its columns are then empty)."""
  def add(compute):
    METRICS.register(name)(Metric(label or name, test_value(name), digits, bars, compute, True))
    for other, other_label in also:
      METRICS.register(other)(Metric(other_label, test_value(other), digits, bars, printed=True))
    return compute

  return add


def computed() -> list[str]:
  """The names of the metrics that bring their own `compute`, in registration order."""
  return [n for n in METRICS.registered() if METRICS.get(n).compute is not None]


def metric_key(eval_key: jax.Array, name: str) -> jax.Array:
  """The computed metric `name`'s own stream of the evaluation key: the same for a name whatever
  else is registered."""
  return jax.random.fold_in(eval_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def compute_all(test_set: TestSet) -> dict:
  """Every computed metric's values on `test_set` (each given its own key)."""
  out = {}
  for name in computed():
    out |= METRICS.get(name).compute(dataclasses.replace(test_set,
                                                         key=metric_key(test_set.key, name)))
  return out


def printed_lines(test: dict) -> list[str]:
  """The printout's lines for the registered metrics present in a results.json "test" section."""
  lines = []
  for name in METRICS.registered():
    metric = METRICS.get(name)
    if not metric.printed:
      continue
    value = metric.read({"test": test})
    if value is not None:
      lines.append(f"{metric.label}: {value:.{metric.digits}f}")
  return lines
