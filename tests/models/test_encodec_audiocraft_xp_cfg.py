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
