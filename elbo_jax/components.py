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
Gaussian's option does not refuse to resume a Bernoulli run, and setting it away from its default
is an error naming the implementations that read it (`check`). The fields the training loop reads
whatever the objective (`READ_BY_TRAINER`) are the exception.
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


def check(config, defaults) -> None:
  """Refuses each section's fields that its implementation does not read, set away from their
  value in `defaults` (the default config), with a one-line ConfigError."""
  for section, registry in SECTIONS.items():
    registry.get(config[section].name)
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
