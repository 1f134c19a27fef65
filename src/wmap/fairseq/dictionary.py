"""fairseq's label dictionary as inert data: read from a pickled ``task_state`` or a ``dict.*.txt`` file.

Fine-tuned fairseq CTC checkpoints keep their output vocabulary as a pickled
``fairseq.data.dictionary.Dictionary`` in ``task_state``; HuBERT keeps its
label dictionaries there too. :class:`Dictionary` stands in for that class
while a checkpoint is unpickled (see :mod:`wmap.io`): it takes the saved
fields, checks each one's type, keeps nothing else, and never runs fairseq code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

FAIRSEQ_GLOBAL: Final = "fairseq.data.dictionary.Dictionary"
"""The global name fairseq pickles its dictionaries under."""

SPECIALS: Final = ("<s>", "<pad>", "</s>", "<unk>")
"""fairseq's special words, in the order a new ``Dictionary`` adds them (bos, pad, eos, unk)."""

MAX_SYMBOLS: Final = 10_000_000
"""Beyond any real vocabulary: a larger one is refused as corrupt."""


class DictionaryError(ValueError):
    """The saved dictionary's fields are not what fairseq writes."""


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and len(value) <= MAX_SYMBOLS and all(type(s) is str for s in value)


def _is_int_list(value: object) -> bool:
    return isinstance(value, list) and all(type(c) is int for c in value)


@attrs.frozen(getstate_setstate=False)
class Dictionary:
    """The symbols of a fairseq dictionary, in index order, and its special words.

    ``symbols[i]`` is the label of output ``i``; ``count`` the training counts
    fairseq kept (informative only).
    """

    symbols: tuple[str, ...]
    count: tuple[int, ...] = ()
    bos_word: str = "<s>"
    pad_word: str = "<pad>"
    eos_word: str = "</s>"
    unk_word: str = "<unk>"

    @property
    def indices(self) -> dict[str, int]:
        """Symbol -> index, as fairseq's ``Dictionary.indices`` (the first index of a repeated symbol)."""
        out: dict[str, int] = {}
        for index, symbol in enumerate(self.symbols):
            out.setdefault(symbol, index)
        return out

    def index(self, word: str) -> int | None:
        """The index of ``word``, if present."""
        return self.indices.get(word)

    def __setstate__(self, state: object) -> None:
        """Build from the ``__dict__`` fairseq pickled (called by the unpickler, never by fairseq code)."""
        made = from_saved_fields(state)
        for name in ("symbols", "count", "bos_word", "pad_word", "eos_word", "unk_word"):
            object.__setattr__(self, name, getattr(made, name))


def from_saved_fields(state: object) -> Dictionary:
    """A :class:`Dictionary` from the fields of a pickled fairseq ``Dictionary``; checks every one used."""
    if not isinstance(state, Mapping):
        raise DictionaryError(f"{FAIRSEQ_GLOBAL}: saved state is a {type(state).__name__}, expected a dict of fields")
    symbols = state.get("symbols")
    if not _is_str_list(symbols):
        raise DictionaryError(f"{FAIRSEQ_GLOBAL}: 'symbols' is not a list of strings")
    count = state.get("count", [])
    if not _is_int_list(count):
        raise DictionaryError(f"{FAIRSEQ_GLOBAL}: 'count' is not a list of integers")
    words: dict[str, str] = {}
    for name, default in zip(("bos_word", "pad_word", "eos_word", "unk_word"), SPECIALS, strict=True):
        value = state.get(name, default)
        if type(value) is not str:
            raise DictionaryError(f"{FAIRSEQ_GLOBAL}: {name!r} is not a string")
        words[name] = value
    assert isinstance(symbols, list) and isinstance(count, list)
    return Dictionary(tuple(symbols), tuple(count), **words)


_COUNT = re.compile(r"-?[0-9]{1,18}")
"""A count as fairseq writes it (ASCII digits; ``--5`` or ``²`` is no count)."""


