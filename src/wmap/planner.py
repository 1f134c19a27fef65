"""The planner: (pipeline, source layout, target layout) -> :class:`~wmap.plan.MappingPlan`.

One pass over the source keys, each decided by ``pipeline.apply`` — the one
semantics of a transform, whatever its kind (a user's own included). Pure:
names and shapes only, no tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from wmap.kinds import RULE, refusal
from wmap.pipeline import groups
from wmap.plan import (
    Ambiguity,
    Applied,
    Conflict,
    Gathered,
    Joined,
    Made,
    MakeRule,
    MappingPlan,
    RefusedKey,
    ShapeMismatch,
    SkippedKey,
    UnknownTarget,
)
from wmap.transforms import Layout, Mapped, Part, Refused, Skipped, Transform
from wmap.values import shape_after


def make_plan(
    pipeline: Transform,
    source: Layout,
    target: Layout,
    *,
    lint: bool = True,
    kinds: Mapping[str, str] | None = None,
    target_kinds: Mapping[str, str] | None = None,
    made: Sequence[MakeRule] = (),
) -> MappingPlan:
    """Decide, for every source key, where it goes. Reads names and shapes (and kinds) only.

    Every source key lands in exactly one of applied, skipped, refused, unused,
    conflicts (as a later source), shape mismatches or unknown targets; every
    target key nothing writes is listed as missing. ``lint`` lists the renames of
    one group that can match the same key (:class:`~wmap.plan.Ambiguity`, a
    warning), found from the rules when their groups were built. Given the tensors' ``kinds`` (and the
    target's), a key whose kind the output cannot hold, or whose number kind differs from its
    target's, is refused (:mod:`wmap.kinds`). Sources a gather rule sends to one target (each of
    the target's shape) are :class:`~wmap.plan.Gathered`, not conflicts. ``made``: targets the family
    makes where no source writes them (a missing key matching a rule's suffix and shape is made, not
    missing).
    """
    applied: list[Applied] = []
    skipped: list[SkippedKey] = []
    refused: list[RefusedKey] = []
    unused: list[str] = []
    mismatches: list[ShapeMismatch] = []
    unknown: list[UnknownTarget] = []
    written: dict[str, str] = {}
    kind_refused: set[str] = set()
    clashes: dict[str, list[str]] = {}
    gathering: dict[str, tuple[tuple[str, ...], list[str]]] = {}  # target -> (rules, its sources)
    parts: dict[str, dict[int, str]] = {}
    part_rules: dict[str, tuple[Part, tuple[str, ...]]] = {}
    decide = pipeline.apply
    for key, shape in source.items():
        outcome = decide(key, target)
        if isinstance(outcome, Mapped):
            for item in outcome.targets:
                name = item.key
                if item.part is not None:  # joined once every part is known
                    parts.setdefault(name, {})[item.part.index] = key
                    part_rules[name] = (item.part, outcome.rules)
                    continue
                want = target.get(name)
                produced = shape if item.value is None else shape_after(item.value, shape)
                if want is None:
                    unknown.append(UnknownTarget(key, name, outcome.rules))
                elif name in written and item.gathered and name in gathering and want == produced:
                    gathering[name][1].append(key)
                elif name in written:
                    clashes.setdefault(name, [written[name]]).append(key)
                elif want != produced:
                    mismatches.append(ShapeMismatch(key, name, shape, want, outcome.rules))
                elif kinds is not None and (why := _kind_refusal(kinds, target_kinds, key, name)) is not None:
                    refused.append(RefusedKey(key, why, RULE))
                    kind_refused.add(name)
                else:
                    written[name] = key
                    if item.gathered:
                        gathering[name] = (outcome.rules, [key])
                    applied.append(Applied(key, name, produced, outcome.rules, item.tied_to, item.value))
        elif isinstance(outcome, Skipped):
            skipped.append(SkippedKey(key, outcome.reason, outcome.rule))
        elif isinstance(outcome, Refused):
            refused.append(RefusedKey(key, outcome.reason, outcome.rule))
        else:
            unused.append(key)
    joined: list[Joined] = []
    for name, held in parts.items():
        part, rules = part_rules[name]
        keys = [held.get(i) for i in range(part.count)]
        want = target.get(name)
        present = [k for k in keys if k is not None]
        if want is None:
            unknown += [UnknownTarget(k, name, rules) for k in present]
        elif len(present) < part.count or name in written:  # a part missing: the target is missing
            unused += present
        elif (produced := part.joiner.shape_of([source[k] for k in present])) != want:
            mismatches.append(ShapeMismatch(present[0], name, source[present[0]], want, rules))
        else:
            written[name] = present[0]
            joined.append(Joined(name, tuple(present), part.joiner, produced, rules))
    claimed = written.keys() | {m.target for m in mismatches} | kind_refused
    missing = [k for k in target if k not in claimed]
    making = _made(made, missing, target)
    made_targets = {m.target for m in making}
    return MappingPlan(
        applied=tuple(applied),
        skipped=tuple(skipped),
        refused=tuple(refused),
        unused=tuple(unused),
        missing=tuple(k for k in missing if k not in made_targets),
        conflicts=tuple(Conflict(t, tuple(s)) for t, s in clashes.items()),
        shape_mismatches=tuple(mismatches),
        unknown_targets=tuple(unknown),
        ambiguous=ambiguities(pipeline) if lint else (),
        made=making,
        gathered=tuple(Gathered(t, tuple(sources), rules) for t, (rules, sources) in gathering.items()),
        joined=tuple(joined),
    )


def _made(rules: Sequence[MakeRule], missing: Sequence[str], target: Layout) -> tuple[Made, ...]:
    """The missing targets the family's rules make: each rule, the missing keys ending in its suffix
    whose shape is what it makes."""
    return tuple(
        Made(key, rule.maker.shape, rule.maker, rule.reason)
        for rule in rules
        for key in missing
        if rule.names(key) and target[key] == rule.maker.shape
    )


def _kind_refusal(
    kinds: Mapping[str, str], target_kinds: Mapping[str, str] | None, key: str, target: str
) -> str | None:
    kind = kinds.get(key)
    return None if kind is None else refusal(kind, None if target_kinds is None else target_kinds.get(target), target)


def ambiguities(pipeline: Transform) -> tuple[Ambiguity, ...]:
    """The overlapping renames of every group in ``pipeline``, with an example key under its scope."""
    return tuple(
        Ambiguity(f"{prefix}.{found.example}" if prefix else found.example, found.rules)
        for prefix, group in groups(pipeline)
        for found in group.overlaps
    )


def reverse_plan(
    reversed_pipeline: Transform,
    converted: Layout,
    original: Layout,
    *,
    kinds: Mapping[str, str] | None = None,
    expected_kinds: Mapping[str, str] | None = None,
    made: Sequence[MakeRule] = (),
) -> MappingPlan:
    """The plan of a reverse conversion (a converted model's layout back to the original's): a plan
    like any other, whose missing keys that lie under a forward skip or refusal are listed as
    ``unrecoverable`` with the forward reason (see :mod:`wmap.reverse`). ``expected_kinds``: the
    kinds the converted model holds, by converted key (an int8 tensor where it holds floats is refused).
    ``made``: what the original holds that the way back makes (fairseq's training-only ``mask_emb``)."""
    from wmap.reverse import unrecoverable_rule

    target_kinds = None
    if expected_kinds is not None:  # by the original's name, as the same rules name it
        target_kinds = {}
        for key, kind in expected_kinds.items():
            outcome = reversed_pipeline.apply(key, original)
            if isinstance(outcome, Mapped):
                target_kinds.update({item.key: kind for item in outcome.targets})
    plan = make_plan(
        reversed_pipeline, converted, original, lint=False, kinds=kinds, target_kinds=target_kinds, made=made
    )
    gone: list[SkippedKey] = []
    missing: list[str] = []
    for key in plan.missing:
        found = unrecoverable_rule(reversed_pipeline, key)
        if found is None:
            missing.append(key)
        else:
            gone.append(SkippedKey(key, found.reason, repr(found)))
    return attrs.evolve(plan, missing=tuple(missing), unrecoverable=tuple(gone))
