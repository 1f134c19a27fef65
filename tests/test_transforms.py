"""Primitive transforms: rename, wildcard substitution, suffix routing, skip, refuse, tie."""

from __future__ import annotations

import pytest

from wmap.keys import PatternError
from wmap.transforms import (
    NO_MATCH,
    PARAMS,
    WEIGHT_NORM,
    Mapped,
    Refused,
    Skipped,
    Target,
    lstm_leaves,
    refuse,
    rename,
    route_weight_norm,
    skip,
    tie,
)

NO_TARGET: dict[str, tuple[int, ...]] = {}


def test_prefix_rename_keeps_the_remainder() -> None:
    rule = rename("encoder.model.0.conv.conv", "encoder.layers.0.conv")
    assert rule.apply("encoder.model.0.conv.conv.weight_g", NO_TARGET) == Mapped(
        (Target("encoder.layers.0.conv.weight_g"),), (repr(rule),)
    )


def test_wildcards_substitute_in_order() -> None:
    rule = rename("encoder.model.*.block.*.conv.conv", "encoder.layers.*.block.*.conv")
    outcome = rule.apply("encoder.model.10.block.3.conv.conv.bias", NO_TARGET)
    assert isinstance(outcome, Mapped)
    assert outcome.targets[0].key == "encoder.layers.10.block.3.conv.bias"


def test_unequal_wildcards_are_refused_when_built() -> None:
    with pytest.raises(PatternError, match="two sides"):
        rename("a.*.b", "c.d")


def test_leaves_restrict_the_remainder() -> None:
    rule = rename("encoder.model.*.lstm", "encoder.layers.*.lstm", lstm_leaves(2))
    assert isinstance(rule.apply("encoder.model.13.lstm.weight_ih_l1", NO_TARGET), Mapped)
    assert rule.apply("encoder.model.13.lstm.weight_ih_l2", NO_TARGET) is NO_MATCH
    assert rule.apply("encoder.model.13.lstm", NO_TARGET) is NO_MATCH


def test_params_leaves_do_not_catch_weight_proj() -> None:
    rule = rename("quantizer", "q", PARAMS)
    assert rule.apply("quantizer.weight_proj", NO_TARGET) is NO_MATCH
    assert isinstance(rule.apply("quantizer.weight", NO_TARGET), Mapped)


@pytest.mark.parametrize(
    ("source", "target_keys", "expected"),
    [
        ("c.weight_g", ["c.parametrizations.weight.original0"], "c.parametrizations.weight.original0"),
        ("c.weight_v", ["c.parametrizations.weight.original1"], "c.parametrizations.weight.original1"),
        ("c.weight_g", ["c.weight_g"], "c.weight_g"),
        ("c.parametrizations.weight.original0", ["c.weight_g"], "c.weight_g"),
        ("c.bias", ["c.bias"], "c.bias"),
        ("c.weight_g", [], "c.weight_g"),
    ],
)
def test_weight_norm_routing_follows_the_target_layout(source: str, target_keys: list[str], expected: str) -> None:
    outcome = route_weight_norm().apply(source, {k: (1,) for k in target_keys})
    assert isinstance(outcome, Mapped)
    assert outcome.targets == (Target(expected),)


def test_weight_norm_leaves_cover_both_forms() -> None:
    assert {"weight_g", "weight_v", "parametrizations.weight.original0"} <= WEIGHT_NORM.names


def test_skip_and_refuse_carry_their_reason() -> None:
    assert skip("_ema", "teacher").apply("_ema.a.b", NO_TARGET) == Skipped("teacher", "skip _ema")
    assert refuse("x.*.2", "group norm").apply("x.0.2.weight", NO_TARGET) == Refused("group norm", "refuse x.*.2")
    with pytest.raises(PatternError):
        skip("a", "")


def test_tie_feeds_two_targets() -> None:
    rule = tie("decoder.embed_tokens", "model.decoder.embed_tokens", "lm_head")
    outcome = rule.apply("decoder.embed_tokens.weight", NO_TARGET)
    assert isinstance(outcome, Mapped)
    assert outcome.targets == (
        Target("model.decoder.embed_tokens.weight"),
        Target("lm_head.weight", tied_to="model.decoder.embed_tokens.weight"),
    )


def test_reprs_are_readable() -> None:
    assert repr(rename("a.*", "b.*", PARAMS)) == "a.* -> b.* [weight/bias]"
    assert repr(skip("a", "r")) == "skip a"
