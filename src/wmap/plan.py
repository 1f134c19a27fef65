"""The plan's values: :class:`MappingPlan` and its entries (made by :mod:`wmap.planner`). No tensors."""

from __future__ import annotations

from typing import Any

import attrs
from returns.result import Failure, Result, Success

from wmap.errors import PlanNotClean
from wmap.transforms import Shape
from wmap.values import Joiner, Maker, ValueOp


@attrs.frozen
class Applied:
    """``source`` is written to ``target`` (shape ``shape``) by ``rules``."""

    source: str
    target: str
    shape: Shape
    rules: tuple[str, ...]
    tied_to: str | None = None
    value: ValueOp | None = None
    """A value operation apply runs on the way (``shape`` is then the result's shape)."""


@attrs.frozen
class Made:
    """``target`` (shape ``shape``) has no source: it is made by ``maker`` from the config, for
    ``reason`` (an identity projection where the original has none)."""

    target: str
    shape: Shape
    maker: Maker
    reason: str


@attrs.frozen
class Gathered:
    """``target`` is written from ``sources[0]``; every other source must hold the same values
    (checked by apply, which names both keys if not): copies the target holds once."""

    target: str
    sources: tuple[str, ...]
    rules: tuple[str, ...]


@attrs.frozen
class Joined:
    """``target`` (shape ``shape``) is ``sources`` joined by ``joiner``, in order (q, k and v concatenated
    into a fused ``qkv``; weight norm's ``g`` and ``v`` folded); apply joins them."""

    target: str
    sources: tuple[str, ...]
    joiner: Joiner
    shape: Shape
    rules: tuple[str, ...]


@attrs.frozen
class MakeRule:
    """A target a family makes where the source has nothing for it: every missing target key ending
    in ``suffix`` whose shape is the maker's (checked by the planner, made only by apply). The way back
    drops what was made while it is still as made, unless ``kept_back``: the original's config written
    back then holds such a tensor too (a zero adapter where fairseq's layer had none goes back as a
    layer with a zero adapter)."""

    suffix: str
    maker: Maker
    reason: str
    kept_back: bool = False

    def names(self, key: str) -> bool:
        """Whether ``key`` is the rule's target: the suffix itself, or it under any prefix."""
        return key == self.suffix or key.endswith("." + self.suffix)


@attrs.frozen
class SkippedKey:
    key: str
    reason: str
    rule: str


@attrs.frozen
class RefusedKey:
    key: str
    reason: str
    rule: str


@attrs.frozen
class Conflict:
    """Several sources would write ``target``; the first one listed is the one applied."""

    target: str
    sources: tuple[str, ...]


@attrs.frozen
class ShapeMismatch:
    source: str
    target: str
    source_shape: Shape
    target_shape: Shape
    rules: tuple[str, ...]


@attrs.frozen
class UnknownTarget:
    """A rule produced a target key the target model does not have."""

    source: str
    target: str
    rules: tuple[str, ...]


@attrs.frozen
class Ambiguity:
    """Two rules of a first-match group can both match a key such as ``key``; the first listed wins.

    Found from the rules themselves when their group is built, not by evaluating keys."""

    key: str
    rules: tuple[str, ...]


@attrs.frozen
class Accept:
    """Named exceptions a caller accepts in a plan that is otherwise not clean."""

    unused: frozenset[str] = frozenset()
    missing: frozenset[str] = frozenset()
    unrecoverable: frozenset[str] = frozenset()
    """Keys of the original a reverse plan cannot give back (the forward direction skipped them)."""


NO_EXCEPTIONS = Accept()
"""Accept nothing: the plan must be clean."""


