"""Primitive transforms: pure functions of a source key (and of the target layout when routing).

Every transform answers one source key with an :data:`Outcome`: the key is
mapped to one or more target keys, deliberately skipped, refused (recognised
but not representable by the target), or not matched. Nothing here touches a
tensor: value operations such as tying ride on the outcome as data.
"""

from __future__ import annotations

import typing
from typing import Final, Protocol, TypeAlias

import attrs

from wmap.keys import Pattern, PatternError, join_key, pattern, split_key
from wmap.values import Concatenate, Joiner, Stack, ValueOp, WeightNormFold

Shape: TypeAlias = tuple[int, ...]
Layout: TypeAlias = typing.Mapping[str, Shape]
"""Key -> shape: all the planner ever sees of a checkpoint or a model."""
Layout.__doc__ = "Layout: key -> shape (a tuple of ints), all the planner ever sees of a checkpoint or a model."


@attrs.frozen
class Target:
    """One target key; ``tied_to`` names the primary target when this one shares its tensor;
    ``value`` is the value operation on the way (:mod:`wmap.values`, e.g. one part of a fused tensor)."""

    key: str
    tied_to: str | None = None
    value: ValueOp | None = None
    gathered: bool = False
    """One of several sources of this target that must all hold the same values (:class:`Gather`):
    the first is written, the others are checked equal to it when apply runs."""
    part: Part | None = None
    """This source is one part of the target (:class:`JoinRename`): apply concatenates the parts."""


@attrs.frozen
class Part:
    """Part ``index`` of ``count`` parts that ``joiner`` makes one target of (q, k and v of a fused
    ``qkv``; weight norm's ``g`` and ``v``)."""

    index: int
    count: int
    joiner: Joiner


@attrs.frozen
class Mapped:
    """The key goes to ``targets``; ``rules`` are the rules that decided, outermost first."""

    targets: tuple[Target, ...]
    rules: tuple[str, ...]


@attrs.frozen
class Skipped:
    """The key is deliberately not converted."""

    reason: str
    rule: str


@attrs.frozen
class Refused:
    """The key is recognised, but the target cannot represent it: conversion must not go on."""

    reason: str
    rule: str


@attrs.frozen
class NoMatchType:
    """The type of ``NO_MATCH``, its one value: a transform's answer for a key it does not speak
    about (the next rule is tried)."""


NO_MATCH: Final = NoMatchType()
"""The outcome of a transform that does not speak about a key (the next rule is tried)."""
Outcome: TypeAlias = typing.Union[Mapped, Skipped, Refused, NoMatchType]  # noqa: UP007 - documented for help()
"""What a transform answers for one key."""
Outcome.__doc__ = "Outcome: what a transform answers for one key (Mapped, Skipped, Refused or NO_MATCH)."


class Transform(Protocol):
    """Anything with ``apply``: a pure function from a source key (and the target layout) to an
    :data:`Outcome`. That is the whole protocol; the planner calls nothing else."""

    def apply(self, key: str, target: Layout) -> Outcome:
        """Decide what happens to ``key``."""
        ...


@attrs.frozen(repr=False, slots=False)
class Leaves:
    """A named set of allowed remainders (suffixes) after a pattern, e.g. LSTM parameters.

    Each set documents itself: ``help(PARAMS)`` says what it holds."""

    name: str
    names: frozenset[str]
    about: str = ""

    def __attrs_post_init__(self) -> None:
        held = ", ".join(repr(n) for n in sorted(self.names)[:12]) + (", ..." if len(self.names) > 12 else "")
        object.__setattr__(self, "__doc__", f"{self.about or 'Leaves ' + repr(self.name)}\n\nHolds: {held}.")

    def __repr__(self) -> str:
        return self.name

    def __or__(self, other: Leaves) -> Leaves:
        return Leaves(f"{self.name}|{other.name}", self.names | other.names, f"Either {self.name} or {other.name}.")


