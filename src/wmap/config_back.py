"""The way back's configs as data: the tree an original's config file is, written once per family.

A family's way back declares the config its original reads as a tree of mappings, lists and plain
values in which some nodes stand for what only the transformers config (or the written file) knows:

- :class:`Back` — rows of a forward config table read back (:func:`~wmap.config_fields.values_back`),
  at an attribute of a composite config (``"encoder"``), with the table's single allowed values if
  ``fixed``: the way back's fields come from the same table the forward direction reads;
- :class:`Merged` — several parts (mappings, :class:`Back`, ...) merged into one section, later
  keys winning;
- :class:`Picked` — some keys of another part (what a wrapper repeats of the encoder it wraps);
- :class:`Made` — a value the tables do not say, made from the config by a named function (a variant
  the config implies);
- :class:`Slot` — a value known only when the file is written (its folder, the feature extractor's
  rate), filled by :func:`filled`.

:func:`written` evaluates a tree against a config; :func:`filled` fills its slots. Both are pure.
What the original cannot hold of a transformers config is a table too, read forward over that config
(:class:`Holds`): a value outside it is a refusal naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import attrs
from returns.result import Result

from wmap.config_fields import ConfigTable, Field, fixed_back, translate, values_back
from wmap.errors import BadConfig, Disagrees


@attrs.frozen
class Back:
    """``fields`` (a forward table's rows) read back from the transformers config, or from its
    attribute ``of`` (a composite config's ``"encoder"``); with the rows' single allowed values too
    where ``fixed`` (:func:`~wmap.config_fields.fixed_back`: what the original's default is not)."""

    fields: tuple[Field, ...]
    of: str = ""
    fixed: bool = False


@attrs.frozen
class Made:
    """What ``make(config)`` gives: a value no table row says (which variant of the original's model a
    config implies), made by a named function."""

    make: Callable[[Any], Any]


@attrs.frozen(init=False)
class Merged:
    """One section from several parts (mappings, :class:`Back`, :class:`Picked`, :class:`Made` giving
    a mapping), merged in order: a later part's key wins."""

    parts: tuple[Any, ...]

    def __init__(self, *parts: Any) -> None:
        self.__attrs_init__(parts)


@attrs.frozen
class Picked:
    """The keys ``names`` of the section ``tree`` makes, those it has (a CTC wrapper spells some of its
    encoder's fields again: fairseq builds the encoder with the wrapper's)."""

    tree: Any
    names: tuple[str, ...]


@attrs.frozen
class Slot:
    """A place in a config the way back writes whose value is known only when the file is written
    (where it goes: fairseq's tasks name that folder as their ``data``); :func:`filled` fills it."""

    what: str


def written(tree: Any, config: object) -> Any:
    """The config ``tree`` describes for ``config`` (a transformers config): each :class:`Back`,
    :class:`Merged`, :class:`Picked` and :class:`Made` evaluated, mappings and lists walked, every other
    value (a :class:`Slot` among them) kept."""
    if isinstance(tree, Back):
        found = _attribute(config, tree.of)
        return {**(fixed_back(tree.fields) if tree.fixed else {}), **values_back(tree.fields, found)}
    if isinstance(tree, Merged):
        return {key: value for part in tree.parts for key, value in written(part, config).items()}
    if isinstance(tree, Picked):
        section = written(tree.tree, config)
        return {name: section[name] for name in tree.names if name in section}
    if isinstance(tree, Made):
        return tree.make(config)
    if isinstance(tree, Mapping):
        return {key: written(item, config) for key, item in tree.items()}
    if isinstance(tree, list):
        return [written(item, config) for item in tree]
    return tree


def _attribute(config: object, path: str) -> object:
    for name in filter(None, path.split(".")):
        config = getattr(config, name)
    return config


def filled(tree: Any, values: Mapping[Slot, Any]) -> Any:
    """``tree`` (mappings and lists, as a written config nests) with each :class:`Slot` of ``values``
    replaced by its value (the values themselves are not walked)."""
    if isinstance(tree, Mapping):
        return {key: filled(item, values) for key, item in tree.items()}
    if isinstance(tree, list):
        return [filled(item, values) for item in tree]
    return values.get(tree, tree) if isinstance(tree, Slot) else tree


class _Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


C = TypeVar("C", bound=_Config)


@attrs.frozen
class Holds:
    """What an original can hold of a transformers config: ``table`` read over the config's fields
    (its ``Checked`` and ``Derived`` rows: the values the original has a place for). Called, the config
    itself, or a refusal (:class:`~wmap.errors.Disagrees`, exit 1: readable, but not a model the
    original can be given) naming the field, why and what the config says."""

    table: ConfigTable

    def __call__(self, config: C) -> Result[C, BadConfig]:
        read = translate(self.table, config.to_dict(), report_unknown=False)
        return read.alt(_refusal).map(lambda _: config)


def _refusal(error: BadConfig) -> BadConfig:
    return Disagrees(error.source, error.key, error.expected, error.found)
