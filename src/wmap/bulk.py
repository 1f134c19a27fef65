"""Planning a large layout in bulk: one pass over all keys, each distinct key shape decided once.

Keys of one shape (``encoder.layers.N.fc1.weight`` for every ``N``) share one
decision (see :mod:`wmap.compiled`). The per-key work is: find the key's shape
and free values, look the shape's decision up, splice the values into the
target shape, check the target's name and tensor shape against the target
layout. Two kernels do it and give the same result (property-tested):

- :mod:`wmap._bulk_native`, a small C extension (built at install when a C
  compiler is there; optional): a scan of each key's bytes, a C hash table of
  shapes, and a lookup of the spliced name among the target layout's own keys
  (in their order first), so that no Python object is made per key;
- the pure-Python kernel below, when the extension is not built: all keys
  joined into one text, regex-split and spliced in a few C-level string passes.

Bulk planning gives up — returning ``None`` so that the caller plans key by
key — whenever its result could differ in any way: keys containing its
separators, a shape whose decision is not a plain one-to-one rename in order
(ties, reordered wildcards), or any problem (unknown targets, routing, shape
mismatches, conflicts) that the key-by-key planner reports in detail.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import chain, compress, filterfalse
from typing import Any

import attrs

from wmap.compiled import HOLE, CompiledPipeline, Template
from wmap.plan import AppliedTable, MappingPlan, RefusedKey, SkippedKey, file_unmapped
from wmap.transforms import Layout, Outcome, Shape

_native_plan_keys: Callable[..., Any] | None
try:
    from wmap._bulk_native import plan_keys as _native_plan_keys
except ImportError:  # not built (no C compiler at install): the pure-Python kernel does the same
    _native_plan_keys = None

NATIVE = _native_plan_keys is not None
"""Whether the C kernel is built and used by default."""

BULK_MIN_KEYS = 4096
"""Below this, key-by-key planning is as fast as the pure-Python kernel and its set-up is not worth it."""

NATIVE_MIN_KEYS = 64
"""Below this, the C kernel's gain is lost in the noise of a plan's set-up."""


@attrs.frozen
class _Learner:
    """Each key shape's decision, learnt from its first key (for both kernels), and the holes
    templates learnt.

    Keys of one shape never share a target: the template holds all their free
    values, in order. Keys of two shapes can only if both shapes have the same
    template: where two templates differ, one has a literal segment, and a
    numeric literal is one the rules name, which is never a free value (see
    :mod:`wmap.compiled`). So conflicts need looking for only then.
    """

    compiled: CompiledPipeline
    target: Layout
    lint: bool
    """Whether an ambiguous shape makes bulk planning give up (see :func:`bulk_plan`)."""
    seen: list[str] = attrs.field(factory=list)

    def learn(self, key: str) -> Template | Outcome | None:
        """The memo entry of ``key``'s shape; ``None`` where bulk planning must give up (a shape
        decided key by key, a target that is not one plain rename in order, an ambiguity)."""
        entry = self.compiled.entry(key, self.target)
        if entry is None or (self.lint and self.compiled.lint(key, self.target)):
            return None
        if isinstance(entry, Template):
            if entry.holes is None:
                return None
            self.seen.append(entry.holes)
        return entry

    def __call__(self, key: str) -> tuple[str | None, object] | None:
        """The C kernel's ``learn``: ``(holes, rules)``, ``(None, outcome)`` or ``None``."""
        entry = self.learn(key)
        if entry is None:
            return None
        return (entry.holes, entry.rules) if isinstance(entry, Template) else (None, entry)

    def may_collide(self) -> bool:
        return len(set(self.seen)) != len(self.seen)


@attrs.frozen
class _Columns:
    """The kernels' common result: mapped keys as columns, the rest with their outcomes, in key order."""

    sources: list[str]
    targets: list[str]
    shapes: list[Shape]
    rules: list[tuple[str, ...]]
    other_keys: list[str]
    other_outcomes: list[Outcome]


