"""Config translation as a table of fields: every field of an original's config accounted for.

A family declares, for each field of the source config section, one of:

- :class:`Translated` — read with a typed, bounded reader and passed on (to a
  target config field, or to the family's own derivation when ``target`` is ``None``);
- :class:`Checked` — the target can only represent some values: any other is a
  :class:`~wmap.errors.BadConfig` naming the field, the value and why;
- :class:`Decided` — the field picks a variant, which the family's rules handle
  (a variant the target cannot represent is refused by the plan, key by key);
- :class:`Ignored` — deliberately not carried over, with the reason (training-only settings);
- :class:`Composite` — one source field <-> several target fields (a conv spec);
- :class:`Joint` — several source fields <-> several target fields (data2vec's positional convs);
- :class:`Derived` — a field the target derives from the others, checked forward and derived back.

A :class:`Translated` row may also say how its value must relate to the others (``fits``:
:func:`divides`). The same table is read back (:func:`values_back`, :func:`fixed_back`): the way
back's configs are never written a second time.

:func:`translate` reads a section (plain containers, ``argparse.Namespace`` or
omegaconf) against its table. It never raises: a value of the wrong type or
out of range is an error value. Fields present in the file that the table does
not know are reported as unrecognised, and :func:`wmap.cli` shows them with the
ignored ones in ``wmap preview``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Final, TypeAlias

import attrs
from returns.result import Failure, Result, Success

from wmap.errors import BadConfig

Reader: TypeAlias = Callable[[object], Result[Any, str]]
"""Reads one raw value: the typed value, or what was expected (as text)."""


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Final = _Missing()
"""A :class:`Translated` default meaning: the field must be present."""

MAX_SHOWN = 60
"""Characters of a found value quoted in an error."""


def shown(value: object) -> str:
    """A value as an error quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, high: int) -> Reader:
    """An integer in ``[low, high]``."""
    expected = f"an integer from {low} to {high}"

    def read(value: object) -> Result[Any, str]:
        if _is_int(value) and low <= value <= high:  # type: ignore[operator]
            return Success(int(value))  # type: ignore[call-overload]
        return Failure(expected)

    return read


def number(low: float, high: float) -> Reader:
    """A finite number in ``[low, high]``, as a float."""
    expected = f"a number from {low:g} to {high:g}"

    def read(value: object) -> Result[Any, str]:
        if (_is_int(value) or isinstance(value, float)) and math.isfinite(value) and low <= value <= high:  # type: ignore[arg-type,operator]
            return Success(float(value))  # type: ignore[arg-type]
        return Failure(expected)

    return read


PROBABILITY: Final = number(0.0, 1.0)
"""A dropout or masking probability."""


def boolean(value: object) -> Result[Any, str]:
    """``True``/``False`` (fairseq's old ``args`` may hold 0/1)."""
    if isinstance(value, bool):
        return Success(value)
    if _is_int(value) and value in (0, 1):
        return Success(bool(value))
    return Failure("true or false")


def one_of(*allowed: object) -> Reader:
    """One of ``allowed`` (compared with ``==``, types checked)."""
    expected = "one of " + ", ".join(map(repr, allowed))

    def read(value: object) -> Result[Any, str]:
        for option in allowed:
            if type(value) is type(option) and value == option:
                return Success(value)
        return Failure(expected)

    return read


@attrs.frozen
class ValueMap:
    """A reader for a field whose values are spelled differently on each side (fairseq's
    ``extractor_mode`` ``"default"``/``"layer_norm"`` is transformers' ``feat_extract_norm``
    ``"group"``/``"layer"``): it reads a value as the other side's, and refuses one outside the map
    with the reason. :func:`inverse` reads the other way with :meth:`inverted`: the map is written once."""

    pairs: tuple[tuple[Any, Any], ...]
    reason: str

    def __call__(self, value: object) -> Result[Any, str]:
        for here, there in self.pairs:
            if type(value) is type(here) and value == here:
                return Success(there)
        return Failure(f"one of {', '.join(repr(here) for here, _ in self.pairs)} ({self.reason})")

    def inverted(self) -> ValueMap:
        return ValueMap(tuple((there, here) for here, there in self.pairs), self.reason)


def optional(reader: Reader) -> Reader:
    """``None`` or what ``reader`` reads."""

    def read(value: object) -> Result[Any, str]:
        if value is None:
            return Success(None)
        return reader(value).alt(lambda expected: f"{expected}, or null")

    return read


