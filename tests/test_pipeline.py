"""Combinators: first match, sequence, optional, conditional, scope."""

from __future__ import annotations

from wmap.pipeline import first_match, optional, scoped, seq, when
from wmap.transforms import NO_MATCH, PARAMS, Mapped, Skipped, Target, rename, route_weight_norm, skip

EMPTY: dict[str, tuple[int, ...]] = {}


def keys(outcome: object) -> list[str]:
    assert isinstance(outcome, Mapped)
    return [t.key for t in outcome.targets]


def test_first_match_wins_and_lint_reports_overlaps() -> None:
    group = first_match("g", [rename("a.*", "x.*"), rename("a.b", "y")])
    assert keys(group.apply("a.b.weight", EMPTY)) == ["x.b.weight"]
    assert group.lint("a.b.weight", EMPTY) == (("a.* -> x.*", "a.b -> y"),)
    assert group.lint("a.c.weight", EMPTY) == ()


def test_guards_behind_a_rename_are_not_ambiguous() -> None:
    group = first_match("g", [rename("a.*.1", "x.*", PARAMS), skip("a", "rest")])
    assert group.lint("a.0.1.weight", EMPTY) == ()
    assert isinstance(group.apply("a.0.2", EMPTY), Skipped)


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
