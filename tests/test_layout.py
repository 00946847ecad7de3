"""The library's shape: modules import each other without a cycle, and functions stay short enough
to read in one sitting (the exceptions named here, with their reason)."""

import ast
import pathlib

from tests.conftest import REPO

LIBRARY = pathlib.Path(REPO) / "elbo_jax"
MAX_LINES = 60
# Functions allowed over MAX_LINES, and why.
LONG = {
    "elbo_jax.config.default_config": "the listing of every field, scanned for a name",
}


def _modules() -> dict[str, tuple[pathlib.Path, ast.Module]]:
  modules = {}
  for path in sorted(LIBRARY.rglob("*.py")):
    parts = list(path.relative_to(LIBRARY.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    modules[".".join(parts)] = (path, ast.parse(path.read_text()))
  return modules


def _imports(name: str, path: pathlib.Path, tree: ast.Module, modules) -> set[str]:
  """The library modules that `name` imports anywhere in its file (a local import would hide a
  cycle, not remove it)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
      for alias in node.names:
        # `from elbo_jax import priors` imports the module elbo_jax.priors.
        found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
  return {m for m in found if m in modules and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
  """One import cycle of `graph` as [a, b, ..., a], or [] where there is none."""
  state = {}  # name -> "open" while on the path, "done" after

  def visit(node, path):
    state[node] = "open"
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return (path + [node])[(path + [node]).index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt, path + [node])
        if found:
          return found
    state[node] = "done"
    return []

  for node in sorted(graph):
    if node not in state:
      found = visit(node, [])
      if found:
        return found
  return []


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) == []


def test_library_modules_import_each_other_without_a_cycle():
  modules = _modules()
  graph = {name: _imports(name, path, tree, modules) for name, (path, tree) in modules.items()}
  assert graph["elbo_jax.train"] >= {"elbo_jax.objectives", "elbo_jax.report"}
  assert _cycle(graph) == []


def test_library_functions_fit_on_a_screen_or_say_why_not():
  long = {}
  for name, (_, tree) in _modules().items():
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines = node.end_lineno - node.lineno + 1
        if lines > MAX_LINES:
          long[f"{name}.{node.name}"] = lines
  assert set(long) == set(LONG), long
