"""The registry: families described without importing them; registering is idempotent."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest

from wmap.registry import SHIPPED, SHIPPED_REGISTRY, get_model


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


def test_a_registry_is_a_value_and_registering_again_is_harmless() -> None:
    spec = attrs.evolve(get_model("encodec_32khz").unwrap(), name="my_encodec")
    once = SHIPPED_REGISTRY.register(spec)
    twice = once.register(spec).register(attrs.evolve(spec, source="re-run cell"))  # as a notebook re-runs a cell
    assert "my_encodec" not in [f.name for f in SHIPPED_REGISTRY.families()]  # the original is unchanged
    assert [f.name for f in twice.families()].count("my_encodec") == 1
    assert twice.get("my_encodec").unwrap().source == "re-run cell"
    with pytest.raises(ValueError, match="already a family"):
        SHIPPED_REGISTRY.register(attrs.evolve(spec, name="encodec_24khz"))


def test_an_unknown_name_lists_the_known_ones() -> None:
    error = get_model("nope").failure()
    assert "encodec_48khz" in error.message and "nope" in error.message


def test_one_broken_installed_family_is_named_and_the_others_listed(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package whose family module raises on import: ``specs()`` (``registered()``) gives
    every other family, ``broken()`` names the broken one with its module's error."""
    from pathlib import Path

    from wmap.registry import Family

    root = Path(str(tmp_path))
    (root / "badfams.py").write_text("raise RuntimeError('a typo in my family module')\n")
    monkeypatch.syspath_prepend(str(root))
    registry = attrs.evolve(SHIPPED_REGISTRY, described=(*SHIPPED, Family("mine", "x", "y", "badfams", "SPEC")))
    names = [spec.name for spec in registry.specs()]
    assert "mine" not in names and "encodec_24khz" in names and len(names) == len(SHIPPED)
    (broken,) = registry.broken()
    assert broken.name == "mine" and "a typo in my family module" in broken.message
