"""Name -> implementation lookup for every component family.

One `Registry` per family (likelihoods, priors, posteriors, objectives, models, data sets). A config
names a component by string; `get` returns it or raises a one-line `ConfigError` that names the
config field and lists the allowed names, so a typo never becomes a stack trace for the user.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """A user-facing configuration or input error; its message is one line meant to be shown as is."""


class Registry(Generic[T]):
  """A mapping from names to implementations for one component family.

  Args:
    family: the config field that selects from this registry, e.g. "prior.name"; used in errors.
  """

  def __init__(self, family: str):
    self.family = family
    self._items: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(item: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.family}: {name!r} is registered twice")
      self._items[name] = item
      return item

    return add

  def get(self, name: Any) -> T:
    if name not in self._items:
      raise ConfigError(
          f"{self.family}={name!r} is not known; allowed values: {', '.join(self.names())}"
      )
    return self._items[name]

  def names(self) -> list[str]:
    return sorted(self._items)

  def registered(self) -> list[str]:
    """The names in the order they were registered."""
    return list(self._items)

  # A component's options: its config section's fields other than `name` (elbo_jax.components).

  @property
  def section(self) -> str:
    """The config section a component of this family is configured by: "prior" for prior.name."""
    return self.family.rsplit(".", 1)[0]

  def option_names(self, name: str) -> tuple[str, ...]:
    """The options the implementation `name` declares (`option_names`)."""
    return option_names(self.get(name))

  def options(self, cfg, exclude=()) -> dict:
    """The keyword arguments of `cfg.name`'s implementation from its config section `cfg`: every
    field it declares but those in `exclude` (which the builder passes itself, e.g. latent_dim)."""
    return {k: cfg[k] for k in self.option_names(cfg.name) if k in cfg and k not in exclude}

  def readers(self, field: str) -> list[str]:
    """The implementations, in registration order, that declare the option `field`."""
    return [n for n in self._items if field in option_names(self._items[n])]

  def check_unread(self, cfg, defaults=None, read=()) -> None:
    """Refuses a field of section `cfg` that `cfg.name` does not read but that is set away from its
    default (in `defaults`, else the one its readers declare alike): a one-line ConfigError naming
    the implementations that read it. `read`: fields read whatever the implementation."""
    declared = set(self.option_names(cfg.name)) | set(read) | {"name"}
    for field in list(cfg.keys()):
      if field in declared:
        continue
      readers = self.readers(field)
      if defaults is not None and field in defaults:
        default = defaults[field]
      else:
        found = {repr(_default(self._items[n], field)) for n in readers}
        if len(found) != 1:
          continue
        default = _default(self._items[readers[0]], field)
      if cfg[field] != default:
        where = (f"applies to {self.family} in: {', '.join(readers)}" if readers else
                 f"is read by no {self.family}")
        raise ConfigError(f"{self.section}.{field}={cfg[field]!r} {where}; use "
                          f"{self.section}.{field}={default!r}")


# Dataclass fields of every Flax module that are no options.
_NOT_OPTIONS = ("name", "parent")


def option_names(impl: Any) -> tuple[str, ...]:
  """The options an implementation declares: a dataclass's (a Flax module's) init fields, else a
  function's keyword parameters that have defaults (what a builder supplies, such as `model`,
  has none)."""
  if dataclasses.is_dataclass(impl):
    names = [f.name for f in dataclasses.fields(impl) if f.init]
  else:
    names = [p.name for p in inspect.signature(impl).parameters.values()
             if p.default is not p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
  return tuple(n for n in names if n not in _NOT_OPTIONS)


def _default(impl: Any, field: str) -> Any:
  if dataclasses.is_dataclass(impl):
    found = next(f for f in dataclasses.fields(impl) if f.name == field)
    return found.default if found.default is not dataclasses.MISSING else None
  return inspect.signature(impl).parameters[field].default


def positive_int(field: str, value: Any) -> int:
  """Returns `value` if it is a positive integer, else raises a ConfigError naming `field`."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(f"{field}={value!r} must be a positive integer")
  return value


def non_negative_int(field: str, value: Any, meaning: str = "") -> int:
  """Returns `value` if it is an integer >= 0, else raises a ConfigError naming `field` (and what
  the number means, e.g. "epochs; 0 = off")."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise ConfigError(f"{field}={value!r} must be a non-negative integer"
                      + (f" ({meaning})" if meaning else ""))
  return value


def positive(field: str, value: Any, unit: str = "") -> float:
  """Returns `value` if it is a number > 0, else raises a ConfigError naming `field`."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ConfigError(f"{field}={value!r} must be a positive number" + (f" of {unit}" * bool(unit)))
  return value


def non_negative(field: str, value: Any) -> float:
  """Returns `value` if it is a number >= 0, else raises a ConfigError naming `field`."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
    raise ConfigError(f"{field}={value!r} must be a non-negative number")
  return value


def one_of(field: str, value: Any, allowed) -> Any:
  """Returns `value` if it is in `allowed`, else raises a ConfigError listing the allowed values."""
  if value not in allowed:
    raise ConfigError(f"{field}={value!r} is not known; allowed values: {', '.join(allowed)}")
  return value


def unit_interval(field: str, value: Any) -> float:
  """Returns `value` if it is a number in [0, 1], else raises a ConfigError naming `field`."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
    raise ConfigError(f"{field}={value!r} must be a number in [0, 1]")
  return value
