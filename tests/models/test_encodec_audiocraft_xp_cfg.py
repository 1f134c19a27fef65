"""audiocraft's ``xp.cfg``: YAML text whose interpolations are resolved as audiocraft's loaders resolve
them (its export writes the solver's config unresolved), with no resolver run and the work bounded."""

from __future__ import annotations

import pytest

from wmap.errors import BadConfig
from wmap.models.encodec_audiocraft import xp_cfg_of
from wmap.yaml_text import MAX_INTERPOLATIONS


def test_interpolations_of_its_own_keys_are_resolved_as_omegaconf_does() -> None:
    text = "sample_rate: 32000\nencodec:\n  sample_rate: ${sample_rate}\n  causal: false\n"
    text += "seanet:\n  causal: ${encodec.causal}\n  name: run_${sample_rate}\n  rate: ${..sample_rate}\n"
    cfg = xp_cfg_of({"xp.cfg": text})
    assert cfg["encodec"] == {"sample_rate": 32000, "causal": False}
    assert cfg["seanet"] == {"causal": False, "name": "run_32000", "rate": 32000}
    plain = "sample_rate: 32000\nencodec:\n  sample_rate: 32000\n"
    assert xp_cfg_of({"xp.cfg": plain}) == {"sample_rate": 32000, "encodec": {"sample_rate": 32000}}


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("channels: ${oc.env:HOME}\n", "${oc.env:...}"),  # a resolver: not run
        ("channels: ${ oc.decode :'1'}\n", "${ oc.decode :...}"),
        ("channels: ${nowhere}\n", "nowhere"),
        ("a: ${b}\nb: ${a}\n", "Recursive"),
        (
            "".join(f"a{i}: ${{a{i - 1}}}\n" if i else "a0: 1\n" for i in range(MAX_INTERPOLATIONS + 2)),
            "interpolations",
        ),
    ],
    ids=["env", "decode", "missing-key", "cycle", "too-many"],
)
def test_what_cannot_be_resolved_safely_is_refused_naming_xp_cfg(text: str, found: str) -> None:
    error = xp_cfg_of({"xp.cfg": text})
    assert isinstance(error, BadConfig) and error.key == "xp.cfg" and found in error.found, error
    assert "no resolver is run" in error.expected


BOMB = "a0: &a0 [x, x]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]\n" for i in range(1, 40))
"""Aliases of aliases: a few lines that, walked once per reference, are 3**39 values."""


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("&a [*a]", "alias"),  # a list inside itself
        (BOMB, "alias"),
        ("a: " + "{b: " * 70 + "1" + "}" * 70, "levels"),
        ("[" * 50_000 + "]" * 50_000, "too deep"),  # deeper than the parser's recursion
    ],
    ids=["loop", "alias-bomb", "deep", "deeper-than-the-parser"],
)
def test_yaml_that_would_not_be_read_in_bounded_time_and_memory_is_refused(text: str, found: str) -> None:
    error = xp_cfg_of({"xp.cfg": text})
    assert isinstance(error, BadConfig) and error.key == "xp.cfg" and found in error.found, error


def test_the_way_back_writes_yaml_without_aliases_that_reads_back_the_same() -> None:
    from wmap.yaml_text import dump_yaml

    shared = [0, 1]
    value = {"delays": shared, "again": shared, "nested": {"list": shared}}
    text = dump_yaml(value)
    assert "&" not in text and "*" not in text and xp_cfg_of({"xp.cfg": text}) == value
    assert list(xp_cfg_of({"xp.cfg": dump_yaml({"b": 1, "a": 2})})) == ["b", "a"]  # its own order


def test_a_pickled_omegaconf_config_is_resolved_as_its_text_would_be() -> None:
    """A solver's own checkpoint keeps ``xp.cfg`` as an omegaconf config, read as its plain containers
    with the interpolations as written: resolved as the exported text is."""
    cfg = {"sample_rate": 24000, "encodec": {"sample_rate": "${sample_rate}"}}
    assert xp_cfg_of({"xp.cfg": cfg}) == {"sample_rate": 24000, "encodec": {"sample_rate": 24000}}
    refused = xp_cfg_of({"xp.cfg": {"channels": "${oc.env:HOME}"}})
    assert isinstance(refused, BadConfig) and "${oc.env:...}" in refused.found
    odd = xp_cfg_of({"xp.cfg": {"model": object()}})  # nothing YAML can write: refused, not raised
    assert isinstance(odd, BadConfig) and odd.key == "xp.cfg"