MAX_CONV_LAYERS = 64
"""More conv feature layers than any published model has (7): a larger spec is refused, not built."""
CONV_EXPECTED = "a list of (dim, kernel, stride) like '[(512, 10, 5)] + [(512, 3, 2)] * 4'"


def _evaluate(node: ast.AST, depth: int = 0) -> Any:
    """The value of a conv spec's expression: int constants, tuples, lists, ``+`` and small ``*``."""
    if depth > 16:
        raise ValueError("expression nested too deeply")
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, depth + 1)
    if isinstance(node, ast.Constant) and _is_int(node.value):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        if len(node.elts) > MAX_CONV_LAYERS:
            raise ValueError(f"more than {MAX_CONV_LAYERS} items")
        items = [_evaluate(item, depth + 1) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left, right = _evaluate(node.left, depth + 1), _evaluate(node.right, depth + 1)
        adding = isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list)
        if adding and len(left) + len(right) <= MAX_CONV_LAYERS:
            return left + right
        repeating = isinstance(node.op, ast.Mult) and isinstance(left, list) and _is_int(right)
        if repeating and 0 <= right <= MAX_CONV_LAYERS and len(left) * right <= MAX_CONV_LAYERS:
            return left * right
        raise ValueError(f"the list would be longer than {MAX_CONV_LAYERS} layers or is not a list")
    raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")


def conv_layers(value: object) -> Result[Any, str]:
    """``"[(512, 10, 5)] + [(512, 3, 2)] * 4"`` -> ``((512, 10, 5), (512, 3, 2), ...)``, parsed with
    :mod:`ast` (never ``eval``-ed) and bounded (:data:`MAX_CONV_LAYERS`, sizes up to 65536)."""
    if not isinstance(value, str) or len(value) > 4096:
        return Failure(CONV_EXPECTED)
    try:
        parsed = _evaluate(ast.parse(value, mode="eval"))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        return Failure(f"{CONV_EXPECTED} ({error})")
    if (
        not isinstance(parsed, list)
        or not parsed
        or not all(
            isinstance(layer, tuple) and len(layer) == 3 and all(_is_int(v) and 0 < v <= 65536 for v in layer)
            for layer in parsed
        )
    ):
        return Failure(CONV_EXPECTED)
    return Success(tuple((layer[0], layer[1], layer[2]) for layer in parsed))


def strides(value: object) -> Result[Any, str]:
    """A list of 1 to 16 positive strides (a codec's ``ratios``/``encoder_rates``), as a list of ints."""
    expected = "a list of 1 to 16 strides (positive integers)"
    if not isinstance(value, list | tuple) or not 0 < len(value) <= 16:
        return Failure(expected)
    if not all(_is_int(v) and 0 < v <= 4096 for v in value):
        return Failure(expected)
    return Success([int(v) for v in value])


def text(value: object) -> Result[Any, str]:
    """Any string."""
    return Success(value) if isinstance(value, str) else Failure("a string")


Relation: TypeAlias = Callable[[Any, Mapping[str, Any]], str | None]
"""A field's value against the other values of its section: ``None`` where it fits, else what it must be."""


def divides(width: str) -> Relation:
    """The value must divide the section's field ``width`` (attention heads: transformers splits the
    width among them, and fails to build otherwise)."""

    def fits(value: Any, values: Mapping[str, Any]) -> str | None:
        found = values.get(width)
        if not _is_int(found) or not _is_int(value) or value == 0 or found % value == 0:
            return None
        return f"a divisor of {width} ({found})"

    return fits


def allowed_where(field: str, value: object, allowed: tuple[Any, ...], reason: str) -> Relation:
    """The value must be one of ``allowed`` where the section's ``field`` is ``value`` (a
    :class:`Checked` that holds only in that variant: an adapter's activation, where the layers have
    adapters); elsewhere any value fits (the variant does not use it)."""

    def fits(found: Any, values: Mapping[str, Any]) -> str | None:
        if values.get(field) != value or found in allowed:
            return None
        return f"{' or '.join(map(repr, allowed))} where {field} is {value!r}: {reason}"

    return fits


@attrs.frozen
class Translated:
    """``source`` is read by ``read`` and becomes ``target`` (``None``: used by the family's derivation).
    ``fits``: how it must relate to the section's other values (:func:`divides`), checked once all are read."""

    source: str
    read: Reader
    target: str | None = None
    default: Any = REQUIRED
    fits: Relation | None = None


