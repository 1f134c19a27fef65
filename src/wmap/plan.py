"""The planner: (pipeline, source layout, target layout) -> :class:`MappingPlan`. Pure; no tensors."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, overload

import attrs
from returns.result import Failure, Result, Success

from wmap.compiled import CompiledPipeline
from wmap.errors import PlanNotClean
from wmap.transforms import Layout, Refused, Shape, Skipped, Transform


@attrs.frozen
class Applied:
    """``source`` is written to ``target`` (shape ``shape``) by ``rules``."""

    source: str
    target: str
    shape: Shape
    rules: tuple[str, ...]
    tied_to: str | None = None


class AppliedTable(Sequence[Applied]):
    """The applied entries of a plan, stored as columns.

    A plan of a million keys holds five lists instead of a million records;
    :class:`Applied` values are made when an entry is read. It is an immutable
    sequence (its lists are private and never changed), equal to another
    sequence with the same entries.
    """

    __slots__ = ("_columns", "_tied")

    def __init__(
        self,
        sources: Iterable[str] = (),
        targets: Iterable[str] = (),
        shapes: Iterable[Shape] = (),
        rules: Iterable[tuple[str, ...]] = (),
        tied_to: Iterable[str | None] | None = None,
    ) -> None:
        tied = None if tied_to is None else list(tied_to)
        self._set((list(sources), list(targets), list(shapes), list(rules)), tied)

    def _set(
        self, columns: tuple[list[str], list[str], list[Shape], list[tuple[str, ...]]], tied: list[str | None] | None
    ) -> None:
        if any(len(column) != len(columns[0]) for column in columns) or (
            tied is not None and len(tied) != len(columns[0])
        ):
            raise ValueError("applied columns differ in length")
        self._columns = columns
        self._tied = None if tied is None or not any(tied) else tied  # None: no entry is tied

    @classmethod
    def adopt(
        cls, sources: list[str], targets: list[str], shapes: list[Shape], rules: list[tuple[str, ...]]
    ) -> AppliedTable:
        """A table over these lists, without copying them: the caller hands them over and keeps no
        reference (a million-key plan then costs no second pass over its keys)."""
        table = cls.__new__(cls)
        table._set((sources, targets, shapes, rules), None)
        return table

    @classmethod
    def of(cls, entries: Iterable[Applied]) -> AppliedTable:
        items = list(entries)
        return cls(
            (a.source for a in items),
            (a.target for a in items),
            (a.shape for a in items),
            (a.rules for a in items),
            (a.tied_to for a in items),
        )

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._columns[0])

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._columns[1])

    def _tied_column(self) -> Iterable[str | None]:
        return repeat(None, len(self)) if self._tied is None else self._tied

    def __len__(self) -> int:
        return len(self._columns[0])

    @overload
    def __getitem__(self, index: int) -> Applied: ...

    @overload
    def __getitem__(self, index: slice) -> AppliedTable: ...

    def __getitem__(self, index: int | slice) -> Applied | AppliedTable:
        sources, targets, shapes, rules = self._columns
        if isinstance(index, slice):
            tied = None if self._tied is None else self._tied[index]
            return AppliedTable(sources[index], targets[index], shapes[index], rules[index], tied)
        return Applied(
            sources[index],
            targets[index],
            shapes[index],
            rules[index],
            None if self._tied is None else self._tied[index],
        )

    def __iter__(self) -> Iterator[Applied]:
        return map(Applied, *self._columns, self._tied_column())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AppliedTable):
            return self._columns == other._columns and self._tied == other._tied
        return isinstance(other, Sequence) and list(self) == list(other)

    def __hash__(self) -> int:
        sources, targets, shapes, rules = self._columns
        tied = None if self._tied is None else tuple(self._tied)
        return hash((tuple(sources), tuple(targets), tuple(shapes), tuple(rules), tied))

    def __repr__(self) -> str:
        return f"AppliedTable({len(self)} entries)"


def _applied_table(value: Iterable[Applied]) -> AppliedTable:
    return value if isinstance(value, AppliedTable) else AppliedTable.of(value)


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
    """More than one rule of a first-match group matches ``key``; the first listed wins."""

    key: str
    rules: tuple[str, ...]


@attrs.frozen
class Accept:
    """Named exceptions a caller accepts in a plan that is otherwise not clean."""

    unused: frozenset[str] = frozenset()
    missing: frozenset[str] = frozenset()


NO_EXCEPTIONS = Accept()
"""Accept nothing: the plan must be clean."""


@attrs.frozen
class MappingPlan:
    """What a conversion will do, decided from names and shapes only."""

    applied: AppliedTable = attrs.field(converter=_applied_table)
    skipped: tuple[SkippedKey, ...]
    refused: tuple[RefusedKey, ...]
    unused: tuple[str, ...]
    missing: tuple[str, ...]
    conflicts: tuple[Conflict, ...]
    shape_mismatches: tuple[ShapeMismatch, ...]
    unknown_targets: tuple[UnknownTarget, ...]
    ambiguous: tuple[Ambiguity, ...] = ()

    def problems(self, limit: int | None = None, accept: Accept = NO_EXCEPTIONS) -> list[str]:
        """One line per problem that keeps the plan from being clean (ambiguity is a warning)."""
        lines: list[str] = []
        lines += [f"refused {r.key}: {r.reason} ({r.rule})" for r in self.refused]
        lines += [f"unused source key {k}" for k in self.unused if k not in accept.unused]
        lines += [f"missing target key {k}" for k in self.missing if k not in accept.missing]
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
        with no_cyclic_gc():  # a dict per key: collection passes only cost time
            return self._json()

    def _json(self) -> dict[str, Any]:
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
        }


def make_plan(
    pipeline: Transform,
    source: Layout,
    target: Layout,
    *,
    lint: bool = True,
    bulk_min_keys: int | None = None,
) -> MappingPlan:
    """Decide, for every source key, where it goes. Reads names and shapes only.

    Every source key lands in exactly one of applied, skipped, refused, unused,
    conflicts (as a later source), shape mismatches or unknown targets; every
    target key nothing writes is listed as missing. Large layouts are planned
    in bulk (:mod:`wmap.bulk`) when that gives the same plan; ``bulk_min_keys``
    overrides the size from which it is tried. ``lint`` lists keys that more
    than one writing rule matches (:class:`Ambiguity`, a warning).
    """
    from wmap.bulk import bulk_plan  # bulk builds plan values: imported late

    compiled = CompiledPipeline(pipeline)
    with no_cyclic_gc():  # millions of small acyclic records: collection passes only cost time
        plan = bulk_plan(compiled, source, target, min_keys=bulk_min_keys, lint=lint)
        if plan is None:
            plan = _plan_key_by_key(compiled, source, target)
            if lint:
                plan = attrs.evolve(plan, ambiguous=tuple(_ambiguities(compiled, source, target)))
    return plan


def file_unmapped(
    key: str, outcome: object, skipped: list[SkippedKey], refused: list[RefusedKey], unused: list[str]
) -> None:
    """File a key no rule writes (``outcome`` is not a write): skipped or refused with the rule's
    reason, else unused."""
    if isinstance(outcome, Skipped):
        skipped.append(SkippedKey(key, outcome.reason, outcome.rule))
    elif isinstance(outcome, Refused):
        refused.append(RefusedKey(key, outcome.reason, outcome.rule))
    else:
        unused.append(key)


def _plan_key_by_key(compiled: CompiledPipeline, source: Layout, target: Layout) -> MappingPlan:
    applied: list[Applied] = []
    skipped: list[SkippedKey] = []
    refused: list[RefusedKey] = []
    unused: list[str] = []
    mismatches: list[ShapeMismatch] = []
    unknown: list[UnknownTarget] = []
    written: dict[str, str] = {}
    clashes: dict[str, list[str]] = {}
    decide = compiled.decide
    for key, shape in source.items():
        outcome = decide(key, target)
        if type(outcome) is tuple:
            targets, rules = outcome
            for name, tied_to in targets:
                want = target.get(name)
                if want is None:
                    unknown.append(UnknownTarget(key, name, rules))
                elif name in written:
                    clashes.setdefault(name, [written[name]]).append(key)
                elif want != shape:
                    mismatches.append(ShapeMismatch(key, name, shape, want, rules))
                else:
                    written[name] = key
                    applied.append(Applied(key, name, shape, rules, tied_to))
        else:
            file_unmapped(key, outcome, skipped, refused, unused)
    claimed = written.keys() | {m.target for m in mismatches}
    return MappingPlan(
        applied=AppliedTable.of(applied),
        skipped=tuple(skipped),
        refused=tuple(refused),
        unused=tuple(unused),
        missing=tuple(k for k in target if k not in claimed),
        conflicts=tuple(Conflict(t, tuple(s)) for t, s in clashes.items()),
        shape_mismatches=tuple(mismatches),
        unknown_targets=tuple(unknown),
    )


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Cyclic GC off for a block that makes many small acyclic objects (plans, their JSON, their
    rendering): its collection passes would only cost time, growing with the objects alive."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _ambiguities(compiled: CompiledPipeline, source: Iterable[str], target: Layout) -> Iterable[Ambiguity]:
    for key in source:
        for rules in compiled.lint(key, target):
            yield Ambiguity(key, rules)
