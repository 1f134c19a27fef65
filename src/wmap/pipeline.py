"""Combinators: pipelines built from transforms are transforms (and values) themselves.

- :func:`first_match` — an ordered group; the first rule that speaks wins, so a key
  is never written twice by accident. Rules are indexed by their first literal
  segment, so a key is only tested against the rules that could match it. Two
  renames of a group that can match the same key are found when the group is
  built (:attr:`FirstMatch.overlaps`), from their patterns alone.
- :func:`seq` — stages one after another; a stage's targets feed the next.
- :func:`optional` — a stage that passes keys it does not match through unchanged.
- :func:`when` — a conditional on the model's config, kept as a value so it prints.
- :func:`scoped` — a pipeline under a source prefix and a target prefix (``*`` captures as in ``rename``).

Every combinator is a :class:`~wmap.transforms.Transform`: it only calls ``apply`` of
what it holds, so a user's own transform (anything with ``apply``) fits anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from wmap.keys import WILDCARD, Pattern, PatternError, join_key, pattern, split_key
from wmap.transforms import (
    NO_MATCH,
    Layout,
    Leaves,
    Mapped,
    Outcome,
    Refuse,
    Refused,
    Rename,
    Skip,
    Target,
    Transform,
)

_Indexed = Rename | Skip | Refuse

INDEX_DEPTH = 2
"""A group narrows its rules by a key's first segments (``encoder.layers``): the ones whose pattern
can match them, computed once per distinct head."""
MAX_INDEXED_HEADS = 4096
"""The most heads a group remembers (a file with more distinct heads re-derives them: slower, same answer)."""


def _indexed(rule: Transform) -> _Indexed | None:
    """The pattern rule behind ``rule`` (a ``when`` decided at build time counts as its chosen rule)."""
    if isinstance(rule, When):
        rule = rule.then if rule.holds else rule.otherwise  # type: ignore[assignment]
        if rule is None:
            return None
    return rule if isinstance(rule, _Indexed) else None


def _may_match(rule: Transform, head: tuple[str, ...]) -> bool:
    """Whether ``rule`` can match a key whose first segments are ``head`` (exact: a pattern rule
    whose leading segments differ never matches; any other transform may)."""
    if isinstance(rule, When) and (rule.then if rule.holds else rule.otherwise) is None:
        return False
    indexed = _indexed(rule)
    if indexed is None:
        return True
    own = indexed.source.segments
    return all(mine in (WILDCARD, theirs) and theirs for mine, theirs in zip(own, head, strict=False))


def _leaf_shapes(leaves: Leaves | None) -> frozenset[tuple[str, ...]] | None:
    """A leaf set as segment tuples (``EXACT`` is the empty tuple); ``None``: any remainder."""
    if leaves is None:
        return None
    return frozenset(tuple(name.split(".")) if name else () for name in leaves.names)


def _fits(pattern_segments: tuple[str, ...], literal: tuple[str, ...]) -> bool:
    return all(p in (WILDCARD, s) for p, s in zip(pattern_segments, literal, strict=True))


def overlap(first: Rename, second: Rename) -> str | None:
    """An example key that both renames match (decided from their patterns and leaf sets), else ``None``."""
    a, b = first.source.segments, second.source.segments
    if not all(x == y or WILDCARD in (x, y) for x, y in zip(a, b, strict=False)):
        return None
    short, long_ = (first, second) if len(a) <= len(b) else (second, first)
    n = len(short.source.segments)
    head = tuple(
        y if x == WILDCARD else x for x, y in zip(short.source.segments, long_.source.segments[:n], strict=True)
    )
    extra = long_.source.segments[n:]  # part of the short rule's remainder
    short_leaves, long_leaves = _leaf_shapes(short.leaves), _leaf_shapes(long_.leaves)
    if short_leaves is None:  # any remainder: the extra segments and any of the long rule's leaves
        rest = min(long_leaves) if long_leaves else ("weight",)
        if long_leaves is not None and not long_leaves:
            return None
        remainder = extra + rest
    else:
        fitting = [
            leaf
            for leaf in sorted(short_leaves)
            if len(leaf) >= len(extra)
            and _fits(extra, leaf[: len(extra)])
            and (long_leaves is None or leaf[len(extra) :] in long_leaves)
        ]
        if not fitting:
            return None
        remainder = fitting[0]
    return join_key(tuple("0" if s == WILDCARD else s for s in head + remainder))


@attrs.frozen
class Overlap:
    """Two renames of one group that can both match ``example``; the earlier one wins."""

    example: str
    rules: tuple[str, str]


def _writer(rule: Transform) -> Rename | None:
    if isinstance(rule, Rename):
        return rule
    if isinstance(rule, When):
        chosen = rule.then if rule.holds else rule.otherwise
        return chosen if isinstance(chosen, Rename) else None
    return None


def _overlaps(rules: tuple[Transform, ...]) -> tuple[Overlap, ...]:
    writers = [(i, w) for i, rule in enumerate(rules) if (w := _writer(rule)) is not None]
    found: list[Overlap] = []
    for n, (_, earlier) in enumerate(writers):
        for _, later in writers[n + 1 :]:
            example = overlap(earlier, later)
            if example is not None:
                found.append(Overlap(example, (repr(earlier), repr(later))))
    return tuple(found)


@attrs.frozen(repr=False, eq=False)
class FirstMatch:
    """An ordered group of rules: the first one that does not answer 'no match' decides."""

    name: str
    rules: tuple[Transform, ...]
    overlaps: tuple[Overlap, ...] = attrs.field(init=False)
    """Renames of this group that can match one key (a skip or refusal behind a rename is a
    deliberate guard and not listed)."""
    _candidates: dict[tuple[str, ...], tuple[Transform, ...]] = attrs.field(init=False)
    """The rules that may match keys starting with given segments, in order (filled as keys come)."""

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "overlaps", _overlaps(self.rules))
        object.__setattr__(self, "_candidates", {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FirstMatch) and (self.name, self.rules) == (other.name, other.rules)

    def __hash__(self) -> int:
        return hash((self.name, self.rules))

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for rule in self.rules for line in repr(rule).splitlines())
        return f"first_match {self.name!r}:\n{inner}"

    def apply(self, key: str, target: Layout) -> Outcome:
        head = tuple(key.split(".", INDEX_DEPTH)[:INDEX_DEPTH])
        candidates = self._candidates.get(head)
        if candidates is None:
            if len(self._candidates) >= MAX_INDEXED_HEADS:
                self._candidates.clear()  # bounded by the number of distinct key heads, never by the file
            candidates = self._candidates[head] = tuple(r for r in self.rules if _may_match(r, head))
        for rule in candidates:
            outcome = rule.apply(key, target)
            if outcome is not NO_MATCH:
                return outcome
        return NO_MATCH


@attrs.frozen(repr=False)
class Seq:
    """Stages in order: each target of one stage is fed to the next; no match anywhere stops."""

    stages: tuple[Transform, ...]

    def __repr__(self) -> str:
        return "\n".join(f"then {stage!r}" if i else repr(stage) for i, stage in enumerate(self.stages))

    def apply(self, key: str, target: Layout) -> Outcome:
        current: tuple[Target, ...] = (Target(key),)
        rules: tuple[str, ...] = ()
        for stage in self.stages:
            produced: list[Target] = []
            for item in current:
                outcome = stage.apply(item.key, target)
                if not isinstance(outcome, Mapped):
                    return outcome
                rules += tuple(r for r in outcome.rules if r not in rules)
                for new in outcome.targets:
                    if new.value is not None and item.value is not None:
                        return Refused("two value operations on one key: not supported", repr(stage))
                    produced.append(
                        attrs.evolve(  # what an earlier stage said of the key stays said
                            new,
                            tied_to=new.tied_to or item.tied_to,
                            value=new.value or item.value,
                            gathered=new.gathered or item.gathered,
                            part=new.part or item.part,
                        )
                    )
            current = tuple(produced)
        return Mapped(current, rules)


@attrs.frozen(repr=False)
class Optional:
    """A stage that passes keys it does not match through unchanged (e.g. a pre-rename)."""

    inner: Transform

    def __repr__(self) -> str:
        return f"optional {self.inner!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        return passing_unmatched(self.inner, key, target)


def passing_unmatched(inner: Transform, key: str, target: Layout) -> Outcome:
    """``inner``'s outcome for ``key``, or ``key`` itself unchanged where ``inner`` does not match it
    (what :class:`Optional` and :class:`Upgrade` do; they differ only in their inverse)."""
    outcome = inner.apply(key, target)
    return Mapped((Target(key),), ()) if outcome is NO_MATCH else outcome


@attrs.frozen(repr=False)
class When:
    """A conditional on the model's config, decided when the pipeline is built but kept visible."""

    condition: str
    holds: bool
    then: Transform
    otherwise: Transform | None = None

    def __repr__(self) -> str:
        chosen = self.then if self.holds else self.otherwise
        shown = "no rule (keys pass to the next one)" if chosen is None else repr(chosen)
        return f"when {self.condition} ({'yes' if self.holds else 'no'}): {shown}"

    def apply(self, key: str, target: Layout) -> Outcome:
        chosen = self.then if self.holds else self.otherwise
        return NO_MATCH if chosen is None else chosen.apply(key, target)


