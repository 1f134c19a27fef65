"""Key patterns: whole segments only, wildcards capture by value."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wmap.keys import PatternError, pattern

SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=8)


def test_prefix_match_captures_and_length() -> None:
    found = pattern("encoder.layers.*.fc1").match_prefix(("encoder", "layers", "3", "fc1", "weight"))
    assert found == (("3",), 4)


@pytest.mark.parametrize(
    ("rule", "key"),
    [
        ("encoder.layers.*.fc1", "encoder.layers.0.fc10.weight"),
        ("quantizer.layers.*.codebook.embed", "quantizer.layers.0.codebook.embed_avg"),
        ("quantizer.weight", "quantizer.weight_proj"),
        ("layers.*", "layers"),
    ],
)
def test_never_matches_substrings(rule: str, key: str) -> None:
    assert pattern(rule).match_prefix(tuple(key.split("."))) is None


def test_wildcard_does_not_match_empty_segment() -> None:
    assert pattern("a.*.b").match_prefix(("a", "", "b")) is None


@pytest.mark.parametrize("bad", ["a..b", "a.l*.b", ".a", "a."])
def test_malformed_patterns_are_refused_when_built(bad: str) -> None:
    with pytest.raises(PatternError):
        pattern(bad)


@given(st.lists(SEGMENT, min_size=1, max_size=4), st.lists(SEGMENT, min_size=0, max_size=3))
def test_substitution_maps_captured_values(captured: list[str], rest: list[str]) -> None:
    source = pattern(".".join(["x"] + ["*"] * len(captured)))
    target = pattern(".".join(["y", *["*"] * len(captured)]))
    key = ("x", *captured, *rest)
    found = source.match_prefix(key)
    assert found is not None
    assert target.substitute(found[0]) == ("y", *captured)
    assert found[1] == 1 + len(captured)
