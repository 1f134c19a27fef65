"""Paths and small files from users: a name checked before any system call, a regular file before any
read, small text read whole and bounded."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success

from wmap.errors import BadConfig

NAME_MAX = 255
PATH_MAX = 4095
"""Linux's limits on one name and on a whole path, in bytes."""


def path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot name a file here (empty, a NUL byte, a name or path too long), or ``None``.
    Checked before any system call, which would raise instead of answering."""
    try:
        raw = os.fsencode(path)
    except (TypeError, UnicodeError) as error:
        return f"not a file name ({type(error).__name__})"
    if not raw:
        return "an empty path (an unset shell variable?)"
    if b"\0" in raw:
        return "a path holding a NUL byte"
    if len(raw) > PATH_MAX:
        return f"a path longer than {PATH_MAX} bytes"
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return f"a path with a name longer than {NAME_MAX} bytes"
    return None


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a readable, non-empty regular file (missing, a directory, a FIFO or device
    that a read could wait on forever, unreadable, empty), or ``None``."""
    problem = path_problem(path)
    if problem is not None:
        return problem
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return f"cannot be opened ({error.strerror or error})"
    if stat.S_ISDIR(found.st_mode):
        return "a directory, not a file"
    if not stat.S_ISREG(found.st_mode):
        return "not a regular file (a FIFO, socket or device is never read)"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    if found.st_size == 0:
        return "the file is empty"
    return None


SMALL_FILE_LIMIT = 16 * 2**20
"""The largest dictionary or config file wmap reads whole (real ones are kilobytes)."""


def read_small_text(path: Path, option: str, expected: str) -> Result[str, BadConfig]:
    """A small UTF-8 text file the user named (``--dict``, ``--config``), read whole; bounded, never a device."""
    where = str(path)
    problem = regular_file_problem(path)
    if problem is not None and problem != "the file is empty":
        return Failure(BadConfig(where, option, expected, problem))
    try:
        with open(path, "rb") as handle:
            data = handle.read(SMALL_FILE_LIMIT + 1)
    except OSError as error:
        return Failure(BadConfig(where, option, expected, f"unreadable ({error.strerror or error})"))
    if len(data) > SMALL_FILE_LIMIT:
        return Failure(BadConfig(where, option, expected, f"larger than {SMALL_FILE_LIMIT // 2**20} MiB"))
    try:
        return Success(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        return Failure(BadConfig(where, option, expected, f"not UTF-8 text ({error.reason} at byte {error.start})"))


def parse_json(text: str) -> Any:
    """JSON from a file wmap did not write: nesting too deep for the parser, or a number too large,
    raise ``ValueError`` like any other malformed text."""
    try:
        return json.loads(text)
    except (RecursionError, OverflowError) as error:
        raise ValueError(f"nested too deeply or a number too large ({type(error).__name__})") from None