@attrs.frozen(repr=False)
class Scoped:
    """Run ``inner`` on keys under ``source``, with that prefix stripped; prefix targets with ``target``.

    ``*`` in ``source`` captures a segment that the same number of ``*`` in
    ``target`` receives, as in ``rename``. Rules that write top-level target
    keys (e.g. ``lm_head``) sit outside the scope.
    """

    source: Pattern
    target: Pattern
    inner: Transform

    def __attrs_post_init__(self) -> None:
        if self.source.wildcards != self.target.wildcards:
            raise PatternError(
                f"scope {self.source.text!r} -> {self.target.text!r}: the two sides have "
                f"{self.source.wildcards} and {self.target.wildcards} '*'"
            )

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for line in repr(self.inner).splitlines())
        return f"under {self.source!r} -> {self.target!r}:\n{inner}"

    def apply(self, key: str, target: Layout) -> Outcome:
        segments = split_key(key)
        found = self.source.match_prefix(segments)
        if found is None or found[1] == len(segments):
            return NO_MATCH
        captures, length = found
        prefix = join_key(self.target.substitute(captures))
        prefix = prefix + "." if prefix else ""
        outcome = self.inner.apply(join_key(segments[length:]), target)
        if not isinstance(outcome, Mapped):
            return outcome
        targets = tuple(
            attrs.evolve(t, key=prefix + t.key, tied_to=None if t.tied_to is None else prefix + t.tied_to)
            for t in outcome.targets
        )
        return Mapped(targets, (f"under {self.source!r}", *outcome.rules))


