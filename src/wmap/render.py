"""Render a :class:`MappingPlan` for people: a rich table with layer indices collapsed."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from wmap.config_fields import IgnoredField
from wmap.plan import MappingPlan

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` safe to show on a terminal: control characters (escape sequences among them), lone
    surrogates and bidirectional overrides are shown as ``\\x1b``-style escapes, never sent."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


INDEX = re.compile(r"(?<![^.])(0|[1-9][0-9]*)(?![^.])")
"""A whole key segment that is a layer index: ASCII digits in canonical form (so ``int`` round-trips it)."""


def _ranges(values: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0..2,5``."""
    runs: list[tuple[int, int]] = []
    for value in sorted(set(values)):
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return ",".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


Template = tuple[tuple[str | None, ...], ...]
"""Per key column, its text pieces with ``None`` where a numeric index stood."""


def collapse(rows: Sequence[tuple[str, ...]], keys: int | None = None) -> list[tuple[str, ...]]:
    """Merge rows that differ only in numeric key segments into one row with ``{0..11}``.

    The first ``keys`` columns (all by default) are dotted keys whose numeric
    segments are replaced by the set of indices they take across the merged
    rows, per position; a later column keeps its value if all merged rows
    agree, else reads ``(various)``.
    """
    width = len(rows[0]) if rows else 0
    keys = width if keys is None else keys
    groups: dict[Template, list[tuple[list[int], tuple[str, ...]]]] = {}
    for row in rows:
        template: list[tuple[str | None, ...]] = []
        indices: list[int] = []
        for column in row[:keys]:
            pieces = INDEX.split(column)  # text, index, text, ..., text: one regex pass per column
            template.append(tuple(None if i % 2 else piece for i, piece in enumerate(pieces)))
            indices.extend(map(int, pieces[1::2]))
        groups.setdefault(tuple(template), []).append((indices, row[keys:]))
    out: list[tuple[str, ...]] = []
    for template_key, members in _complete_grids(groups):
        first = members[0][0]
        fills = iter(
            "{" + _ranges(m[0][pos] for m in members) + "}"
            if len({m[0][pos] for m in members}) > 1
            else str(first[pos])
            for pos in range(len(first))
        )
        merged = tuple("".join(next(fills) if s is None else s for s in column) for column in template_key)
        extras = tuple(
            members[0][1][i] if len({m[1][i] for m in members}) == 1 else "(various)" for i in range(width - keys)
        )
        out.append(merged + extras)
    return out


def _complete_grids(
    groups: dict[Template, list[tuple[list[int], tuple[str, ...]]]],
) -> Iterable[tuple[Template, list[tuple[list[int], tuple[str, ...]]]]]:
    """Yield groups whose index tuples form a full grid (so ``{0..2}.{0,2}`` means all 6);
    a group that does not is split on its first varying index until each part does."""
    pending = list(groups.items())
    while pending:
        template, members = pending.pop(0)
        distinct = {tuple(m[0]) for m in members}
        positions = len(members[0][0])
        # Positions that always carry the same index (source and target layer) are one dimension.
        dimensions = {tuple(m[0][pos] for m in members) for pos in range(positions)}
        size = 1
        for values in dimensions:
            size *= len(set(values))
        if size == len(distinct) or positions < 2:
            yield template, members
            continue
        split_at = next(pos for pos in range(positions) if len({m[0][pos] for m in members}) > 1)
        parts: dict[int, list[tuple[list[int], tuple[str, ...]]]] = {}
        for member in members:
            parts.setdefault(member[0][split_at], []).append(member)
        pending[:0] = [(template, part) for part in parts.values()]


def plan_renderable(plan: MappingPlan, title: str = "mapping plan") -> Group:
    """The plan as rich tables: one per non-empty category, then a summary line."""
    return Group(*plan_tables(plan).renderables, summary_line(title, *plan_summary(plan)))


