"""The reverse of a pipeline, derived from the same rules (never written twice).

Every primitive and combinator has its inverse:

- ``rename`` swaps its two patterns (same captures, same leaves);
- ``tie`` renames the primary back and marks each tied copy as written once
  (:class:`TiedCopy`, a skip whose reason names the primary);
- ``skip`` becomes :class:`Unrecoverable` (the converted model does not hold those keys: a
  reverse plan lists the original's keys under them as unrecoverable, with the forward reason);
  ``refuse`` matches nothing (a refused variant was never converted);
- ``scoped`` swaps its prefixes; ``first_match``, ``optional`` and ``when`` invert their rules;
  ``seq`` runs its inverted stages in reverse order;
- ``route_weight_norm`` adapts names to whichever form the target layout has, in either
  direction, so it is its own inverse and stays the last stage.

A user's transform is invertible if it has ``inverse() -> Transform``; a pipeline holding one
without it is refused when the reverse is built, naming it (:class:`~wmap.errors.NotInvertible`).
Pure: rules in, rules out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import attrs
from returns.result import Failure, Result, Success

from wmap.errors import NotInvertible
from wmap.keys import Pattern, split_key
from wmap.pipeline import Combinator, FirstMatch, Scoped, walk
from wmap.transforms import (
    NO_MATCH,
    JoinRename,
    Layout,
    Leaves,
    Mapped,
    Outcome,
    Refuse,
    Rename,
    RouteWeightNorm,
    Skip,
    Skipped,
    SplitRename,
    Target,
    Transform,
    match_under,
)
from wmap.values import Joiner, shape_after


@runtime_checkable
class Invertible(Protocol):
    """A user's transform that declares its inverse."""

    def inverse(self) -> Transform: ...


@attrs.frozen(repr=False)
class Unrecoverable:
    """Keys under ``source`` that the forward direction did not carry over (skipped or refused):
    the converted model does not hold them. Matches no key of a converted model; a reverse plan
    names the original's keys under it (``reason`` says why they are gone)."""

    source: Pattern
    reason: str
    leaves: Leaves | None = None

    def __repr__(self) -> str:
        return f"unrecoverable {self.source!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        return NO_MATCH

    def covers(self, key: str) -> bool:
        """Whether ``key`` (of the original layout) lies under this rule."""
        return match_under(self.source, self.leaves, key) is not None


@attrs.frozen(repr=False)
class TiedCopy:
    """A converted model's copy of a tied tensor (``proj_out`` tied to the token embedding): the
    original holds it once, under the primary's name, so the copy is not written back."""

    source: Pattern
    primary: str
    leaves: Leaves | None = None

    def __repr__(self) -> str:
        return f"tied copy {self.source!r} of {self.primary!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        if match_under(self.source, self.leaves, key) is None:
            return NO_MATCH
        return Skipped(f"tied copy of {self.primary}: the original holds it once", repr(self))


@attrs.frozen(repr=False)
class RenameBack:
    """A rename reversed, or a split (its join). Forward, two rules may give one name (EnCodec's
    ``conv.conv`` and ``convtr.convtr`` both become ``conv``; audiocraft's ``self_attn.in_proj_weight``
    and ``self_attn.mha.in_proj_weight`` both become q/k/v); back, the original's layout decides: a
    name the original does not have (in either weight-norm form) is left to the next rule."""

    rule: Rename | JoinRename

    def __repr__(self) -> str:
        return repr(self.rule)

    def apply(self, key: str, target: Layout) -> Outcome:
        outcome = self.rule.apply(key, target)
        if not isinstance(outcome, Mapped) or not target:
            return outcome
        name = outcome.targets[0].key
        routed = _ROUTE.apply(name, target)
        held = name in target or (isinstance(routed, Mapped) and routed.targets[0].key in target)
        return outcome if held else NO_MATCH


_ROUTE = RouteWeightNorm()


def _rename(rule: Rename) -> Transform:
    back = RenameBack(Rename(rule.target, rule.source, rule.leaves))
    if not rule.also:
        return back
    copies = tuple(TiedCopy(p, rule.target.text, rule.leaves) for p in rule.also)
    return FirstMatch(f"tie {rule.source.text!r} (reversed)", (back, *copies))


def reverse(transform: Transform) -> Result[Transform, NotInvertible]:
    """The inverse of ``transform`` (see the module's docstring), or the transform that has none."""
    if isinstance(transform, Combinator):
        return transform.reversed(reverse)
    if isinstance(transform, Rename):
        return Success(_rename(transform))
    if isinstance(transform, Skip):
        return Success(Unrecoverable(transform.source, transform.reason, transform.leaves))
    if isinstance(transform, Refuse):  # a refused variant was never converted: nothing comes back from it
        return Success(FirstMatch(f"{transform!r} (never converted)", ()))
    if isinstance(transform, RenameBack):  # the forward rule again
        rule = transform.rule
        return Success(Rename(rule.target, rule.source, rule.leaves) if isinstance(rule, Rename) else rule.inverse())
    if isinstance(transform, SplitRename):
        return Success(RenameBack(transform.inverse()))
    if isinstance(transform, (RouteWeightNorm, Unrecoverable, TiedCopy)):
        return Success(transform)
    if isinstance(transform, Invertible):
        return Success(transform.inverse())
    return Failure(NotInvertible(repr(transform).splitlines()[0][:200], type(transform).__name__))


