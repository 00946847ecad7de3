"""One config section per component: `<section>.name` picks it, its other fields are options.

The likelihood, prior, posterior and objective are each chosen from a registry by their section's
`name`; every other field of the section is an option, passed to the implementation as a keyword
argument when the implementation declares it (`registry.option_names`): a field of a dataclass
(every Flax module) or a keyword parameter with a default of a function. A component owns its
options, as big_vision's `Model(**config.model)` does, so a new one is one module:

    @LIKELIHOODS.register("student_t")
    class StudentT(likelihoods.Likelihood):
      df: float = 4.0                      # read from likelihood.df, where the config has it

A field that the chosen implementation does not declare is not read: it is no part of the run's
identity (`unread_fields`, used by `elbo_jax.config.identity`), so changing the default of a
Gaussian's option does not refuse to resume a Bernoulli run. An objective's field set away from
its default for an objective that does not read it is an error naming the objectives that do
(`check`, `STRICT`); the fields the training loop reads whatever the objective (`READ_BY_TRAINER`)
are the exception.
"""

from __future__ import annotations

from elbo_jax.likelihoods import LIKELIHOODS
from elbo_jax.objectives import OBJECTIVES, READ_BY_TRAINER
from elbo_jax.posteriors import POSTERIORS
from elbo_jax.priors import PRIORS
from elbo_jax.registry import Registry

SECTIONS: dict[str, Registry] = {r.section: r for r in (LIKELIHOODS, PRIORS, POSTERIORS,
                                                        OBJECTIVES)}
# Fields of a section read by code other than its implementation.
ALSO_READ = {"objective": READ_BY_TRAINER}


# Sections whose unread fields must stay at their defaults: an objective's options (K, M, the
# estimator) change what a run means, so one set for another objective is a mistake. Other
# sections' unread options are ignored: an ablation's base carries one cell's prior options (the
# VampPrior's pseudo-inputs) beside cells with other priors.
STRICT = ("objective",)


def check(config, defaults) -> None:
  """Checks each section's name; refuses a STRICT section's fields that its implementation does
  not read, set away from their value in `defaults` (the default config), with one line."""
  for section, registry in SECTIONS.items():
    registry.get(config[section].name)
    if section in STRICT:
      registry.check_unread(config[section], defaults[section], ALSO_READ.get(section, ()))


def unread_fields(config_json: dict) -> list[str]:
  """The "section.field" names of a JSON config that its chosen components do not read."""
  unread = []
  for section, registry in SECTIONS.items():
    fields = config_json.get(section)
    if not isinstance(fields, dict) or fields.get("name") not in registry.registered():
      continue
    read = registry.option_names(fields["name"]) + ALSO_READ.get(section, ())
    unread += [f"{section}.{k}" for k in fields if k != "name" and k not in read]
  return unread
