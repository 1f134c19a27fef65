"""A pickle's structure as text, read without unpickling anything real (no torch, no class imported).

What a kept preview is keyed by (:mod:`wmap.preview_cache`): two pickles with the same structure
build the same objects, so a preview planned from one holds for the other. Every global the pickle
names is a stand-in (calling it records the call); a persistent id (a torch storage) is kept as
the tuple it is. Objects shared or cyclic are written once and referred back to, so sharing is part
of the structure and a pickle cannot expand beyond its own size.

What a family never reads of a checkpoint (``unread``: dotted paths of mappings' entries from the
top, such as a trainer's optimizer history and its training settings, ``cfg.optimization``) is
written by its shape alone: its keys, kinds and lengths, with every other value standing as "value".
So another step of the same run, or another run of the same model with other training settings, has
the same structure; all that the family reads stays in it, value for value. What its preview only
shows is written by shape too, and read as values (:func:`values_at`) to be shown again.
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


def read(data: bytes) -> object:
    """The pickle ``data`` with every global a stand-in: nothing imported, no code run. Raises
    :class:`Unkeyable`."""
    try:
        return _Reader(io.BytesIO(data)).load()
    except Exception as error:  # a pickle this reading cannot follow
        raise Unkeyable(type(error).__name__) from error


def structure(data: bytes, unread: Iterable[str] = ()) -> str:
    """The structure of the pickle ``data`` as text (:func:`written`)."""
    return written(read(data), unread)


def split_path(path: str, dotted: Iterable[str] = ()) -> tuple[str, ...]:
    """A dotted path's keys; a top-level key that holds dots itself (``dotted``: audiocraft's ``xp.cfg``)
    is one key: ``xp.cfg.optim`` is ``("xp.cfg", "optim")``."""
    for name in dotted:
        if path == name or path.startswith(name + "."):
            return (name, *path[len(name) + 1 :].split(".")) if path != name else (name,)
    return tuple(path.split("."))


def written(loaded: object, unread: Iterable[str] = (), dotted: Iterable[str] = ()) -> str:
    """The structure of a pickle as :func:`read` gives it, as text, the entries at the dotted paths
    ``unread`` (:func:`split_path`, ``dotted`` the top-level keys with dots) by their shape alone.
    Raises :class:`Unkeyable`."""
    try:
        writer = _Writer(frozenset(split_path(path, tuple(dotted)) for path in unread))
        writer.write(loaded, ())
        return "\n".join(writer.out)
    except Unkeyable:
        raise
    except Exception as error:  # a number too long to write
        raise Unkeyable(type(error).__name__) from error


ATOMS = (type(None), bool, int, float, str)


def values_at(loaded: object, paths: Iterable[str]) -> dict[str, object]:
    """The values of a pickle as :func:`read` gives it at the dotted ``paths`` (mapping keys from the
    top) where it has them: each a plain value (``None``, a flag, a number, a string), else
    :class:`Unkeyable`."""
    found: dict[str, object] = {}
    for path in paths:
        value: object = loaded
        for name in path.split("."):
            value = value.get(name, _ABSENT) if isinstance(value, dict) else _ABSENT
        if value is _ABSENT:
            continue
        if not isinstance(value, ATOMS):
            raise Unkeyable(f"{path}: {type(value).__name__}")
        found[path] = value
    return found


_ABSENT = object()


class _Writer:
    """Objects as lines of text, depth first; an object met before is written as a reference to it.
    ``path``: the mapping keys from the top to what is written, ``None`` within what is unread (its
    shape alone); an object met unread and then read is written again, read."""

    def __init__(self, unread: frozenset[tuple[str, ...]]) -> None:
        self.unread = unread
        self.out: list[str] = []
        self.seen: dict[tuple[int, bool], int] = {}  # by id: every object stays reachable from the top

    def write(self, value: object, path: tuple[str, ...] | None, depth: int = 0) -> None:
        if len(self.out) > MAX_ITEMS or depth > MAX_DEPTH:
            raise Unkeyable("too large or too deep")
        if value is None or isinstance(value, bool | str | bytes | bytearray | int | float | complex):
            self.out.append(repr(value) if path is not None else "value")  # unread: a count turns int to float
        elif isinstance(value, _Global):
            self.out.append(f"global {value.name}")
        elif isinstance(value, tuple | list | dict | set | frozenset | _Built):
            self._container(value, path, depth)
        else:
            raise Unkeyable(type(value).__name__)

    def _container(self, value: Any, path: tuple[str, ...] | None, depth: int) -> None:
        memo = (id(value), path is None)
        if memo in self.seen:
            self.out.append(f"same as {self.seen[memo]}")
            return
        self.seen[memo] = len(self.seen)
        if isinstance(value, set | frozenset):
            atoms = [v for v in value if v is None or isinstance(v, bool | str | bytes | int | float)]
            if len(atoms) != len(value):
                raise Unkeyable("a set of objects")
            self.out.append(f"{type(value).__name__} {sorted(map(repr, atoms)) if path is not None else len(atoms)}")
            return
        if isinstance(value, dict):
            self.out.append(f"dict {len(value)}")
            for key, item in value.items():
                self.write(key, () if isinstance(key, str) else path, depth + 1)  # a name stays, read or not
                self.write(item, self._inside(path, key), depth + 1)
            return
        if isinstance(value, _Built):
            self.out.append(f"built {value.name} {len(value.args)} {len(value.items)}")
            children = [*value.args, value.state, *value.items]
        else:
            self.out.append(f"{type(value).__name__} {len(value)}")
            children = list(value)
        for child in children:
            self.write(child, None if path is None else (*path, "[]"), depth + 1)

    def _inside(self, path: tuple[str, ...] | None, key: object) -> tuple[str, ...] | None:
        """The path of a mapping's entry: ``None`` where it is unread."""
        if path is None:
            return None
        inner = (*path, key if isinstance(key, str) else "[]")
        return None if inner in self.unread else inner
