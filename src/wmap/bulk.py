"""Planning a large layout in bulk: one pass of C-level string operations over all keys.

Keys of one shape (``encoder.layers.N.fc1.weight`` for every ``N``) share one
decision (see :mod:`wmap.compiled`). Here all keys are joined into one text;
a regex marks their free layer indices, so every key's shape and values come
out of two C-level passes; each distinct shape is decided once; the target
names are produced by splicing the values back into the target shapes, again
in one pass; checks against the target layout are list operations.

Bulk planning gives up — returning ``None`` so that the caller plans key by
key — whenever its result could differ in any way: keys containing its
separators, a shape whose decision is not a plain one-to-one rename in order
(ties, reordered wildcards), or any problem (unknown targets, routing, shape
mismatches, conflicts) that the key-by-key planner reports in detail.
"""

from __future__ import annotations

import operator
from itertools import chain, compress, filterfalse

from wmap.compiled import HOLE, CompiledPipeline, Template
from wmap.plan import AppliedTable, MappingPlan, RefusedKey, SkippedKey
from wmap.transforms import Layout, Outcome, Refused, Skipped

BULK_MIN_KEYS = 4096
"""Below this, key-by-key planning is as fast and the bulk set-up is not worth it."""


def bulk_plan(
    compiled: CompiledPipeline, source: Layout, target: Layout, *, min_keys: int = BULK_MIN_KEYS
) -> MappingPlan | None:
    """The plan of ``source``, or ``None`` where only key-by-key planning can make it."""
    keys = list(source)
    count = len(keys)
    if count < max(min_keys, 1) or not compiled.memoise:
        return None
    text = "\n." + "\n.".join(keys)
    if HOLE in text or text.count("\n") != count:
        return None
    parts = compiled.free_in_lines.split(text)  # text, value, text, value, ..., text (each value's dot dropped)
    values = parts[1::2]
    shapes_of_keys = ("." + HOLE).join(parts[0::2])[2:].split("\n.")

    lines: dict[str, str] = {}
    is_mapped: dict[str, bool] = {}
    outcomes: dict[str, Outcome] = {}
    rules: dict[str, tuple[str, ...]] = {}
    for shape, index in dict(zip(reversed(shapes_of_keys), range(count - 1, -1, -1), strict=True)).items():
        entry = compiled.entry(keys[index], target)
        if entry is None:
            return None
        if isinstance(entry, Template):
            if entry.holes is None:
                return None
            lines[shape], is_mapped[shape], rules[shape] = "." + entry.holes, True, entry.rules
        else:  # skipped, refused or unused: the line keeps the key's own values in place
            lines[shape], is_mapped[shape], outcomes[shape] = "." + shape, False, entry

    pieces = "\n".join(map(lines.__getitem__, shapes_of_keys)).split(HOLE)  # every hole follows its dot
    if len(pieces) != len(values) + 1:
        return None
    names = "".join(chain.from_iterable(zip(pieces, chain(values, ("",)), strict=True)))[1:].split("\n.")

    mapped = list(map(is_mapped.__getitem__, shapes_of_keys))
    sources = list(compress(keys, mapped))
    targets = list(compress(names, mapped))
    shapes = list(compress(source.values(), mapped))
    if list(map(target.get, targets)) != shapes or len(set(targets)) != len(targets):
        return None  # unknown targets, routing, mismatches or conflicts: planned key by key in detail

    skipped: list[SkippedKey] = []
    refused: list[RefusedKey] = []
    unused: list[str] = []
    for key, shape in compress(zip(keys, shapes_of_keys, strict=True), map(operator.not_, mapped)):
        kind = outcomes[shape]
        if isinstance(kind, Skipped):
            skipped.append(SkippedKey(key, kind.reason, kind.rule))
        elif isinstance(kind, Refused):
            refused.append(RefusedKey(key, kind.reason, kind.rule))
        else:
            unused.append(key)
    written = set(targets)
    # every target written is in the target layout and written once: equal sizes mean nothing is missing
    missing = () if len(written) == len(target) else tuple(filterfalse(written.__contains__, target))
    return MappingPlan(
        applied=AppliedTable(sources, targets, shapes, map(rules.__getitem__, compress(shapes_of_keys, mapped))),
        skipped=tuple(skipped),
        refused=tuple(refused),
        unused=tuple(unused),
        missing=missing,
        conflicts=(),
        shape_mismatches=(),
        unknown_targets=(),
    )