EXACT: Final = Leaves("exact", frozenset({""}), "Only the key itself (a bare parameter such as ``mask_emb``).")
"""Only the key itself (a bare parameter such as ``mask_emb``), nothing below it."""
PARAMS: Final = Leaves("weight/bias", frozenset({"weight", "bias"}), "A layer's weight and optional bias.")
"""A layer's weight and optional bias."""
BATCH_NORM: Final = Leaves(
    "batch-norm",
    frozenset({"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}),
    "A batch norm's parameters and running statistics.",
)
"""A batch norm's parameters and running statistics."""
WEIGHT_NORM_NAMES: Final = (
    ("weight_g", "parametrizations.weight.original0"),
    ("weight_v", "parametrizations.weight.original1"),
)
WEIGHT_NORM: Final = Leaves(
    "weight-norm",
    frozenset({"bias", *(name for pair in WEIGHT_NORM_NAMES for name in pair)}),
    "A weight-norm conv's pair in either form (weight_g/weight_v or parametrizations) and its bias.",
)
"""A weight-norm conv's pair in either form (``weight_g``/``weight_v`` or ``parametrizations``) and its bias."""


def weight_norm_hook_names(layout: typing.Mapping[str, Shape]) -> dict[str, Shape]:
    """``layout`` with weight-norm pairs under torch's hook names (``weight_g``/``weight_v``), which
    the originals' modules use (fairseq, s3prl, audiocraft), where a transformers layout has
    ``parametrizations.weight.original0/1``: what a way back predicts of such an original."""
    renamed = {}
    for key, shape in layout.items():
        for old, new in WEIGHT_NORM_NAMES:
            if key.endswith("." + new):
                key = key[: -len(new)] + old
        renamed[key] = shape
    return renamed


def lstm_leaves(num_layers: int, *, bidirectional: bool = False) -> Leaves:
    """LSTM parameter names (``weight_ih_l0`` ... ``bias_hh_l{n-1}``, with ``_reverse`` if bidirectional)."""
    suffixes = ("", "_reverse") if bidirectional else ("",)
    names = frozenset(
        f"{kind}_{gate}_l{layer}{suffix}"
        for kind in ("weight", "bias")
        for gate in ("ih", "hh")
        for layer in range(num_layers)
        for suffix in suffixes
    )
    return Leaves(f"lstm[{num_layers}]", names, f"The parameters of a {num_layers}-layer LSTM.")


def match_under(source: Pattern, leaves: Leaves | None, key: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(captures, remainder)`` when ``key`` lies under ``source`` and what follows is one of
    ``leaves`` (any remainder when ``leaves`` is ``None``); else ``None``. How every rule matches."""
    segments = split_key(key)
    found = source.match_prefix(segments)
    if found is None:
        return None
    rest = segments[found[1] :]
    if leaves is not None and join_key(rest) not in leaves.names:
        return None
    return found[0], rest


@attrs.frozen(repr=False)
class Rename:
    """Prefix rename with wildcard substitution: ``source`` prefix -> ``target`` prefix, remainder kept.

    With ``also`` the same source tensor also feeds further targets (embedding-to-linear tying).
    """

    source: Pattern
    target: Pattern
    leaves: Leaves | None = None
    also: tuple[Pattern, ...] = ()
    _text: str = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        for other in (self.target, *self.also):
            if other.wildcards != self.source.wildcards:
                raise PatternError(
                    f"rule {self.source.text!r} -> {other.text!r}: the two sides have "
                    f"{self.source.wildcards} and {other.wildcards} '*'"
                )
        extra = "".join(f" +tie {p!r}" for p in self.also)
        leaves = f" [{self.leaves!r}]" if self.leaves else ""
        object.__setattr__(self, "_text", f"{self.source!r} -> {self.target!r}{extra}{leaves}")

    def __repr__(self) -> str:
        return self._text

    def apply(self, key: str, target: Layout) -> Outcome:
        found = match_under(self.source, self.leaves, key)
        if found is None:
            return NO_MATCH
        captures, rest = found
        primary = join_key(self.target.substitute(captures) + rest)
        if not self.also:
            return Mapped((Target(primary),), (self._text,))
        tied = tuple(Target(join_key(p.substitute(captures) + rest), tied_to=primary) for p in self.also)
        return Mapped((Target(primary), *tied), (self._text,))


@attrs.frozen(repr=False)
class Skip:
    """Deliberately skip every key under ``source`` (the seeds' ``prefix.*`` / ``a.*.b`` ignore rules)."""

    source: Pattern
    reason: str
    leaves: Leaves | None = None

    def __repr__(self) -> str:
        return f"skip {self.source!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        if match_under(self.source, self.leaves, key) is None:
            return NO_MATCH
        return Skipped(self.reason, repr(self))


@attrs.frozen(repr=False)
class Refuse:
    """Keys under ``source`` exist in a variant the target class cannot represent."""

    source: Pattern
    reason: str

    def __repr__(self) -> str:
        return f"refuse {self.source!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        if self.source.match_prefix(split_key(key)) is None:
            return NO_MATCH
        return Refused(self.reason, repr(self))


@attrs.frozen(repr=False)
class RouteWeightNorm:
    """Route weight-norm leaves to whichever form the target layout has.

    ``weight_g``/``weight_v`` and ``parametrizations.weight.original0/1`` are
    the same two tensors; the target layout decides which names it wants.
    Keys that are not weight-norm leaves, or already present, pass unchanged.
    """

    def __repr__(self) -> str:
        return "route weight-norm"

    def apply(self, key: str, target: Layout) -> Outcome:
        if key in target:
            return Mapped((Target(key),), ())
        for old, new in WEIGHT_NORM_NAMES:
            for have, want in ((old, new), (new, old)):
                suffix = "." + have
                if key.endswith(suffix):
                    routed = key[: -len(have)] + want
                    if routed in target:
                        return Mapped((Target(routed),), (repr(self),))
        return Mapped((Target(key),), ())


@attrs.frozen(repr=False)
class SplitRename:
    """One tensor into one part per target, each taken by what ``joiner`` says of its parts (equal
    chunks along a dimension for :class:`~wmap.values.Concatenate`: fairseq's old ``in_proj_weight``
    holds q, k and v; weight norm's ``g`` and ``v`` for :class:`~wmap.values.WeightNormFold`). Each
    target carries its value operation, whose shape the plan checks. The inverse is :class:`JoinRename`."""

    source: Pattern
    targets: tuple[Pattern, ...]
    joiner: Joiner

    def __repr__(self) -> str:
        return f"split {self.source!r} -> {', '.join(map(repr, self.targets))} ({self.joiner!r})"

    def apply(self, key: str, target: Layout) -> Outcome:
        found = match_under(self.source, None, key)
        if found is None:
            return NO_MATCH
        captures, rest = found
        values = self.joiner.parts(len(self.targets))
        parts = tuple(
            Target(join_key(p.substitute(captures) + rest), value=value)
            for p, value in zip(self.targets, values, strict=True)
        )
        return Mapped(parts, (repr(self),))

    def inverse(self) -> JoinRename:
        return JoinRename(self.targets, self.source, self.joiner)


@attrs.frozen(repr=False)
class JoinRename:
    """Several tensors into one by ``joiner``, in the order of ``sources`` (q, k, v concatenated into a
    fused ``qkv``; weight norm's ``g`` and ``v`` folded into a weight): each source is a :class:`Part`
    of the target; the planner checks that every part is there and the joined shape is the target's,
    and apply joins them. The inverse of :class:`SplitRename`, and it of this."""

    sources: tuple[Pattern, ...]
    target: Pattern
    joiner: Joiner

    def __repr__(self) -> str:
        return f"join {', '.join(map(repr, self.sources))} -> {self.target!r} ({self.joiner!r})"

    def apply(self, key: str, target: Layout) -> Outcome:
        for index, source in enumerate(self.sources):
            found = match_under(source, None, key)
            if found is not None:
                captures, rest = found
                name = join_key(self.target.substitute(captures) + rest)
                part = Part(index, len(self.sources), self.joiner)
                return Mapped((Target(name, part=part),), (repr(self),))
        return NO_MATCH

    def inverse(self) -> SplitRename:
        return SplitRename(self.target, self.sources, self.joiner)


def join(sources: tuple[str, ...], target: str, dim: int = 0) -> JoinRename:
    """Tensors under ``sources`` concatenated along ``dim``, in order, into ``target`` (patterns as in
    :func:`rename`; the remainder after the pattern is kept); reversed, a :func:`split`."""
    return JoinRename(tuple(pattern(s) for s in sources), pattern(target), Concatenate(dim))


def stack(sources: tuple[str, ...], target: str, dim: int = 0) -> JoinRename:
    """Tensors of one shape under ``sources`` stacked along a new ``dim``, in order, into ``target``
    (per-layer weights into one ``[layers, ...]`` tensor); reversed, :func:`unstack` (each selects its index)."""
    return JoinRename(tuple(pattern(s) for s in sources), pattern(target), Stack(dim))


def unstack(source: str, targets: tuple[str, ...], dim: int = 0) -> SplitRename:
    """A stacked tensor ``source``, one index along ``dim`` to each target, in order; reversed, :func:`stack`."""
    return SplitRename(pattern(source), tuple(pattern(t) for t in targets), Stack(dim))


def fold(source: str, target: str, dim: int = 0) -> JoinRename:
    """An old-style weight-norm pair ``source.weight_g``/``source.weight_v`` folded into ``target.weight``
    (``w = g * v / ||v||``, the norm over every dimension but ``dim``), on the CPU in float32; the way
    back unfolds (``g = ||w||``, ``v = w``). The bias is another rule's."""
    return JoinRename(
        (pattern(f"{source}.weight_g"), pattern(f"{source}.weight_v")), pattern(f"{target}.weight"), WeightNormFold(dim)
    )


@attrs.frozen(repr=False)
class Gather:
    """Many source keys to one target that must all hold equal values (the target's ``*`` take the
    source's first captures): fairseq's rotary ``inv_freq``,
    one identical copy per layer, is one buffer in transformers. The first source is written; apply
    checks every other one equal to it and names both keys if not (a fine-tune that changed one copy).
    The inverse is :class:`FanOut`, one copy back under every instance the original holds."""

    source: Pattern
    target: Pattern
    leaves: Leaves | None = None

    def __attrs_post_init__(self) -> None:
        if self.target.wildcards > self.source.wildcards:
            raise PatternError(f"gather {self.source.text!r} -> {self.target.text!r}: the target has more '*'")

    def __repr__(self) -> str:
        return f"gather {self.source!r} -> {self.target!r}"

    def apply(self, key: str, target: Layout) -> Outcome:
        found = match_under(self.source, self.leaves, key)
        if found is None:
            return NO_MATCH
        captures, rest = found
        name = join_key(self.target.substitute(captures[: self.target.wildcards]) + rest)
        return Mapped((Target(name, gathered=True),), (repr(self),))

    def inverse(self) -> FanOut:
        return FanOut(self.target, self.source, self.leaves)


@attrs.frozen(repr=False)
class FanOut:
    """One key to a copy under every instance of ``targets``' wildcards that the target layout holds
    (any key under the pattern's part up to its last ``*`` counts: ``encoder.layers.3.…`` is instance
    ``3``), the first written, the others tied to it. The inverse of :class:`Gather`."""

    source: Pattern
    targets: Pattern
    leaves: Leaves | None = None

    def __repr__(self) -> str:
        return f"fan out {self.source!r} -> {self.targets!r}"

    def instances(self, target: Layout) -> tuple[tuple[str, ...], ...]:
        """The captures of the pattern's wildcards that the layout holds keys under, in order."""
        segments = self.targets.segments
        last = max((i for i, s in enumerate(segments) if s == "*"), default=-1)
        head = Pattern(join_key(segments[: last + 1])) if last >= 0 else None
        if head is None:
            return ((),)
        found: dict[tuple[str, ...], None] = {}
        for key in target:
            matched = head.match_prefix(split_key(key))
            if matched is not None:
                found.setdefault(matched[0], None)
        return tuple(sorted(found, key=lambda c: tuple((int(x) if x.isdigit() else -1, x) for x in c)))

    def apply(self, key: str, target: Layout) -> Outcome:
        found = match_under(self.source, self.leaves, key)
        if found is None:
            return NO_MATCH
        captures, rest = found
        held = (c for c in self.instances(target) if c[: len(captures)] == captures)
        names = [join_key(self.targets.substitute(c) + rest) for c in held]
        if not names:
            return NO_MATCH
        copies = tuple(Target(name, tied_to=names[0]) for name in names[1:])
        return Mapped((Target(names[0]), *copies), (repr(self),))

    def inverse(self) -> Gather:
        return Gather(self.targets, self.source, self.leaves)


def gather(source: str, target: str, leaves: Leaves | None = None) -> Gather:
    """Every key under ``source`` to ``target`` (fewer ``*``: the extra captures are dropped), all
    checked equal when apply runs (:class:`Gather`); reversed, one copy per instance (:class:`FanOut`)."""
    return Gather(pattern(source), pattern(target), leaves)


def split(source: str, targets: tuple[str, ...], dim: int = 0) -> SplitRename:
    """A fused tensor ``source`` split along ``dim`` in equal parts, one per target, in order
    (patterns as in :func:`rename`; the remainder after the pattern is kept); reversed, a :func:`join`."""
    return SplitRename(pattern(source), tuple(pattern(t) for t in targets), Concatenate(dim))


def rename(source: str, target: str, leaves: Leaves | None = None) -> Rename:
    """Prefix rename, with ``*`` capturing one segment each side (validated now)."""
    return Rename(pattern(source), pattern(target), leaves)


def tie(source: str, target: str, *also: str) -> Rename:
    """One source tensor feeding ``target`` and, tied to it, each of ``also``."""
    return Rename(pattern(source), pattern(target), None, tuple(pattern(p) for p in also))


def skip(source: str, reason: str, leaves: Leaves | None = None) -> Skip:
    """Skip keys under ``source`` with a stated reason."""
    if not reason:
        raise PatternError(f"skip rule {source!r} needs a reason")
    return Skip(pattern(source), reason, leaves)


def refuse(source: str, reason: str) -> Refuse:
    """Refuse keys under ``source``: the target cannot represent them."""
    if not reason:
        raise PatternError(f"refuse rule {source!r} needs a reason")
    return Refuse(pattern(source), reason)


def route_weight_norm() -> RouteWeightNorm:
    """Route ``weight_g``/``weight_v`` to the form the target layout uses."""
    return RouteWeightNorm()
