"""The tiny digits config of tests/conftest.py as a config file, for subprocess tests."""

from tests.conftest import tiny_config


def get_config(arg=None):
  del arg
  return tiny_config()
