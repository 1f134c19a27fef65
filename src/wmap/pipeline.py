"""Combinators: pipelines built from transforms are transforms (and values) themselves.

- :func:`first_match` — an ordered group; the first rule that speaks wins, so a key
  is never written twice by accident. Rules are indexed by their first literal
  segment, so a key is only tested against the rules that could match it.
- :func:`seq` — stages one after another; a stage's targets feed the next.
- :func:`optional` — a stage that passes keys it does not match through unchanged.
- :func:`when` — a conditional on the model's config, kept as a value so it prints.
- :func:`scoped` — a pipeline under a source prefix and a target prefix.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from wmap.keys import Pattern, join_key, pattern, split_key
from wmap.transforms import (
    NO_MATCH,
    Layout,
    Mapped,
    Outcome,
    Refuse,
    Rename,
    Skip,
    Target,
    Transform,
)

_Indexed = Rename | Skip | Refuse


def _index(rules: tuple[Transform, ...]) -> dict[str | None, tuple[int, ...]]:
    """Map a first segment to the positions of the rules that may match a key starting with it.

    Rules whose first segment is a wildcard, and non-pattern transforms, sit
    under ``None`` and are candidates for every key.
    """
    buckets: dict[str | None, list[int]] = {}
    for position, rule in enumerate(rules):
        first = rule.source.first if isinstance(rule, _Indexed) else None
        buckets.setdefault(first, []).append(position)
    anywhere = buckets.get(None, [])
    return {first: tuple(sorted({*positions, *anywhere})) for first, positions in buckets.items()} | {
        None: tuple(anywhere)
    }


@attrs.frozen(repr=False, eq=False)
class FirstMatch:
    """An ordered group of rules: the first one that does not answer 'no match' decides."""

    name: str
    rules: tuple[Transform, ...]
    _by_first: dict[str | None, tuple[int, ...]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_first", _index(self.rules))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FirstMatch) and (self.name, self.rules) == (other.name, other.rules)

    def __hash__(self) -> int:
        return hash((self.name, self.rules))

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for rule in self.rules for line in repr(rule).splitlines())
        return f"first_match {self.name!r}:\n{inner}"

    def literals(self) -> frozenset[str]:
        return frozenset().union(*(rule.literals() for rule in self.rules))

    def target_dependent(self) -> bool:
        return any(rule.target_dependent() for rule in self.rules)

    def _candidates(self, key: str) -> tuple[int, ...]:
        first = key.split(".", 1)[0]
        found = self._by_first.get(first)
        return found if found is not None else self._by_first[None]

    def apply(self, key: str, target: Layout) -> Outcome:
        for position in self._candidates(key):
            outcome = self.rules[position].apply(key, target)
            if outcome is not NO_MATCH:
                return outcome
        return NO_MATCH

    def lint(self, key: str, target: Layout) -> tuple[tuple[str, ...], ...]:
        outcomes = [(self.rules[p], self.rules[p].apply(key, target)) for p in self._candidates(key)]
        matching = [rule for rule, outcome in outcomes if outcome is not NO_MATCH]
        # A skip or refusal behind a rename is a deliberate guard; two rules that both write are not.
        writers = [rule for rule, outcome in outcomes if isinstance(outcome, Mapped)]
        found: tuple[tuple[str, ...], ...] = ()
        if len(writers) > 1:
            found = (tuple(repr(rule) for rule in writers),)
        if matching:
            found += matching[0].lint(key, target)
        return found


@attrs.frozen(repr=False)
class Seq:
    """Stages in order: each target of one stage is fed to the next; no match anywhere stops."""

    stages: tuple[Transform, ...]

    def __repr__(self) -> str:
        return "\n".join(f"then {stage!r}" if i else repr(stage) for i, stage in enumerate(self.stages))

    def literals(self) -> frozenset[str]:
        return frozenset().union(*(stage.literals() for stage in self.stages))

    def target_dependent(self) -> bool:
        return any(stage.target_dependent() for stage in self.stages)

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
                    tied_to = new.tied_to or item.tied_to
                    produced.append(Target(new.key, tied_to))
            current = tuple(produced)
        return Mapped(current, rules)

    def lint(self, key: str, target: Layout) -> tuple[tuple[str, ...], ...]:
        found: tuple[tuple[str, ...], ...] = ()
        keys = [key]
        for stage in self.stages:
            next_keys: list[str] = []
            for item in keys:
                found += stage.lint(item, target)
                outcome = stage.apply(item, target)
                if isinstance(outcome, Mapped):
                    next_keys.extend(t.key for t in outcome.targets)
            keys = next_keys
        return found


@attrs.frozen(repr=False)
class Optional:
    """A stage that passes keys it does not match through unchanged (e.g. a pre-rename)."""

    inner: Transform

    def __repr__(self) -> str:
        return f"optional {self.inner!r}"

    def literals(self) -> frozenset[str]:
        return self.inner.literals()

    def target_dependent(self) -> bool:
        return self.inner.target_dependent()

    def apply(self, key: str, target: Layout) -> Outcome:
        outcome = self.inner.apply(key, target)
        return Mapped((Target(key),), ()) if outcome is NO_MATCH else outcome

    def lint(self, key: str, target: Layout) -> tuple[tuple[str, ...], ...]:
        return self.inner.lint(key, target)


@attrs.frozen(repr=False)
class When:
    """A conditional on the model's config, decided when the pipeline is built but kept visible."""

    condition: str
    holds: bool
    then: Transform
    otherwise: Transform | None = None

    def __repr__(self) -> str:
        chosen = self.then if self.holds else self.otherwise
        return f"when {self.condition} ({'yes' if self.holds else 'no'}): {chosen!r}"

    def literals(self) -> frozenset[str]:
        return self.then.literals() | (self.otherwise.literals() if self.otherwise else frozenset())

    def target_dependent(self) -> bool:
        return self.then.target_dependent() or bool(self.otherwise and self.otherwise.target_dependent())

    def _chosen(self) -> Transform | None:
        return self.then if self.holds else self.otherwise

    def apply(self, key: str, target: Layout) -> Outcome:
        chosen = self._chosen()
        return NO_MATCH if chosen is None else chosen.apply(key, target)

    def lint(self, key: str, target: Layout) -> tuple[tuple[str, ...], ...]:
        chosen = self._chosen()
        return () if chosen is None else chosen.lint(key, target)