@attrs.frozen
class MappingPlan:
    """What a conversion will do, decided from names and shapes only."""

    applied: tuple[Applied, ...]
    skipped: tuple[SkippedKey, ...]
    refused: tuple[RefusedKey, ...]
    unused: tuple[str, ...]
    missing: tuple[str, ...]
    conflicts: tuple[Conflict, ...]
    shape_mismatches: tuple[ShapeMismatch, ...]
    unknown_targets: tuple[UnknownTarget, ...]
    ambiguous: tuple[Ambiguity, ...] = ()
    unrecoverable: tuple[SkippedKey, ...] = ()
    """Reverse plans: keys of the original that the converted model does not hold (the forward
    direction skipped or refused them), with the forward reason."""
    made: tuple[Made, ...] = ()
    """Targets no source writes that the family makes from the config (:class:`MakeRule`)."""
    gathered: tuple[Gathered, ...] = ()
    """Targets several sources write that must agree (:class:`~wmap.transforms.Gather`): the first
    source is in ``applied``, the others are checked equal to it by apply."""
    joined: tuple[Joined, ...] = ()
    """Targets made of several sources concatenated (:class:`~wmap.transforms.JoinRename`)."""

    def problems(self, limit: int | None = None, accept: Accept = NO_EXCEPTIONS) -> list[str]:
        """One line per problem that keeps the plan from being clean (ambiguity is a warning)."""
        lines: list[str] = []
        lines += [f"refused {r.key}: {r.reason} ({r.rule})" for r in self.refused]
        lines += [f"unused source key {k}" for k in self.unused if k not in accept.unused]
        lines += [f"missing target key {k}" for k in self.missing if k not in accept.missing]
        lines += [f"unrecoverable {u.key}: {u.reason}" for u in self.unrecoverable if u.key not in accept.unrecoverable]
        lines += [f"conflict: {c.target} written by {', '.join(c.sources)}" for c in self.conflicts]
        lines += [
            f"shape mismatch {m.source} {list(m.source_shape)} -> {m.target} {list(m.target_shape)}"
            f" ({' / '.join(m.rules)})"
            for m in self.shape_mismatches
        ]
        lines += [
            f"{u.source} -> {u.target}: no such key in the target model ({' / '.join(u.rules)})"
            for u in self.unknown_targets
        ]
        return lines if limit is None else lines[:limit]

    def is_clean(self, accept: Accept = NO_EXCEPTIONS) -> bool:
        return not self.problems(limit=1, accept=accept)

    def result(self, accept: Accept = NO_EXCEPTIONS) -> Result[MappingPlan, PlanNotClean]:
        """Success when clean (given the accepted exceptions), else a :class:`PlanNotClean`."""
        return Success(self) if self.is_clean(accept) else Failure(PlanNotClean(self))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with one list per category."""
        return {
            "clean": self.is_clean(),
            "applied": [
                {"source": a.source, "target": a.target, "shape": list(a.shape), "rules": list(a.rules)}
                | ({"tied_to": a.tied_to} if a.tied_to else {})
                for a in self.applied
            ],
            "skipped": [{"key": s.key, "reason": s.reason, "rule": s.rule} for s in self.skipped],
            "refused": [{"key": r.key, "reason": r.reason, "rule": r.rule} for r in self.refused],
            "unused": list(self.unused),
            "missing": list(self.missing),
            "conflicts": [{"target": c.target, "sources": list(c.sources)} for c in self.conflicts],
            "shape_mismatches": [
                {
                    "source": m.source,
                    "target": m.target,
                    "source_shape": list(m.source_shape),
                    "target_shape": list(m.target_shape),
                    "rules": list(m.rules),
                }
                for m in self.shape_mismatches
            ],
            "unknown_targets": [
                {"source": u.source, "target": u.target, "rules": list(u.rules)} for u in self.unknown_targets
            ],
            "ambiguous": [{"key": a.key, "rules": list(a.rules)} for a in self.ambiguous],
            "unrecoverable": [{"key": u.key, "reason": u.reason, "rule": u.rule} for u in self.unrecoverable],
            "made": [
                {"target": m.target, "shape": list(m.shape), "maker": repr(m.maker), "reason": m.reason}
                for m in self.made
            ],
            "joined": [
                {"target": j.target, "sources": list(j.sources), "joiner": repr(j.joiner), "shape": list(j.shape)}
                for j in self.joined
            ],
            "gathered": [
                {"target": g.target, "sources": list(g.sources), "rules": list(g.rules)} for g in self.gathered
            ],
        }
