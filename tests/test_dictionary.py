"""fairseq's dictionary as inert data: from a dict file, from pickled fields, refused when malformed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wmap.fairseq.dictionary import SPECIALS, Dictionary, DictionaryError, from_saved_fields, parse_dict_file


def test_a_dict_file_follows_the_four_specials() -> None:
    found = parse_dict_file("| 10\nE 5\nT 3\n", "dict.ltr.txt")
    assert found.symbols == (*SPECIALS, "|", "E", "T") and found.count[-3:] == (10, 5, 3)
    assert found.indices["E"] == 5 and found.index("missing") is None


@pytest.mark.parametrize("text", ["E\n", "E five\n", "E 1\nE 1\n"])
def test_a_malformed_dict_file_names_the_line(text: str) -> None:
    with pytest.raises(DictionaryError, match=r"dict.txt:\d"):
        parse_dict_file(text, "dict.txt")


def test_a_repeated_symbol_needs_the_overwrite_flag() -> None:
    assert parse_dict_file("<unk> 1 #fairseq:overwrite\n", "d").symbols[-1] == "<unk>"


def test_saved_fields_are_type_checked_and_nothing_else_is_kept() -> None:
    fields = {"symbols": ["<s>", "<pad>", "</s>", "<unk>", "a"], "count": [1, 1, 1, 1, 9], "indices": {}, "x": object()}
    made = from_saved_fields(fields)
    assert made == Dictionary(("<s>", "<pad>", "</s>", "<unk>", "a"), (1, 1, 1, 1, 9))
    assert not hasattr(made, "x")
    for bad in ({"symbols": "abc"}, {"symbols": [1, 2]}, {"symbols": ["a"], "count": ["x"]}, [1, 2]):
        with pytest.raises(DictionaryError):
            from_saved_fields(bad)


def test_a_stand_in_never_given_its_fields_is_no_dictionary() -> None:
    from wmap.fairseq.dictionary import find_in_task_state

    empty = Dictionary.__new__(Dictionary)  # what a pickle that skips BUILD leaves
    assert find_in_task_state({"task_state": {"target_dictionary": empty}}) is None
    made = parse_dict_file("A 1\n", "d")
    assert find_in_task_state({"task_state": {"target_dictionary": made}}) is made


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=4),
        unique=True,
        max_size=20,
    ).filter(lambda symbols: not set(symbols) & {"<s>", "<pad>", "</s>", "<unk>"}),
    st.integers(0, 10**6),
)
def test_the_dict_file_written_reads_back_as_the_dictionary(symbols: list[str], count: int) -> None:
    """dict_file_text is parse_dict_file's inverse: the export's dict.ltr.txt reads back as the
    dictionary it carries in task_state."""
    from wmap.fairseq.dictionary import dict_file_text

    text = "".join(f"{symbol} {count}\n" for symbol in symbols)
    read = parse_dict_file(text, "dict.ltr.txt")
    assert dict_file_text(read) == text
    assert parse_dict_file(dict_file_text(read), "again") == read
