"""Crash-safe file writes: whole-file replacement and line-at-a-time appends.

A run can be killed at any instant (pre-emption, OOM, Ctrl-C). Whole files (configs, results,
plots) are written to a temporary sibling and moved into place with `os.replace`, which is atomic on
POSIX within one file system, so a reader sees either the old file or the new one, never a mix.
Logs that grow (metrics) are JSON Lines; a killed append can leave at most one partial last line,
which `read_jsonl` skips and the next `append_jsonl` repairs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
  """Yields a file object whose contents replace `path` only if the block exits normally.

  mode: "w" (text, UTF-8) or "wb". On any exception the temporary file is removed and `path` is
  left untouched.
  """
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  # Same directory as the target: os.replace is only atomic within one file system. Not mkstemp:
  # its 0600 mode would survive the rename; 0666 lets the umask decide, as for a plain open().
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      # Without fsync a power loss after the rename can leave an empty file under the new name.
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


# atomic_writer's temporary files: ".<name>.<32 hex digits>.tmp".
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


def remove_temporaries(directory: str | os.PathLike) -> list[str]:
  """Removes the temporary files that writers killed mid-write (SIGKILL, power loss) left in
  `directory`; returns their names. Call it only while holding the directory's lock, so no live
  writer's file is taken."""
  removed = []
  with contextlib.suppress(FileNotFoundError):
    for name in sorted(os.listdir(directory)):
      path = os.path.join(directory, name)
      if _TEMPORARY.match(name) and os.path.isfile(path):
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
          removed.append(name)
  return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Replaces the contents of `path` with `text` (UTF-8), atomically."""
  with atomic_writer(path, "w") as f:
    f.write(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` as indented JSON to `path`, atomically.

  NumPy/JAX scalars and arrays are converted to Python numbers and lists; anything else that JSON
  cannot represent raises TypeError and leaves `path` as it was.
  """
  with atomic_writer(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_to_builtin)
    f.write("\n")


def read_json(path: str | os.PathLike) -> Any:
  """Reads a JSON file; a missing or corrupt file raises an error whose message names `path`."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: file not found") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def json_line(record: dict) -> str:
  """`record` as one JSON Lines line (with its newline)."""
  return json.dumps(record, default=_to_builtin) + "\n"


def to_json_types(obj: Any) -> Any:
  """`obj` as plain JSON types: tuples become lists, NumPy/JAX values numbers or lists."""
  return json.loads(json.dumps(obj, default=_to_builtin))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
  """Appends `record` to the JSON Lines file `path` as one line, flushed to the OS."""
  # Serialise before opening so an unserialisable record appends nothing.
  line = json_line(record)
  with open(path, "a+b") as f:
    _end_partial_line(f)
    f.write(line.encode("utf-8"))
    f.flush()


def read_jsonl(path: str | os.PathLike) -> list:
  """Reads a JSON Lines file, skipping blank lines and an unparseable last line.

  A run killed mid-append leaves a truncated last line; any other unparseable line means real
  corruption and raises ValueError naming the path and line number.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: file not found") from None
  numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
  records = []
  for j, (lineno, line) in enumerate(numbered):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if j == len(numbered) - 1:
        break
      raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from e
  return records


def _end_partial_line(f) -> None:
  """Makes the next append to `f` (opened "a+b") start on a fresh line.

  A last line without its newline is either an interrupted write (unparseable: dropped, so the new
  record does not fuse with garbage) or a complete record someone wrote without "\\n" (kept).
  """
  end = f.seek(0, os.SEEK_END)
  if end == 0:
    return
  f.seek(end - 1)
  if f.read(1) == b"\n":
    return
  start, tail = 0, b""
  pos = end
  while pos > 0:
    size = min(4096, pos)
    pos -= size
    f.seek(pos)
    tail = f.read(size) + tail
    newline = tail.rfind(b"\n")
    if newline >= 0:
      start, tail = pos + newline + 1, tail[newline + 1:]
      break
  try:
    json.loads(tail)
  except ValueError:
    f.truncate(start)
  else:
    f.write(b"\n")


def _to_builtin(obj: Any) -> Any:
  """json `default` hook: NumPy/JAX values become Python numbers or (nested) lists."""
  if isinstance(obj, np.generic):
    return obj.item()
  if hasattr(obj, "__array__"):
    return np.asarray(obj).tolist()
  raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")
