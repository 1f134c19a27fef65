"""Combinators: first match, sequence, optional, conditional, scope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wmap.keys import PatternError
from wmap.pipeline import first_match, optional, overlap, scoped, seq, when
from wmap.transforms import (
    EXACT,
    NO_MATCH,
    PARAMS,
    Leaves,
    Mapped,
    Rename,
    Skipped,
    Target,
    rename,
    route_weight_norm,
    skip,
)

EMPTY: dict[str, tuple[int, ...]] = {}


def keys(outcome: object) -> list[str]:
    assert isinstance(outcome, Mapped)
    return [t.key for t in outcome.targets]


def test_first_match_wins_and_overlaps_are_found_when_built() -> None:
    group = first_match("g", [rename("a.*", "x.*"), rename("a.b", "y")])
    assert keys(group.apply("a.b.weight", EMPTY)) == ["x.b.weight"]
    assert [(o.example, o.rules) for o in group.overlaps] == [("a.b.weight", ("a.* -> x.*", "a.b -> y"))]
    assert first_match("g", [rename("a.*.1", "x.*", PARAMS), rename("a.*.2", "y.*", PARAMS)]).overlaps == ()
    # leaf sets decide too: fc1's weight/bias never reach fc1.weight_proj
    assert first_match("g", [rename("q.fc1", "x", PARAMS), rename("q.fc1.weight_proj", "y")]).overlaps == ()


def test_guards_behind_a_rename_are_not_ambiguous() -> None:
    group = first_match("g", [rename("a.*.1", "x.*", PARAMS), skip("a", "rest")])
    assert group.overlaps == ()
    assert isinstance(group.apply("a.0.2", EMPTY), Skipped)


SEGMENTS = st.sampled_from(["a", "b", "0", "1", "*"])
LEAVES = st.sampled_from([None, PARAMS, EXACT, Leaves("x", frozenset({"b.weight", "0"}))])


@st.composite
def renames(draw: st.DrawFn) -> Rename:
    source = draw(st.lists(SEGMENTS, min_size=1, max_size=3))
    return rename(".".join(source), ".".join(["t", *source]), draw(LEAVES))


@st.composite
def filled(draw: st.DrawFn, rule: Rename) -> str:
    """A key the rule's pattern matches a prefix of (wildcards filled, a tail added)."""
    segments = [draw(st.sampled_from(["a", "b", "0", "1"])) if s == "*" else s for s in rule.source.segments]
    tail = draw(st.lists(st.sampled_from(["a", "b", "0", "weight", "bias"]), max_size=2))
    return ".".join(segments + tail)


@settings(max_examples=300, deadline=None)
@given(first=renames(), second=renames(), data=st.data())
def test_overlap_is_exact(first: Rename, second: Rename, data: st.DataObject) -> None:
    """Sound: the example matches both. Complete: a key both match means an overlap is found."""
    example = overlap(first, second)
    if example is not None:
        assert first.apply(example, EMPTY) is not NO_MATCH and second.apply(example, EMPTY) is not NO_MATCH
    key = data.draw(filled(data.draw(st.sampled_from([first, second]))))
    if first.apply(key, EMPTY) is not NO_MATCH and second.apply(key, EMPTY) is not NO_MATCH:
        assert example is not None


def test_index_by_first_segment_keeps_wildcard_rules() -> None:
    group = first_match("g", [rename("*.fc1", "*.dense"), rename("b", "c")])
    assert keys(group.apply("enc.fc1.bias", EMPTY)) == ["enc.dense.bias"]
    assert keys(group.apply("b.bias", EMPTY)) == ["c.bias"]
    assert group.apply("zzz", EMPTY) is NO_MATCH


def test_sequence_feeds_targets_to_the_next_stage() -> None:
    pipeline = seq(optional(rename("final_proj.0", "final_proj")), rename("final_proj", "head"))
    assert keys(pipeline.apply("final_proj.0.weight", EMPTY)) == ["head.weight"]
    assert keys(pipeline.apply("final_proj.bias", EMPTY)) == ["head.bias"]
    assert pipeline.apply("other", EMPTY) is NO_MATCH


def test_sequence_with_routing_uses_the_target_layout() -> None:
    pipeline = seq(rename("conv.0", "conv"), route_weight_norm())
    target = {"conv.parametrizations.weight.original0": (1,)}
    assert keys(pipeline.apply("conv.0.weight_g", target)) == ["conv.parametrizations.weight.original0"]


def test_conditional_is_visible_and_decides() -> None:
    yes = when("group norm", True, rename("a", "b"), rename("a", "c"))
    no = when("group norm", False, rename("a", "b"))
    assert keys(yes.apply("a.w", EMPTY)) == ["b.w"]
    assert no.apply("a.w", EMPTY) is NO_MATCH
    assert "group norm (yes)" in repr(yes)


def test_scope_strips_and_prefixes() -> None:
    scope = scoped("w2v_encoder.w2v_model", "data2vec_audio", rename("mask_emb", "masked_spec_embed"))
    assert keys(scope.apply("w2v_encoder.w2v_model.mask_emb", EMPTY)) == ["data2vec_audio.masked_spec_embed"]
    assert scope.apply("w2v_encoder.proj.weight", EMPTY) is NO_MATCH
    assert scope.apply("w2v_encoder.w2v_model", EMPTY) is NO_MATCH


def test_scoped_tie_prefixes_both_targets() -> None:
    from wmap.transforms import tie

    scope = scoped("decoder", "m", tie("embed", "embed", "head"))
    outcome = scope.apply("decoder.embed.weight", EMPTY)
    assert isinstance(outcome, Mapped)
    assert outcome.targets == (Target("m.embed.weight"), Target("m.head.weight", "m.embed.weight"))


def test_pipelines_are_comparable_values() -> None:
    def build() -> object:
        return seq(first_match("g", [rename("a", "b", PARAMS), skip("c", "why")]), route_weight_norm())

    assert build() == build()
    assert "a -> b [weight/bias]" in repr(build())


def test_scoped_wildcards_capture_as_rename_does() -> None:
    scope = scoped("layers.*", "blocks.*", first_match("g", [rename("fc", "dense", PARAMS)]))
    assert keys(scope.apply("layers.3.fc.weight", EMPTY)) == ["blocks.3.dense.weight"]
    with pytest.raises(PatternError, match="'\\*'"):
        scoped("layers.*", "blocks", first_match("g", []))


def test_a_condition_without_otherwise_reads_as_text() -> None:
    assert repr(when("flag", False, rename("a", "b"))) == "when flag (no): no rule (keys pass to the next one)"