def bulk_plan(
    compiled: CompiledPipeline,
    source: Layout,
    target: Layout,
    *,
    min_keys: int | None = None,
    native: bool = NATIVE,
    lint: bool = False,
) -> MappingPlan | None:
    """The plan of ``source``, or ``None`` where only key-by-key planning can make it.

    ``native=False`` uses the pure-Python kernel even where the C one is built.
    ``lint``: gives up as well if any key shape is ambiguous, so that a bulk
    plan has no ambiguities to list."""
    if not compiled.memoise:
        return None
    use_native = native and _native_plan_keys is not None
    if len(source) < max(1, (NATIVE_MIN_KEYS if use_native else BULK_MIN_KEYS) if min_keys is None else min_keys):
        return None
    learner = _Learner(compiled, target, lint)
    columns = (_native_columns if use_native else _python_columns)(learner, source)
    if columns is None:
        return None
    if learner.may_collide() and len(set(columns.targets)) != len(columns.targets):
        return None  # conflicts: planned key by key in detail
    return _plan_of(columns, target)


def _native_columns(learner: _Learner, source: Layout) -> _Columns | None:
    assert _native_plan_keys is not None
    literals = tuple(sorted(s for s in learner.compiled.pipeline.literals() if s.isascii() and s.isdigit()))
    found = _native_plan_keys(
        source if type(source) is dict else dict(source),
        literals,
        learner,
        learner.target if type(learner.target) is dict else dict(learner.target),
    )
    return None if found is None else _Columns(*found)


def _python_columns(learner: _Learner, source: Layout) -> _Columns | None:
    keys = list(source)
    count = len(keys)
    text = "\n." + "\n.".join(keys)
    if HOLE in text or text.count("\n") != count:
        return None
    parts = learner.compiled.free_in_lines.split(text)  # text, value, text, value, ..., text (each value's dot dropped)
    values = parts[1::2]
    shapes_of_keys = ("." + HOLE).join(parts[0::2])[2:].split("\n.")

    lines: dict[str, str] = {}
    is_mapped: dict[str, bool] = {}
    outcomes: dict[str, Outcome] = {}
    rules: dict[str, tuple[str, ...]] = {}
    for shape, index in dict(zip(reversed(shapes_of_keys), range(count - 1, -1, -1), strict=True)).items():
        entry = learner.learn(keys[index])
        if entry is None:
            return None
        if isinstance(entry, Template):
            assert entry.holes is not None  # learn gives up on templates without holes
            lines[shape], is_mapped[shape], rules[shape] = "." + entry.holes, True, entry.rules
        else:  # skipped, refused or unused: the line keeps the key's own values in place
            lines[shape], is_mapped[shape], outcomes[shape] = "." + shape, False, entry

    pieces = "\n".join(map(lines.__getitem__, shapes_of_keys)).split(HOLE)  # every hole follows its dot
    if len(pieces) != len(values) + 1:
        return None
    names = "".join(chain.from_iterable(zip(pieces, chain(values, ("",)), strict=True)))[1:].split("\n.")

    mapped = list(map(is_mapped.__getitem__, shapes_of_keys))
    targets = list(compress(names, mapped))
    shapes = list(compress(source.values(), mapped))
    if list(map(learner.target.get, targets)) != shapes:
        return None  # unknown targets, routing or mismatches: planned key by key in detail
    others = list(map(operator.not_, mapped))
    return _Columns(
        list(compress(keys, mapped)),
        targets,
        shapes,
        list(map(rules.__getitem__, compress(shapes_of_keys, mapped))),
        list(compress(keys, others)),
        list(map(outcomes.__getitem__, compress(shapes_of_keys, others))),
    )


def _plan_of(columns: _Columns, target: Layout) -> MappingPlan:
    """The plan, given that every target is in the target layout, of the right shape, and written once."""
    skipped: list[SkippedKey] = []
    refused: list[RefusedKey] = []
    unused: list[str] = []
    for key, outcome in zip(columns.other_keys, columns.other_outcomes, strict=True):
        file_unmapped(key, outcome, skipped, refused, unused)
    # every target written is in the target layout and written once: equal sizes mean nothing is missing
    missing = (
        () if len(columns.targets) == len(target) else tuple(filterfalse(set(columns.targets).__contains__, target))
    )
    return MappingPlan(
        applied=AppliedTable.adopt(columns.sources, columns.targets, columns.shapes, columns.rules),
        skipped=tuple(skipped),
        refused=tuple(refused),
        unused=tuple(unused),
        missing=missing,
        conflicts=(),
        shape_mismatches=(),
        unknown_targets=(),
    )
