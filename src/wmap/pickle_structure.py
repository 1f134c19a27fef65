"""A pickle's structure as text, read without unpickling anything real (no torch, no class imported).

What a kept preview is keyed by (:mod:`wmap.preview_cache`): two pickles with the same structure
build the same objects, so a preview planned from one holds for the other. Every global the pickle
names is a stand-in (calling it records the call); a persistent id (a torch storage) is kept as
the tuple it is. Objects shared or cyclic are written once and referred back to, so sharing is part
of the structure and a pickle cannot expand beyond its own size.

A checkpoint's top-level entries that a family never reads (``bookkeeping``: a trainer's optimizer
history, its loop's state) are written with their numbers left out, so that another step of the
same run has the same structure; what they are made of (the classes they name, their keys and
strings, their shape) stays in it, and so does all that the family reads.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterable
from typing import Any, ClassVar

MAX_ITEMS = 2_000_000
"""Objects written at the most (a pickle of this size holds far fewer): beyond it, no structure."""
MAX_DEPTH = 200


class Unkeyable(Exception):
    """The pickle holds something this reading does not write down (or too much of it)."""


class _Global:
    """A global as the pickle names it: calling it (``REDUCE``, ``NEWOBJ``) records the call."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: object) -> _Built:
        return _Built(self.name, args)


class _Built:
    """What a pickle builds by calling a global: the global, its arguments, and what was set on it."""

    def __init__(self, name: str, args: tuple[object, ...]) -> None:
        self.name, self.args = name, args
        self.state: object = None
        self.items: list[object] = []

    def __setstate__(self, state: object) -> None:
        self.state = state

    def append(self, value: object) -> None:
        self.items.append(value)

    def extend(self, values: Iterable[object]) -> None:
        self.items.extend(values)

    def __setitem__(self, key: object, value: object) -> None:
        self.items.append((key, value))


_PYTHON_UNPICKLER: Any = pickle._Unpickler  # Python's: its opcodes can be replaced


class _Reader(_PYTHON_UNPICKLER):  # type: ignore[misc]
    """An unpickler whose globals are stand-ins: nothing is imported, no code runs."""

    dispatch: ClassVar[dict[int, Any]] = dict(_PYTHON_UNPICKLER.dispatch)

    def find_class(self, module: str, name: str) -> _Global:
        return _Global(f"{module}.{name}")

    def persistent_load(self, pid: object) -> object:
        return ("persistent id", pid)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_Built(getattr(cls, "name", "?"), tuple(args)))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(_Built(getattr(cls, "name", "?"), (*args, kwargs)))

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex


def structure(data: bytes, bookkeeping: frozenset[str] = frozenset()) -> str:
    """The structure of the pickle ``data`` as text; where its top level is a mapping, the entries named
    in ``bookkeeping`` are written last, each number only as "a number". Raises :class:`Unkeyable`."""
    try:
        return _written(_Reader(io.BytesIO(data)).load(), bookkeeping)
    except Unkeyable:
        raise
    except Exception as error:  # a pickle this reading cannot follow (or a number too long to write)
        raise Unkeyable(type(error).__name__) from error


def _written(loaded: object, bookkeeping: frozenset[str]) -> str:
    writer = _Writer()
    if isinstance(loaded, dict):
        read = [key for key in loaded if key not in bookkeeping]
        kept = [key for key in loaded if key in bookkeeping]
        writer.out.append(repr(list(loaded)))  # every entry's name, in order
        for key in read:
            writer.write(loaded[key], numbers=True)
        for key in kept:
            writer.write(loaded[key], numbers=False)
    else:
        writer.write(loaded, numbers=True)
    return "\n".join(writer.out)


class _Writer:
    """Objects as lines of text, depth first; an object met before is written as a reference to it."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.seen: dict[int, int] = {}  # by id: every object stays reachable from what is written

    def write(self, value: object, *, numbers: bool, depth: int = 0) -> None:
        if len(self.out) > MAX_ITEMS or depth > MAX_DEPTH:
            raise Unkeyable("too large or too deep")
        if value is None or isinstance(value, bool | str | bytes | bytearray):
            self.out.append(repr(value))
        elif isinstance(value, int | float | complex):
            self.out.append(repr(value) if numbers else "number")  # a meter's count turns from int to float
        elif isinstance(value, _Global):
            self.out.append(f"global {value.name}")
        elif isinstance(value, tuple | list | dict | set | frozenset | _Built):
            self._container(value, numbers=numbers, depth=depth)
        else:
            raise Unkeyable(type(value).__name__)

    def _container(self, value: Any, *, numbers: bool, depth: int) -> None:
        if id(value) in self.seen:
            self.out.append(f"same as {self.seen[id(value)]}")
            return
        self.seen[id(value)] = len(self.seen)
        if isinstance(value, set | frozenset):
            atoms = [v for v in value if v is None or isinstance(v, bool | str | bytes | int | float)]
            if len(atoms) != len(value):
                raise Unkeyable("a set of objects")
            self.out.append(f"{type(value).__name__} {sorted(map(repr, atoms))}")
            return
        if isinstance(value, dict):
            self.out.append(f"dict {len(value)}")
            children: list[object] = [part for pair in value.items() for part in pair]
        elif isinstance(value, _Built):
            self.out.append(f"built {value.name} {len(value.args)} {len(value.items)}")
            children = [*value.args, value.state, *value.items]
        else:
            self.out.append(f"{type(value).__name__} {len(value)}")
            children = list(value)
        for child in children:
            self.write(child, numbers=numbers, depth=depth + 1)
