"""The registry: families described without importing them; registering is idempotent."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest

from wmap.registry import SHIPPED, families, get_model, register


def test_every_shipped_family_loads_as_described() -> None:
    for family in SHIPPED:
        spec = get_model(family.name).unwrap()
        assert (spec.name, spec.source, spec.target) == (family.name, family.source, family.target)


def test_listing_families_imports_no_family_module() -> None:
    code = (
        "import sys; from wmap.registry import families; families(); "
        "print([m for m in sys.modules if m.startswith(('wmap.models', 'torch', 'transformers'))])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"


def test_registering_the_same_spec_again_is_harmless() -> None:
    spec = attrs.evolve(get_model("encodec_32khz").unwrap(), name="my_encodec")
    assert register(spec) is spec and register(spec) is spec
    assert "my_encodec" in [f.name for f in families()] and get_model("my_encodec").unwrap() is spec
    with pytest.raises(ValueError, match="already registered"):
        register(attrs.evolve(spec, source="something else"))
    with pytest.raises(ValueError, match="already registered"):
        register(attrs.evolve(spec, name="encodec_24khz"))


def test_an_unknown_name_lists_the_known_ones() -> None:
    error = get_model("nope").failure()
    assert "encodec_48khz" in error.message and "nope" in error.message
