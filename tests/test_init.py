"""The public API: every exported name is documented, and every name the docs import is exported."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import wmap

DOCS = [*(Path(__file__).resolve().parents[1] / "docs").glob("*.md"), Path(__file__).resolve().parents[1] / "README.md"]


@pytest.mark.parametrize("name", wmap.__all__)
def test_every_exported_name_has_its_own_docstring(name: str) -> None:
    value = getattr(wmap, name)
    doc = inspect.getdoc(value) or ""
    assert doc.strip(), f"{name} has no docstring"
    singleton = name == "NO_MATCH"  # the one value of its type, which documents it
    plain = not (inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value) or singleton)
    if plain and not hasattr(value, "__origin__"):
        assert value.__doc__ != type(value).__doc__, f"{name}'s help is its type's, not what it holds"


def test_every_name_the_docs_import_from_wmap_is_exported() -> None:
    imported: set[str] = set()
    for page in DOCS:
        for block in re.findall(r"from wmap import \(?([^)\n]*(?:\n[^)\n]*)*?)\)?\n", page.read_text()):
            imported |= {name.strip() for name in block.replace("\n", ",").split(",") if name.strip()}
    assert imported, "the docs import from wmap"
    assert imported - set(wmap.__all__) == set()


def test_names_resolve_lazily_and_unknown_names_fail() -> None:
    assert wmap.make_plan.__module__ == "wmap.planner"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = wmap.nope


def test_no_exported_name_is_also_a_submodule() -> None:
    """Importing ``wmap.X`` sets the package's attribute ``X`` to the module, so an exported ``X``
    would become the module once anything imports it (``from wmap import reverse`` did)."""
    import pkgutil

    import wmap

    assert not set(wmap.__all__) & {m.name for m in pkgutil.iter_modules(wmap.__path__)}
