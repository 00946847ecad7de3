"""Name -> implementation lookup for every component family.

One `Registry` per family (likelihoods, priors, posteriors, objectives, models, data sets). A config
names a component by string; `get` returns it or raises a one-line `ConfigError` that names the
config field and lists the allowed names, so a typo never becomes a stack trace for the user.
"""

from __future__ import annotations

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


def positive_int(field: str, value: Any) -> int:
  """Returns `value` if it is a positive integer, else raises a ConfigError naming `field`."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(f"{field}={value!r} must be a positive integer")
  return value


def unit_interval(field: str, value: Any) -> float:
  """Returns `value` if it is a number in [0, 1], else raises a ConfigError naming `field`."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
    raise ConfigError(f"{field}={value!r} must be a number in [0, 1]")
  return value