@attrs.frozen
class Checked:
    """``source`` must read as one of ``allowed`` (by ``read``): the target represents nothing else."""

    source: str
    allowed: tuple[Any, ...]
    reason: str
    default: Any
    read: Reader = boolean


@attrs.frozen
class Decided:
    """``source`` picks a variant that the family's rules handle (refused by the plan where unsupported)."""

    source: str
    reason: str


@attrs.frozen
class Ignored:
    """``source`` is deliberately not carried over."""

    source: str
    reason: str


@attrs.frozen
class Composite:
    """One source field <-> several target fields: ``source`` is read by ``read`` and becomes the
    keyword arguments ``forward(value)``; the way back, ``backward(config)`` is its value again (a
    conv spec string <-> ``conv_dim``/``conv_kernel``/``conv_stride``). Written once, read both ways."""

    source: str
    read: Reader
    forward: Callable[[Any], Mapping[str, Any]]
    backward: Callable[[Any], Any]
    default: Any = REQUIRED


@attrs.frozen
class Derived:
    """``source`` is what the target derives from other fields of the section instead of reading it
    (DAC's decoder strides: the encoder's reversed). Read by ``read``, it must equal
    ``derive(values)`` (the other fields' source values), or be ``None`` where the original derives
    it too; else it is refused, naming what it must be. The way back writes ``derive`` of the values
    read back. Written once, read both ways."""

    source: str
    read: Reader
    derive: Callable[[Mapping[str, Any]], Any]
    reason: str
    default: Any = REQUIRED


@attrs.frozen
class Joint:
    """Several source fields <-> several target fields: ``source`` is read by ``read`` (as a
    :class:`Translated` row with no target), the others it uses by their own rows; once the section
    is read, ``forward(values)`` gives the keyword arguments, and the way back ``backward(config)``
    gives the source values of all of them again (data2vec's positional convs: ``conv_pos`` and
    ``pos_conv_depth`` <-> ``num_conv_pos_embeddings`` and ``conv_pos_kernel_size``). Written once,
    read both ways."""

    source: str
    read: Reader
    forward: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    backward: Callable[[Any], Mapping[str, Any]]
    default: Any = REQUIRED


Field: TypeAlias = Translated | Checked | Decided | Ignored | Composite | Derived | Joint


@attrs.frozen
class IgnoredField:
    """A field of the file that the conversion does not carry over, with its value and why."""

    section: str
    name: str
    value: str
    reason: str


UNRECOGNISED: Final = "not a field wmap knows for this family (ignored)"


@attrs.frozen
class Translation:
    """What :func:`translate` read: typed values by source name, target keyword arguments, and the
    fields left behind."""

    values: Mapping[str, Any]
    kwargs: Mapping[str, Any]
    ignored: tuple[IgnoredField, ...]


@attrs.frozen
class ConfigTable:
    """The fields of one section of an original's config (e.g. fairseq's ``cfg.model``)."""

    section: str
    fields: tuple[Field, ...]

    def names(self) -> frozenset[str]:
        """Every field the table accounts for."""
        return frozenset(f.source for f in self.fields)

    def __attrs_post_init__(self) -> None:
        seen: set[str] = set()
        for f in self.fields:
            if f.source in seen:
                raise ValueError(f"{self.section}: field {f.source!r} listed twice")
            seen.add(f.source)


MISSING: Final = object()


def get(container: object, name: str, default: Any = MISSING) -> Any:
    """``container[name]`` or ``container.name``, whichever the container supports; never raises."""
    if container is None:
        return default
    try:
        if isinstance(container, Mapping):
            return container.get(name, default)
        return vars(container).get(name, default) if hasattr(container, "__dict__") else default
    except Exception:  # an omegaconf value that cannot be read (e.g. a broken interpolation)
        return default


def field_names(container: object) -> tuple[str, ...]:
    """The field names a config section holds (empty for anything that is not a section)."""
    try:
        if isinstance(container, Mapping):  # plain containers and omegaconf's DictConfig
            return tuple(str(k) for k in container)
        if hasattr(container, "__dict__") and not isinstance(container, type):
            return tuple(vars(container))
    except Exception:
        return ()
    return ()


def _bad(table: ConfigTable, name: str, expected: str, value: object) -> BadConfig:
    return BadConfig(table.section, name, expected, shown(value))