@attrs.frozen(repr=False)
class Upgrade:
    """A named chain that rewrites an older file's layout into the current one before the rules run
    (fairseq's load-time upgrades). Keys it does not match pass unchanged. Its inverse is nothing to
    undo: the way back writes the current format."""

    name: str
    inner: Transform

    def __repr__(self) -> str:
        return f"upgrade {self.name}: {self.inner!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        return passing_unmatched(self.inner, key, target)


def upgrade(name: str, inner: Transform) -> Upgrade:
    """Rewrite an older layout into the current one first (see :class:`Upgrade`)."""
    return Upgrade(name, inner)


def groups(transform: Transform) -> Iterator[tuple[str, FirstMatch]]:
    """Every first-match group inside a pipeline built from wmap's combinators, with the source
    prefix it sees keys under (a user's own transforms are opaque and not entered)."""
    if isinstance(transform, FirstMatch):
        yield "", transform
        for rule in transform.rules:
            yield from groups(rule)
    elif isinstance(transform, Seq):
        for stage in transform.stages:
            yield from groups(stage)
    elif isinstance(transform, Optional | Upgrade):
        yield from groups(transform.inner)
    elif isinstance(transform, When):
        chosen = transform.then if transform.holds else transform.otherwise
        if chosen is not None:
            yield from groups(chosen)
    elif isinstance(transform, Scoped):
        for prefix, group in groups(transform.inner):
            yield join_key((transform.source.text, prefix)) if prefix else transform.source.text, group


def first_match(name: str, rules: Iterable[Transform]) -> FirstMatch:
    """An ordered group: the first rule that matches a key decides."""
    return FirstMatch(name, tuple(rules))


def seq(*stages: Transform) -> Seq:
    """Sequential composition."""
    return Seq(stages)


def optional(inner: Transform) -> Optional:
    """Pass keys ``inner`` does not match through unchanged."""
    return Optional(inner)


def when(condition: str, holds: bool, then: Transform, otherwise: Transform | None = None) -> When:
    """Use ``then`` if ``holds`` else ``otherwise`` (no match when absent)."""
    return When(condition, holds, then, otherwise)


def scoped(source: str, target: str, inner: Transform) -> Scoped:
    """Run ``inner`` under a source prefix, writing under a target prefix (``*`` captured, checked now)."""
    return Scoped(pattern(source), pattern(target), inner)