def rules_of(transform: Transform) -> Iterator[tuple[tuple[Scoped, ...], Transform]]:
    """Every rule of a (reversed) pipeline with the scopes above it, outermost first."""
    return ((scopes, node) for scopes, node in walk(transform) if not isinstance(node, Combinator))


def unrecoverable(transform: Transform) -> Iterator[tuple[tuple[Pattern, ...], Unrecoverable]]:
    """Every :class:`Unrecoverable` rule of a reversed pipeline, with the original-side prefixes of
    the scopes above it, so that a reverse plan can name the original's keys under it."""
    for scopes, rule in rules_of(transform):
        if isinstance(rule, Unrecoverable):
            yield tuple(scope.target for scope in scopes), rule


def _within(scopes: tuple[Pattern, ...], segments: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``segments`` split into the part the scope prefixes match, in order, and the rest; ``None``
    where one of them does not match."""
    prefix: tuple[str, ...] = ()
    for scope in scopes:
        found = scope.match_prefix(segments)
        if found is None:
            return None
        prefix += segments[: found[1]]
        segments = segments[found[1] :]
    return prefix, segments


def unrecoverable_rule(transform: Transform, key: str) -> Unrecoverable | None:
    """The :class:`Unrecoverable` rule of a reversed pipeline that ``key`` (of the original's layout)
    lies under, scopes included; ``None`` if there is none."""
    for scopes, rule in unrecoverable(transform):
        found = _within(scopes, split_key(key))
        if found is not None and found[1] and rule.covers(".".join(found[1])):
            return rule
    return None


def tied_primary(transform: Transform, key: str) -> str | None:
    """For a converted model's key that a reversed pipeline skips as a :class:`TiedCopy`, the key of
    the primary it must equal; ``None`` for any other key."""
    for scopes, rule in rules_of(transform):
        if not isinstance(rule, TiedCopy):
            continue
        found = _within(tuple(scope.source for scope in scopes), split_key(key))
        if found is None:
            continue
        prefix, segments = found
        matched = match_under(rule.source, rule.leaves, ".".join(segments))
        if matched is not None:
            captures, rest = matched
            return ".".join((*prefix, *Pattern(rule.primary).substitute(captures), *rest))
    return None


def predicted_layout(transform: Transform, converted: Layout) -> dict[str, tuple[int, ...]]:
    """The original's layout as the reversed rules name it, for an original whose layout is known
    only through them (fairseq's: its loader is the check); shapes as in the converted layout. A second
    pass gives the rules the layout of the first, so a fan-out names a copy under every layer."""
    layout: dict[str, tuple[int, ...]] = {}
    for key, shape in converted.items():
        outcome = transform.apply(key, {})
        if isinstance(outcome, Mapped):
            layout[outcome.targets[0].key] = _produced(outcome.targets[0], shape)
    parts: dict[str, dict[int, tuple[int, ...]]] = {}
    joiners: dict[str, Joiner] = {}
    for key, shape in converted.items():  # rules that copy by what the original holds (a fan-out) see it
        outcome = transform.apply(key, layout)
        if not isinstance(outcome, Mapped):
            continue
        for item in outcome.targets:
            if item.part is None:
                layout[item.key] = _produced(item, shape)
            else:
                parts.setdefault(item.key, {})[item.part.index] = shape
                joiners[item.key] = item.part.joiner
    for name, held in parts.items():  # a joined target's shape is its joiner's of all its parts
        joined = joiners[name].shape_of([held[i] for i in sorted(held)])
        if joined is not None:
            layout[name] = joined
    return layout


def _produced(item: Target, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a target gets from a source of ``shape`` (after its value operation)."""
    return shape if item.value is None else (shape_after(item.value, shape) or shape)


def unrecoverable_names(transform: Transform) -> tuple[str, ...]:
    """The original's names under each :class:`Unrecoverable` rule without wildcards (``final_proj``,
    ``label_embs_concat``, ``_ema``): what a reverse plan names when the original's layout is known
    only through the rules. A rule with wildcards names no one key and is left out."""
    names: list[str] = []
    for scopes, rule in unrecoverable(transform):
        parts = [*scopes, rule.source]
        if any(p.wildcards for p in parts):
            continue
        base = ".".join(p.text for p in parts if p.text)
        leaves = sorted(rule.leaves.names) if rule.leaves is not None else [""]
        names += [f"{base}.{leaf}" if leaf else base for leaf in leaves]
    return tuple(dict.fromkeys(names))