@attrs.frozen(repr=False)
class Scoped:
    """Run ``inner`` on keys under ``source``, with that prefix stripped; prefix targets with ``target``.

    Rules that write top-level target keys (e.g. ``lm_head``) sit outside the scope.
    """

    source: Pattern
    target: Pattern
    inner: Transform

    def __repr__(self) -> str:
        inner = "\n".join("  " + line for line in repr(self.inner).splitlines())
        return f"under {self.source!r} -> {self.target!r}:\n{inner}"

    def literals(self) -> frozenset[str]:
        return frozenset(self.source.segments) | frozenset(self.target.segments) | self.inner.literals()

    def target_dependent(self) -> bool:
        return self.inner.target_dependent()

    def _strip(self, key: str) -> str | None:
        segments = split_key(key)
        found = self.source.match_prefix(segments)
        if found is None or found[1] == len(segments):
            return None
        return join_key(segments[found[1] :])

    def apply(self, key: str, target: Layout) -> Outcome:
        inner_key = self._strip(key)
        if inner_key is None:
            return NO_MATCH
        prefix = self.target.text + "." if self.target.text else ""
        # Routing stages that look keys up in the target layout belong after the scope.
        outcome = self.inner.apply(inner_key, target)
        if not isinstance(outcome, Mapped):
            return outcome
        targets = tuple(
            Target(prefix + t.key, None if t.tied_to is None else prefix + t.tied_to) for t in outcome.targets
        )
        return Mapped(targets, (f"under {self.source!r}", *outcome.rules))

    def lint(self, key: str, target: Layout) -> tuple[tuple[str, ...], ...]:
        inner_key = self._strip(key)
        return () if inner_key is None else self.inner.lint(inner_key, target)


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
    """Run ``inner`` under a source prefix, writing under a target prefix."""
    return Scoped(pattern(source), pattern(target), inner)
