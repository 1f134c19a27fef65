"""Error values: one-line messages, and a failure that is unwrapped shows its message."""

from __future__ import annotations

import traceback

from returns.result import Failure

from wmap.errors import BadConfig, OutputRefused, UnknownModel, UnsafePickle


def test_an_unwrapped_failure_raises_from_the_error_and_shows_its_message() -> None:
    error = UnknownModel("nope", ("a", "b"))
    try:
        Failure(error).unwrap()
    except Exception as raised:
        assert raised.__cause__ is error
        shown = "".join(traceback.format_exception(raised))
        assert "unknown model 'nope'; known models: a, b" in shown
    else:  # pragma: no cover
        raise AssertionError("unwrap did not raise")


def test_messages_are_one_line_and_errors_compare_by_value() -> None:
    for error in (
        BadConfig("cfg", "dropout", "a number", "'abc'"),
        OutputRefused("/out", "already exists"),
        UnsafePickle("f.pt", "it refers to os.system", ("os.system",)),
    ):
        assert str(error) == error.message and "\n" not in error.message
    assert BadConfig("a", "b", "c", "d") == BadConfig("a", "b", "c", "d")
    assert "weights_only" not in UnsafePickle("f.pt", "x").message


def test_a_file_the_user_named_is_an_option_not_a_config_field() -> None:
    assert BadConfig("d.txt", "--dict", "a fairseq dictionary", "no such file").message.startswith(
        "d.txt: option '--dict'"
    )
    assert BadConfig("cfg", "dropout", "a number", "'abc'").message.startswith("cfg: config 'dropout'")