def parse_dict_file(text: str, where: str) -> Dictionary:
    """A fairseq ``dict.*.txt`` (``symbol count`` per line, as ``Dictionary.load`` reads it).

    The four special words come first, as a new fairseq ``Dictionary`` has them;
    a line may end in ``#fairseq:overwrite`` (the symbol may repeat a special).
    """
    symbols = list(SPECIALS)
    counts = [1, 1, 1, 1]
    seen = set(symbols)  # a set: a list's membership test made a 100,000-symbol file take minutes
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line:
            continue
        overwrite = line.endswith(" #fairseq:overwrite")
        if overwrite:
            line = line[: -len(" #fairseq:overwrite")]
        symbol, _, count = line.rpartition(" ")
        if not symbol or not _COUNT.fullmatch(count):
            raise DictionaryError(f"{where}:{number}: expected '<symbol> <count>', found {raw[:60]!r}")
        if symbol in seen and not overwrite:
            raise DictionaryError(f"{where}:{number}: duplicate symbol {symbol!r} (fairseq needs #fairseq:overwrite)")
        symbols.append(symbol)
        seen.add(symbol)
        counts.append(int(count))
        if len(symbols) > MAX_SYMBOLS:
            raise DictionaryError(f"{where}: more than {MAX_SYMBOLS} symbols")
    return Dictionary(tuple(symbols), tuple(counts))


def saved_fields(dictionary: Dictionary) -> dict[str, Any]:
    """The ``__dict__`` fairseq pickles for ``dictionary`` (what ``Dictionary.load`` of its
    ``dict.*.txt`` would hold): written into an export's ``task_state`` so that fairseq and wmap read the
    vocabulary from the checkpoint itself, wherever it is moved."""
    indices: dict[str, int] = {}
    for index, symbol in enumerate(dictionary.symbols):
        indices[symbol] = index  # fairseq's add_symbol(overwrite=True) points a repeated symbol at its last index
    words = {
        "bos_word": dictionary.bos_word,
        "unk_word": dictionary.unk_word,
        "pad_word": dictionary.pad_word,
        "eos_word": dictionary.eos_word,
    }
    return {
        **words,
        "symbols": list(dictionary.symbols),
        "count": list(dictionary.count)
        if len(dictionary.count) == len(dictionary.symbols)
        else [1] * len(dictionary.symbols),
        "indices": indices,
        **{f"{name}_index": indices[words[f"{name}_word"]] for name in ("bos", "pad", "eos", "unk")},
        "nspecial": len(SPECIALS),
    }


def dict_file_text(dictionary: Dictionary) -> str:
    """The ``dict.*.txt`` fairseq's ``Dictionary.load`` reads back as ``dictionary``: a ``symbol
    count`` line per symbol after the four specials (:func:`parse_dict_file`'s inverse; counts of 1
    where the dictionary kept none)."""
    counts = dictionary.count if len(dictionary.count) == len(dictionary.symbols) else (1,) * len(dictionary.symbols)
    rows = zip(dictionary.symbols, counts, strict=True)
    return "".join(f"{symbol} {count}\n" for index, (symbol, count) in enumerate(rows) if index >= len(SPECIALS))


def find_in_task_state(meta: Mapping[str, Any], name: str = "target_dictionary") -> Dictionary | None:
    """The dictionary a fairseq task saved under ``task_state[name]``, if the checkpoint has one."""
    state = meta.get("task_state")
    found = state.get(name) if isinstance(state, Mapping) else None
    # a pickle can make the object without ever giving it its fields: such a one is no dictionary
    return found if isinstance(found, Dictionary) and hasattr(found, "symbols") else None


STAND_INS: Final[Mapping[str, type]] = {FAIRSEQ_GLOBAL: Dictionary}
"""What fairseq's trainer pickles beyond plain containers, read as inert data (global name ->
stand-in): the label dictionaries in ``task_state``. The fairseq families read with these
(:attr:`wmap.models.base.ModelSpec.stand_ins`); the stand-in keeps the fields and runs no fairseq code."""