def translate(table: ConfigTable, container: object, *, report_unknown: bool = True) -> Result[Translation, BadConfig]:
    """Read ``container`` against ``table``: typed values, keyword arguments, ignored fields. An absent
    section (``None``) is an error naming where it was looked for, never a config of every default.

    ``report_unknown``: list the container's fields the table does not know as
    ignored (off for sections that mix in unrelated fields, e.g. fairseq's old ``args``).
    """
    if container is None:  # not "every default": a section looked for where the file does not keep it
        expected = f"the checkpoint's {table.section} section (looked for there; pass --config to give the config)"
        return Failure(BadConfig(table.section, "section", expected, "absent"))
    values: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    ignored: list[IgnoredField] = []
    bad: list[BadConfig] = []  # every bad field is reported, not only the first
    present = field_names(container)
    for f in table.fields:
        raw = get(container, f.source)
        if isinstance(f, Ignored | Decided):
            if raw is not MISSING and isinstance(f, Ignored):
                ignored.append(IgnoredField(table.section, f.source, shown(raw), f.reason))
            if raw is not MISSING:
                values[f.source] = raw
            continue
        if raw is MISSING and f.default is REQUIRED:
            bad.append(BadConfig(table.section, f.source, "a value (the field is required)", "missing"))
            continue
        read = f.read(f.default if raw is MISSING else raw)  # a default is read as a value would be
        if isinstance(read, Failure):
            bad.append(_bad(table, f.source, read.failure(), raw))
            continue
        values[f.source] = read.unwrap()
        if isinstance(f, Checked) and values[f.source] not in f.allowed:
            allowed = " or ".join(map(repr, f.allowed))
            bad.append(_bad(table, f.source, f"{allowed}: {f.reason}", values[f.source]))
            continue
        if isinstance(f, Translated) and f.target is not None:
            kwargs[f.target] = values[f.source]
        if isinstance(f, Composite):
            kwargs.update(f.forward(values[f.source]))
    bad += _underived(table, values)
    if bad:
        return Failure(attrs.evolve(bad[0], others=tuple(bad[1:])))
    kwargs.update(kwargs_of((f for f in table.fields if isinstance(f, Joint)), values))
    known = table.names() if report_unknown else frozenset(present)
    ignored += [
        IgnoredField(table.section, name, shown(get(container, name)), UNRECOGNISED)
        for name in present
        if name not in known and not name.startswith("_")
    ]
    return Success(Translation(values, kwargs, tuple(ignored)))


def _underived(table: ConfigTable, values: Mapping[str, Any]) -> list[BadConfig]:
    """The :class:`Derived` fields that say otherwise than what they derive from, and the
    :class:`Translated` ones that do not fit the others (those whose inputs were themselves bad are
    not judged)."""
    bad: list[BadConfig] = []
    for f in table.fields:
        if isinstance(f, Translated) and f.fits is not None and f.source in values:
            wrong = f.fits(values[f.source], values)
            if wrong is not None:
                bad.append(_bad(table, f.source, wrong, values[f.source]))
        if not isinstance(f, Derived) or values.get(f.source) is None:
            continue
        try:
            expected = f.derive(values)
        except (KeyError, TypeError, ValueError):
            continue
        if values[f.source] != expected:
            bad.append(_bad(table, f.source, f"{shown(expected)} ({f.reason})", values[f.source]))
    return bad


def translate_each(
    sections: Iterable[tuple[ConfigTable, object]], *, report_unknown: bool = True
) -> Result[tuple[Translation, ...], BadConfig]:
    """Several sections, each by its table (:func:`translate`): every translation, or every bad field
    of all of them in one error."""
    done: list[Translation] = []
    bad: list[BadConfig] = []
    for table, container in sections:
        result = translate(table, container, report_unknown=report_unknown)
        if isinstance(result, Success):
            done.append(result.unwrap())
        else:
            bad.append(result.failure())
    if bad:
        others = tuple(b for first in bad for b in (first, *first.others))
        return Failure(attrs.evolve(others[0], others=others[1:]))
    return Success(tuple(done))


def left_behind(read: Iterable[Translation]) -> tuple[IgnoredField, ...]:
    """The fields several translations left behind, section by section (what a preview lists)."""
    return tuple(field for section in read for field in section.ignored)


