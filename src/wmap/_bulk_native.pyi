"""Stub of the optional C kernel of :mod:`wmap.bulk` (see ``_bulk_native.c``)."""

from collections.abc import Callable
from typing import Any

def plan_keys(
    source: dict[str, tuple[int, ...]],
    excluded: tuple[str, ...],
    learn: Callable[[str], tuple[str | None, object] | None],
    target: dict[str, tuple[int, ...]],
    /,
) -> tuple[list[str], list[str], list[tuple[int, ...]], list[tuple[str, ...]], list[str], list[Any]] | None: ...
