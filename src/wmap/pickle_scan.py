"""Find, before unpickling, calls that would allocate memory the file does not hold.

torch's weights-only unpickler allows some callables that allocate from a small
argument: ``bytearray(10**9)``, ``torch.FloatStorage(10**9)``,
``torch.FloatTensor(10**9)``, a quantized tensor's ``size``. A few hundred bytes of
pickle can so take gigabytes before any check runs (torch's legacy format even
unpickles its "magic number" first). Such a class has one legitimate use in a
checkpoint: as the type tag of a persistent storage id, ``("storage",
torch.FloatStorage, key, location, numel)``, whose bytes are the file's own.

:func:`allocating_call` follows the pickle's opcodes with a symbolic stack (no
object is built, no code run; time linear in the pickle's length) and reports the
first such callable used any other way: a stream in, a name out.
"""

from __future__ import annotations

import pickletools
import re
from collections.abc import Iterator
from typing import IO

import attrs

ALLOCATING = re.compile(
    r"builtins\.bytearray"
    r"|torch\.(cuda\.|sparse\.)?\w+(Storage|Tensor)"
    r"|torch\.storage\.\w+"
    r"|torch\._utils\._rebuild_qtensor"
)
"""Globals that allocate from a small argument when called (the quantized rebuild allocates its
``size`` before it looks at the storage). ``torch.Tensor`` itself is left out: it is the type tag of
``_rebuild_from_type_v2`` for plain tensors with attributes, and what it allocates is uninitialised
(untouched pages, no resident memory)."""

_PERSISTENT_ID = frozenset({"BINPERSID", "PERSID"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_TUPLES = frozenset({"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE"})
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING"})


@attrs.frozen
class _Global:
    name: str


@attrs.frozen
class _Text:
    value: str


@attrs.frozen
class _Tuple:
    items: tuple[object, ...]


_MARK = object()
_OTHER = object()


def _allocating(symbol: object) -> str | None:
    if isinstance(symbol, _Global):
        return symbol.name if ALLOCATING.fullmatch(symbol.name) else None
    if isinstance(symbol, _Tuple):
        return next((found for item in symbol.items if (found := _allocating(item)) is not None), None)
    return None


def _pop(stack: list[object], opcode: pickletools.OpcodeInfo) -> list[object]:
    before = opcode.stack_before
    if pickletools.markobject in before:
        count = before.index(pickletools.markobject)
        mark = len(stack) - 1
        while mark >= 0 and stack[mark] is not _MARK:
            mark -= 1
        if mark < 0:  # no mark: a malformed pickle, which the real reader refuses
            popped = stack[:]
            stack.clear()
            return popped
        popped = stack[max(mark - count, 0) : mark] + stack[mark + 1 :]
        del stack[max(mark - count, 0) :]
        return popped
    count = min(len(before), len(stack))
    popped = stack[len(stack) - count :]
    del stack[len(stack) - count :]
    return popped


def _global(module: str, attribute: str) -> _Global:
    """Protocol 2 and older name the builtins module ``__builtin__``."""
    return _Global(f"{'builtins' if module == '__builtin__' else module}.{attribute}")


def _pushed(opcode: pickletools.OpcodeInfo, arg: object, popped: list[object], memo: dict[object, object]) -> object:
    name = opcode.name
    if name == "GLOBAL" and isinstance(arg, str):
        module, _, attribute = arg.partition(" ")
        return _global(module, attribute)
    if name == "STACK_GLOBAL":
        module, attribute = (p.value if isinstance(p, _Text) else "?" for p in popped[-2:])
        return _global(module, attribute)
    if name in _STRINGS and isinstance(arg, str):
        return _Text(arg)
    if name in _TUPLES:
        return _Tuple(tuple(popped))
    if name in _MEMO_GET:
        return memo.get(arg, _OTHER)
    return _OTHER


def _pickles(stream: IO[bytes], count: int) -> Iterator[tuple[pickletools.OpcodeInfo, object]]:
    """The opcodes of up to ``count`` pickles written one after another (torch's legacy format)."""
    for _ in range(count):
        ended = False
        for opcode, arg, _at in pickletools.genops(stream):
            ended = opcode.name == "STOP"
            yield opcode, arg
        if not ended:
            return


def allocating_call(stream: IO[bytes], *, pickles: int = 1) -> str | None:
    """The first allocating global (see :data:`ALLOCATING`) that the next ``pickles`` pickles of
    ``stream`` use other than as a persistent id's type tag; ``None`` if there is none.

    Raises ``ValueError`` for data that is not a pickle (the caller lets the real reader report it)."""
    stack: list[object] = []
    memo: dict[object, object] = {}
    for opcode, arg in _pickles(stream, pickles):
        name = opcode.name
        if name == "MARK":
            stack.append(_MARK)
            continue
        if name in _MEMO_PUT or name == "MEMOIZE":
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else _OTHER
            continue
        if name == "DUP":
            stack.append(stack[-1] if stack else _OTHER)
            continue
        popped = _pop(stack, opcode)
        if name not in _PERSISTENT_ID and name not in _TUPLES and name not in {"POP", "POP_MARK"}:
            found = next((f for item in popped if (f := _allocating(item)) is not None), None)
            if found is not None:
                return found
        if opcode.stack_after:
            stack.append(_pushed(opcode, arg, popped, memo))
    return None