SectionReader: TypeAlias = Callable[[Mapping[str, Any], ConfigTable], Result[Translation, BadConfig]]
"""(a checkpoint's metadata, a table) -> the family's config section read with the table; where the
section sits is the family's (:func:`section_at`; fairseq's ``cfg.model`` or ``args``:
:func:`wmap.fairseq.pre_trained`)."""


def section_at(*path: str) -> SectionReader:
    """The section at ``path`` in a checkpoint's metadata (``"cfg"``; ``"Config", "distiller"``), read
    with a table; where the file has none, the error names the table's section (:func:`translate`)."""
    return partial(_read_at, path)


def _read_at(path: tuple[str, ...], meta: Mapping[str, Any], table: ConfigTable) -> Result[Translation, BadConfig]:
    found: object = meta
    for name in path:
        found = get(found, name, None)
    return translate(table, found)


def kwargs_of(fields: Iterable[Field], read: Translation | Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``fields`` (some of the rows of the table ``read`` was read by, or its
    values) make: for a section whose fields go to two target configs (fairseq's ``cfg.model``: an
    encoder's adapter and a decoder)."""
    values = read.values if isinstance(read, Translation) else read
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f.source not in values:
            continue
        if isinstance(f, Translated) and f.target is not None:
            kwargs[f.target] = values[f.source]
        elif isinstance(f, Composite):
            kwargs.update(f.forward(values[f.source]))
        elif isinstance(f, Joint):
            kwargs.update(f.forward(values))
    return kwargs


def inverse(fields: Iterable[Field]) -> tuple[Translated, ...]:
    """A forward table's translated fields the other way: each ``target`` read back as its ``source``,
    by the same reader (the way back's table names a field once, where the forward one does)."""
    return tuple(
        Translated(f.target, f.read.inverted() if isinstance(f.read, ValueMap) else f.read, f.source)
        for f in fields
        if isinstance(f, Translated) and f.target
    )


def values_back(fields: Iterable[Field], config: object) -> dict[str, Any]:
    """The source-side values of a forward table's translated fields, read from ``config`` (a
    transformers config): each ``target`` as its ``source``, a :class:`ValueMap`'s value mapped back
    (a value outside the map is kept as it is: the original's own reader names it)."""
    fields = tuple(fields)
    values: dict[str, Any] = {}
    for f in inverse(fields):
        if not hasattr(config, f.source):
            continue
        raw = getattr(config, f.source)
        values[str(f.target)] = f.read(raw).value_or(raw) if isinstance(f.read, ValueMap) else raw
    for composite in (f for f in fields if isinstance(f, Composite)):
        try:
            values[composite.source] = composite.backward(config)
        except (AttributeError, TypeError, ValueError):  # a config without those fields: the original's default
            continue
    for joint in (f for f in fields if isinstance(f, Joint)):
        try:
            values.update(joint.backward(config))
        except (AttributeError, TypeError, ValueError):  # a config without those fields: the original's defaults
            continue
    for derived in (f for f in fields if isinstance(f, Derived)):
        try:
            values[derived.source] = derived.derive(values)
        except (KeyError, TypeError, ValueError):  # derived from fields the config lacks: the original derives it
            continue
    return values


def _conv_kwargs(layers: tuple[tuple[int, int, int], ...]) -> dict[str, Any]:
    return {
        "conv_dim": [c[0] for c in layers],
        "conv_kernel": [c[1] for c in layers],
        "conv_stride": [c[2] for c in layers],
    }


def _conv_spec(config: Any) -> str:
    layers = zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=True)
    return repr([tuple(int(n) for n in layer) for layer in layers])


def conv_spec(source: str, default: Any = REQUIRED) -> Composite:
    """A conv feature extractor's spec (``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``: fairseq's
    ``conv_feature_layers``, s3prl's, data2vec 2.0's) <-> transformers' ``conv_dim``, ``conv_kernel`` and
    ``conv_stride``, read with :func:`conv_layers` and written back as the list it expands to."""
    return Composite(source, conv_layers, _conv_kwargs, _conv_spec, default)


def fixed_back(fields: Iterable[Field]) -> dict[str, Any]:
    """A forward table's checked fields that allow one value, as that value: what the way back must
    spell out where the original's default is another (a conformer's ``layer_type``)."""
    return {f.source: f.allowed[0] for f in fields if isinstance(f, Checked) and len(f.allowed) == 1}


def ignore_all(names: Iterable[str], reason: str) -> tuple[Ignored, ...]:
    """Several fields ignored for one reason."""
    return tuple(Ignored(name, reason) for name in names)
