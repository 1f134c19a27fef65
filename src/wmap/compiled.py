"""A pipeline compiled for planning many keys: decisions memoised per key *shape*.

Checkpoint keys repeat one shape per layer (``encoder.layers.N.fc1.weight``).
A numeric segment whose value no rule names literally (on either side, nor in
a leaf set) is *free*: every rule treats ``5`` and ``7`` there alike, so the
decision for one key of a shape holds for all of them, with the free values
substituted. The pipeline is therefore evaluated once per shape; each further
key costs one regex split, a dict lookup and a string format.

Stages that depend on the target layout (weight-norm routing) cannot be
memoised that way; trailing ones are applied per key after the memoised core,
and a pipeline with such a stage anywhere else is evaluated key by key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs

from wmap.pipeline import Seq
from wmap.transforms import NO_MATCH, Layout, Mapped, Outcome, Transform

Decision = tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]] | Outcome
"""Mapped keys as ``((target, tied_to), ...), rules`` (cheap to build), or any other outcome."""


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@attrs.frozen
class Template:
    """Target keys with the free values of the source key as ``{0}``, ``{1}`` ... placeholders."""

    formats: tuple[tuple[str, str | None], ...]
    rules: tuple[str, ...]
    holes: str | None = None
    """For bulk planning: the one untied target with ``HOLE`` where the source's free values go,
    in the source's order, each once; ``None`` where the template is not of that form."""
    single: str | None = attrs.field(init=False)
    """The one untied target's format, for the common case (filled without a generator)."""

    def __attrs_post_init__(self) -> None:
        only = self.formats[0] if len(self.formats) == 1 and self.formats[0][1] is None else None
        object.__setattr__(self, "single", only[0] if only else None)

    def fill(self, values: Sequence[str]) -> tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]]:
        if self.single is not None:
            return ((self.single.format(*values), None),), self.rules
        return (
            tuple((t.format(*values), None if tied is None else tied.format(*values)) for t, tied in self.formats),
            self.rules,
        )


def _template_key(key: str, positions: dict[str, int]) -> str:
    return ".".join(
        "{" + str(positions[segment]) + "}" if segment in positions else _escape(segment) for segment in key.split(".")
    )


HOLE = "\x00"
"""Marks a free value's place in a key shape (keys containing it are planned key by key)."""


def _holes(outcome: Mapped, positions: dict[str, int]) -> str | None:
    if len(outcome.targets) != 1 or outcome.targets[0].tied_to is not None:
        return None
    segments = outcome.targets[0].key.split(".")
    order = [positions[s] for s in segments if s in positions]
    if order != list(range(len(positions))) or any(HOLE in s or "\n" in s for s in segments):
        return None
    return ".".join(HOLE if s in positions else s for s in segments)


def _split_tail(pipeline: Transform) -> tuple[Transform, tuple[Transform, ...]]:
    """A ``Seq``'s trailing target-dependent stages, and the rest."""
    if not isinstance(pipeline, Seq):
        return pipeline, ()
    stages = list(pipeline.stages)
    tail: list[Transform] = []
    while len(stages) > 1 and stages[-1].target_dependent():
        tail.insert(0, stages.pop())
    return (stages[0] if len(stages) == 1 else Seq(tuple(stages))), tuple(tail)


KEY_END = r"(?:\.|$)"
LINE_END = r"(?:[.\n]|$)"


def _excluded(literals: frozenset[str], end: str) -> str:
    """A negative lookahead for the numeric segments the rules name literally."""
    digits = sorted((s for s in literals if s.isascii() and s.isdigit()), key=len, reverse=True)
    return "(?!(?:" + "|".join(map(re.escape, digits)) + ")" + end + ")" if digits else ""


def _free_segment_pattern(literals: frozenset[str]) -> re.Pattern[str]:
    """Whole numeric segments of a key whose value no rule names (captured)."""
    return re.compile(r"(?<![^.])" + _excluded(literals, KEY_END) + r"([0-9]+)(?![^.])")