def plan_tables(plan: MappingPlan) -> Group:
    """One rich table per non-empty category of the plan."""
    parts: list[Table] = []

    def table(name: str, style: str, headers: Sequence[str], rows: Sequence[tuple[str, ...]], keys: int = 1) -> None:
        if not rows:
            return
        t = Table(title=f"{name} ({len(rows)} keys)", title_style=style, title_justify="left")
        for header in headers:
            t.add_column(header, overflow="fold")
        for row in collapse(rows, keys):
            t.add_row(*(Text(visible(cell)) for cell in row))  # names from a file are text, never markup
        parts.append(t)

    table(
        "applied",
        "green",
        ("source", "target", "shape", "rule"),
        [(a.source, a.target, "x".join(map(str, a.shape)) or "scalar", " then ".join(a.rules)) for a in plan.applied],
        keys=2,
    )
    table(
        "made from the config (no source)",
        "green",
        ("target", "shape", "made", "reason"),
        [(m.target, "x".join(map(str, m.shape)), repr(m.maker), m.reason) for m in plan.made],
    )
    table(
        "joined: parts concatenated into one target",
        "green",
        ("target", "parts", "joined by", "shape"),
        [(j.target, ", ".join(j.sources), repr(j.joiner), "x".join(map(str, j.shape))) for j in plan.joined],
    )
    table(
        "gathered: copies held once, checked equal when applied",
        "green",
        ("target", "sources", "rule"),
        [(g.target, ", ".join(g.sources), " then ".join(g.rules)) for g in plan.gathered],
    )
    table("skipped", "cyan", ("source", "reason", "rule"), [(s.key, s.reason, s.rule) for s in plan.skipped])
    table("refused", "bold red", ("source", "reason", "rule"), [(r.key, r.reason, r.rule) for r in plan.refused])
    table(
        "unrecoverable: the original holds them; accept each by name to export without it",
        "bold red",
        ("original key", "reason", "rule"),
        [(u.key, u.reason, u.rule) for u in plan.unrecoverable],
    )
    table("unused", "red", ("source key no rule matched",), [(k,) for k in plan.unused])
    table("missing", "red", ("target key nothing writes",), [(k,) for k in plan.missing])
    table("conflicts", "red", ("target", "sources"), [(c.target, ", ".join(c.sources)) for c in plan.conflicts], 2)
    table(
        "shape mismatches",
        "red",
        ("source", "target", "source shape", "target shape"),
        [(m.source, m.target, str(list(m.source_shape)), str(list(m.target_shape))) for m in plan.shape_mismatches],
        keys=2,
    )
    table(
        "unknown targets",
        "red",
        ("source", "target (not in model)", "rule"),
        [(u.source, u.target, " then ".join(u.rules)) for u in plan.unknown_targets],
        keys=2,
    )
    table(
        "ambiguous (first rule wins)",
        "yellow",
        ("key", "rules"),
        [(a.key, " | ".join(a.rules)) for a in plan.ambiguous],
    )
    return Group(*parts)


def plan_summary(plan: MappingPlan) -> tuple[str, str, str]:
    """The summary line's verdict, its style and the counts: all of it but the title (the source's name)."""
    verdict, style = ("clean", "green") if plan.is_clean() else ("NOT clean", "bold red")
    return (
        verdict,
        style,
        "".join(
            (
                f" — {len(plan.applied)} applied, {len(plan.skipped)} skipped, "
                f"{len(plan.refused)} refused, {len(plan.unused)} unused, {len(plan.missing)} missing, "
                f"{len(plan.conflicts)} conflicts, {len(plan.shape_mismatches)} shape mismatches, "
                f"{len(plan.unknown_targets)} unknown targets, {len(plan.ambiguous)} ambiguous",
                f", {len(plan.unrecoverable)} unrecoverable" if plan.unrecoverable else "",
                f", {len(plan.made)} made" if plan.made else "",
                f", {len(plan.gathered)} gathered" if plan.gathered else "",
                f", {len(plan.joined)} joined" if plan.joined else "",
            )
        ),
    )


def summary_line(title: str, verdict: str, style: str, counts: str) -> Text:
    """``title: verdict — counts`` (:func:`plan_summary`), the title shown as text, never markup."""
    return Text.assemble(f"{visible(title)}: ", (verdict, style), counts)


def print_plan(plan: MappingPlan, console: Console | None = None, title: str = "mapping plan") -> None:
    """Print the plan's tables to ``console`` (stdout by default)."""
    (console or Console()).print(plan_renderable(plan, title))


def print_ignored_fields(fields: Sequence[IgnoredField], console: Console | None = None) -> None:
    """The source config fields a conversion does not carry over, with their values and why."""
    if not fields:
        return
    table = Table(title=f"config fields not carried over ({len(fields)})", title_style="cyan", title_justify="left")
    for header in ("section", "field", "value", "reason"):
        table.add_column(header, overflow="fold")
    for f in fields:
        table.add_row(*(Text(visible(cell)) for cell in (f.section, f.name, f.value, f.reason)))
    (console or Console()).print(table)
