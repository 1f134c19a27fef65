"""Key patterns: dotted segments where ``*`` stands for exactly one captured segment.

Matching works on whole segments only, so ``fc1`` never matches ``fc10`` and
``embed`` never matches ``embed_avg``. A pattern matches a *prefix* of a key's
segments; whatever follows is the remainder (the leaf, e.g. ``weight_g``).
"""

from __future__ import annotations

from typing import Final

import attrs

WILDCARD: Final = "*"


def split_key(key: str) -> tuple[str, ...]:
    """Split a dotted key into its segments (empty segments are kept)."""
    return tuple(key.split("."))


def join_key(segments: tuple[str, ...]) -> str:
    """Join segments back into a dotted key."""
    return ".".join(segments)


class PatternError(ValueError):
    """A pattern is malformed; raised only while rules are being built."""


@attrs.frozen(repr=False)
class Pattern:
    """A dotted pattern such as ``encoder.layers.*.fc1``."""

    text: str
    segments: tuple[str, ...] = attrs.field(init=False)
    wildcards: int = attrs.field(init=False)
    _literal_at: tuple[tuple[int, str], ...] = attrs.field(init=False, eq=False, repr=False)
    _wildcard_at: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        segments = split_key(self.text) if self.text else ()
        for segment in segments:
            if not segment:
                raise PatternError(f"pattern {self.text!r} has an empty segment")
            if WILDCARD in segment and segment != WILDCARD:
                raise PatternError(f"pattern {self.text!r}: '*' must be a whole segment, not part of {segment!r}")
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "wildcards", segments.count(WILDCARD))
        # matching compares the literal positions (most selective: the last one first), then captures
        literals = tuple((i, s) for i, s in enumerate(segments) if s != WILDCARD)
        object.__setattr__(self, "_literal_at", literals[::-1])
        object.__setattr__(self, "_wildcard_at", tuple(i for i, s in enumerate(segments) if s == WILDCARD))

    def __repr__(self) -> str:
        return self.text or "<root>"

    @property
    def first(self) -> str | None:
        """The first segment if it is a literal, else ``None`` (used to index rules)."""
        if not self.segments or self.segments[0] == WILDCARD:
            return None
        return self.segments[0]

    def match_prefix(self, segments: tuple[str, ...]) -> tuple[tuple[str, ...], int] | None:
        """Captures and matched length if this pattern matches a prefix of ``segments``."""
        length = len(self.segments)
        if length > len(segments):
            return None
        for index, literal in self._literal_at:
            if segments[index] != literal:
                return None
        captures = tuple(segments[i] for i in self._wildcard_at)
        if "" in captures:
            return None
        return captures, length

    def substitute(self, captures: tuple[str, ...]) -> tuple[str, ...]:
        """Fill the wildcards, in order, with ``captures``."""
        if len(captures) != self.wildcards:
            raise PatternError(f"pattern {self.text!r} has {self.wildcards} wildcards, got {len(captures)} values")
        if not captures:
            return self.segments
        values = iter(captures)
        return tuple(next(values) if seg == WILDCARD else seg for seg in self.segments)


def pattern(text: str) -> Pattern:
    """Build a :class:`Pattern`; raises :class:`PatternError` if malformed."""
    return Pattern(text)