def _free_segment_in_lines_pattern(literals: frozenset[str]) -> re.Pattern[str]:
    """The same in keys joined as ``"\\n." + "\\n.".join(keys)`` (every segment then follows a dot).

    Starting the pattern with a literal dot lets the regex engine skip ahead
    to dots, several times faster than a lookbehind over a large text.
    """
    return re.compile(r"\." + _excluded(literals, LINE_END) + r"([0-9]+)(?=[.\n]|$)")


class CompiledPipeline:
    """``decide(key, target)`` with the same answers as ``pipeline.apply``, memoised per key shape."""

    def __init__(self, pipeline: Transform) -> None:
        self.pipeline = pipeline
        self.core, self.tail = _split_tail(pipeline)
        self.memoise = not self.core.target_dependent()
        self.free = _free_segment_pattern(pipeline.literals())
        self.free_in_lines = _free_segment_in_lines_pattern(pipeline.literals())
        self.cache: dict[tuple[str, ...], Template | Outcome] = {}
        self.lint_memo: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] | None = (
            None if pipeline.target_dependent() else {}
        )

    def lint(self, key: str, target: Layout) -> tuple[tuple[str, ...], ...]:
        """``pipeline.lint(key, target)``, memoised per key shape when no stage depends on the target
        (which rules match a key does not depend on its free values)."""
        if self.lint_memo is None:
            return self.pipeline.lint(key, target)
        shape = tuple(self.free.split(key)[0::2])
        found = self.lint_memo.get(shape)
        if found is None:
            found = self.lint_memo[shape] = self.pipeline.lint(key, target)
        return found

    def entry(self, key: str, target: Layout) -> Template | Outcome | None:
        """The memo entry for ``key``'s shape (learnt from ``key`` if new); ``None`` if not memoisable."""
        if not self.memoise:
            return None
        parts = self.free.split(key)
        shape = tuple(parts[0::2])
        found = self.cache.get(shape)
        return found if found is not None else self._learn(key, parts[1::2], shape, target)

    def decide(self, key: str, target: Layout) -> Decision:
        """The decision for ``key``, as :data:`Decision`."""
        if not self.memoise:
            return self._as_decision(self.pipeline.apply(key, target))
        parts = self.free.split(key)
        values = parts[1::2]
        shape = tuple(parts[0::2])
        entry = self.cache.get(shape)
        if entry is None:
            entry = self._learn(key, values, shape, target)
            if entry is None:  # a shape whose free values repeat: decided key by key
                return self.route(self._as_decision(self.core.apply(key, target)), target)
        if isinstance(entry, Template):
            return self.route(entry.fill(values), target)
        return entry

    def _learn(self, key: str, values: list[str], shape: tuple[str, ...], target: Layout) -> Template | Outcome | None:
        outcome = self.core.apply(key, target)
        if not isinstance(outcome, Mapped):
            self.cache[shape] = outcome
            return outcome
        if len(set(values)) != len(values):
            return None
        positions = {value: index for index, value in enumerate(values)}
        template = Template(
            tuple(
                (_template_key(t.key, positions), None if t.tied_to is None else _template_key(t.tied_to, positions))
                for t in outcome.targets
            ),
            outcome.rules,
            _holes(outcome, positions),
        )
        self.cache[shape] = template
        return template

    @staticmethod
    def _as_decision(outcome: Outcome) -> Decision:
        if isinstance(outcome, Mapped):
            return tuple((t.key, t.tied_to) for t in outcome.targets), outcome.rules
        return outcome

    def route(self, decision: Decision, target: Layout) -> Decision:
        """Apply the trailing target-dependent stages to every target key."""
        if not self.tail or not isinstance(decision, tuple):
            return decision
        targets, rules = decision
        routed: list[tuple[str, str | None]] = []
        for key, tied in targets:
            if key in target:  # routing leaves keys the target already has alone
                routed.append((key, tied))
                continue
            current = [(key, tied)]
            for stage in self.tail:
                produced: list[tuple[str, str | None]] = []
                for item, item_tied in current:
                    outcome = stage.apply(item, target)
                    if outcome is NO_MATCH or not isinstance(outcome, Mapped):
                        return outcome
                    rules = rules + tuple(r for r in outcome.rules if r not in rules)
                    produced.extend((t.key, t.tied_to or item_tied) for t in outcome.targets)
                current = produced
            routed.extend(current)
        return tuple(routed), rules
