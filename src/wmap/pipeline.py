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
what it holds, so a user's own transform (anything with ``apply``) fits anywhere. Each is also a
:class:`Combinator`: it gives the children it applies, the scope it puts them under, and its
inverse given its children's, so one walk (:func:`walk`) serves everything that looks inside a
pipeline (its groups, the way back, the rules under their scopes), and a new combinator is one class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, runtime_checkable

import attrs
from returns.result import Result, Success

from wmap.errors import NotInvertible
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
    RouteWeightNorm,
    Skip,
    Target,
    Transform,
)

_Indexed = Rename | Skip | Refuse

Reverser = Callable[[Transform], Result[Transform, NotInvertible]]
"""How a child is reversed (:func:`wmap.reverse.reverse`), given to :meth:`Combinator.reversed`."""


@runtime_checkable
class Combinator(Protocol):
    """A transform made of others. wmap's combinators are; a user's own is entered by the walks if it is."""

    def children(self) -> tuple[Transform, ...]:
        """The transforms it applies, in order (a decided ``when``: the chosen one)."""
        ...

    def under(self) -> Scoped | None:
        """The scope its children's keys are under, if it is one."""
        ...

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        """Itself the other way, its children reversed with ``reverse`` (or the child that has no inverse)."""
        ...


def reverse_all(rules: tuple[Transform, ...], reverse: Reverser) -> Result[tuple[Transform, ...], NotInvertible]:
    """Every rule reversed, in order, or the first that has no inverse."""
    done: list[Transform] = []
    for rule in rules:
        inverse = reverse(rule)
        if not isinstance(inverse, Success):
            return inverse.map(lambda _: ())
        done.append(inverse.unwrap())
    return Success(tuple(done))


def walk(transform: Transform, scopes: tuple[Scoped, ...] = ()) -> Iterator[tuple[tuple[Scoped, ...], Transform]]:
    """Every transform of a pipeline, parents first, with the scopes above it (outermost first);
    a transform that is not a :class:`Combinator` is a leaf."""
    yield scopes, transform
    if isinstance(transform, Combinator):
        scope = transform.under()
        inner = (*scopes, scope) if scope is not None else scopes
        for child in transform.children():
            yield from walk(child, inner)


def _no_scope() -> None:
    return None


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

    def children(self) -> tuple[Transform, ...]:
        return self.rules

    under = staticmethod(_no_scope)

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        return reverse_all(self.rules, reverse).map(lambda rules: FirstMatch(f"{self.name} (reversed)", rules))

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

    def children(self) -> tuple[Transform, ...]:
        return self.stages

    under = staticmethod(_no_scope)

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        """The stages reversed in reverse order; a stage that adapts names to the target layout
        (``route_weight_norm``, either direction) stays last."""
        adapters = tuple(s for s in self.stages if isinstance(s, RouteWeightNorm))
        stages = tuple(s for s in reversed(self.stages) if not isinstance(s, RouteWeightNorm))
        return reverse_all(stages, reverse).map(lambda done: Seq((*done, *adapters)))

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

    def children(self) -> tuple[Transform, ...]:
        return (self.inner,)

    under = staticmethod(_no_scope)

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        return reverse(self.inner).map(Optional)

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

    def children(self) -> tuple[Transform, ...]:
        chosen = self.then if self.holds else self.otherwise
        return () if chosen is None else (chosen,)

    under = staticmethod(_no_scope)

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        """The chosen branch reversed; the other is never applied and is kept as it is."""
        chosen = self.then if self.holds else self.otherwise
        if chosen is None:
            return Success(self)
        return reverse(chosen).map(
            lambda inverse: attrs.evolve(self, then=inverse) if self.holds else attrs.evolve(self, otherwise=inverse)
        )

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

    def children(self) -> tuple[Transform, ...]:
        return (self.inner,)

    def under(self) -> Scoped | None:
        return self

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        """The prefixes swapped, the rules inside reversed (and shown the target layout under the scope)."""
        return reverse(self.inner).map(lambda inner: ScopedBack(Scoped(self.target, self.source, inner)))

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
class ScopedBack:
    """A scope reversed: as :class:`~wmap.pipeline.Scoped`, but the rules inside see the target
    layout under the scope's prefix (prefix stripped), so that :class:`RenameBack` can ask it."""

    scope: Scoped
    _views: dict[tuple[int, str], _Both] = attrs.field(init=False, factory=dict, eq=False)

    def __repr__(self) -> str:
        return repr(self.scope)

    def children(self) -> tuple[Transform, ...]:
        return (self.scope.inner,)

    def under(self) -> Scoped | None:
        return self.scope

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        return reverse(self.scope)

    def apply(self, key: str, target: Layout) -> Outcome:
        segments = split_key(key)
        found = self.scope.source.match_prefix(segments)
        if found is None or found[1] == len(segments):
            return NO_MATCH
        prefix = ".".join(self.scope.target.substitute(found[0]))
        cached = (id(target), prefix)
        view = self._views.get(cached)
        if view is None:
            head = prefix + "." if prefix else ""
            view = _Both({k[len(head) :]: v for k, v in target.items() if k.startswith(head)}, target)
            if len(self._views) > 64:  # a plan is made against one layout; its prefixes are few
                self._views.clear()
            self._views[cached] = view
        return self.scope.apply(key, view)


class _Both(dict[str, tuple[int, ...]]):
    """The scope's view of the target layout, falling back to the whole layout (for rules inside that
    write top-level names)."""

    def __init__(self, view: Layout, whole: Layout) -> None:
        super().__init__(view)
        self.whole = whole

    def __missing__(self, key: str) -> tuple[int, ...]:
        return self.whole[key]

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or key in self.whole


@attrs.frozen(repr=False)
class Upgrade:
    """A named chain that rewrites an older file's layout into the current one before the rules run
    (fairseq's load-time upgrades). Keys it does not match pass unchanged. Its inverse is nothing to
    undo: the way back writes the current format."""

    name: str
    inner: Transform

    def __repr__(self) -> str:
        return f"upgrade {self.name}: {self.inner!r}"

    def children(self) -> tuple[Transform, ...]:
        return (self.inner,)

    under = staticmethod(_no_scope)

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        """Nothing to undo (the way back writes the current format): its rules need no inverse."""
        return Success(Optional(FirstMatch(f"{self.name} (current format: nothing to undo)", ())))

    def apply(self, key: str, target: Layout) -> Outcome:
        return passing_unmatched(self.inner, key, target)


def upgrade(name: str, inner: Transform) -> Upgrade:
    """Rewrite an older layout into the current one first (see :class:`Upgrade`)."""
    return Upgrade(name, inner)


def groups(transform: Transform) -> Iterator[tuple[str, FirstMatch]]:
    """Every first-match group inside a pipeline, with the source prefix it sees keys under (a
    transform that is not a :class:`Combinator` is opaque and not entered)."""
    for scopes, node in walk(transform):
        if isinstance(node, FirstMatch):
            yield join_key(tuple(scope.source.text for scope in scopes if scope.source.text)), node


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
