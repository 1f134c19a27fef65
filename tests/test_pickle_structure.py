"""wmap.pickle_structure: a pickle's structure read with every class a stand-in; what a family never
reads (a trainer's bookkeeping and training settings) counts only by its shape."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from wmap.pickle_structure import Unkeyable, read, structure, values_at

BOOKKEEPING = frozenset({"optimizer_history", "extra_state"})


def _trainer_file(path: Path, *, updates: int = 1, lr: float = 1e-4, width: int = 4, **extra: object) -> bytes:
    """A torch zip shaped as a trainer's checkpoint; its ``data.pkl``."""
    torch.manual_seed(updates)
    saved = {
        "cfg": {"model": {"encoder_layers": 2, "dropout": 0.1}},
        "model": {"w": torch.randn(width, 3), "b": torch.zeros(width)},
        "optimizer_history": [{"optimizer_name": "adam", "num_updates": updates, "lr": lr}],
        "extra_state": {"train_iterator": {"epoch": 1, "iterations_in_epoch": updates}, **extra},
    }
    torch.save(saved, path)
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))


def test_another_step_of_a_run_has_the_same_structure_only_where_the_bookkeeping_is_named(tmp_path: Path) -> None:
    first = _trainer_file(tmp_path / "a.pt", updates=1, lr=1e-4)
    later = _trainer_file(tmp_path / "b.pt", updates=2, lr=9e-5)  # other values too: the tensors are records
    assert first != later
    assert structure(first, BOOKKEEPING) == structure(later, BOOKKEEPING)
    assert structure(first) != structure(later)  # the control: counted, the numbers differ


@pytest.mark.parametrize(
    ("base", "changed"),
    [({}, {"width": 5}), ({}, {"tag": "other"}), ({"tag": "run"}, {"tag": ["run", "again"]})],
    ids=["a tensor's shape", "a new bookkeeping entry", "a bookkeeping entry's shape"],
)
def test_what_the_family_reads_and_the_bookkeeping_shape_count(
    base: dict[str, Any], changed: dict[str, Any], tmp_path: Path
) -> None:
    first = _trainer_file(tmp_path / "a.pt", **base)
    other = _trainer_file(tmp_path / "b.pt", **changed)
    assert structure(first, BOOKKEEPING) != structure(other, BOOKKEEPING)


SETTINGS = {"cfg": {"model": {"layers": 2, "path": "/runs/a"}, "optimization": {"lr": [1e-4], "clip": None}}}


@pytest.mark.parametrize(
    ("changed", "same"),
    [
        ({"optimization": {"lr": [3e-5], "clip": 25.0}}, True),  # values of another kind too
        ({"optimization": {"lr": [3e-5, 1e-5], "clip": None}}, False),  # the shape counts
        ({"model": {"layers": 2, "path": "/runs/b"}}, True),  # an unread entry of a read section
        ({"model": {"layers": 3, "path": "/runs/a"}}, False),  # the control: read, value for value
    ],
    ids=["unread values", "unread shape", "an unread entry", "a read value"],
)
def test_an_unread_path_counts_by_its_shape_alone(changed: dict[str, Any], same: bool) -> None:
    unread = ("cfg.optimization", "cfg.model.path")
    other = {"cfg": {**SETTINGS["cfg"], **changed}}
    found = structure(pickle.dumps(SETTINGS, protocol=2), unread), structure(pickle.dumps(other, protocol=2), unread)
    assert (found[0] == found[1]) is same
    assert structure(pickle.dumps(SETTINGS, protocol=2)) != structure(pickle.dumps(other, protocol=2))


def test_what_is_met_unread_and_then_read_is_written_read() -> None:
    first, other = {"layers": 2}, {"layers": 3}  # each one object, met unread first, then read
    found = [structure(pickle.dumps({"a": shared, "b": shared}, protocol=2), ("a",)) for shared in (first, other)]
    assert found[0] != found[1] and found[0].splitlines()[-1] == "2"


def test_sharing_is_part_of_the_structure() -> None:
    shared = {"k": [1, 2]}
    same = pickle.dumps({"a": shared, "b": shared}, protocol=2)
    copies = pickle.dumps({"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}, protocol=2)
    assert structure(same) != structure(copies)
    looped: list[Any] = [1]
    looped.append(looped)
    assert "same as 0" in structure(pickle.dumps(looped, protocol=2))


class _Runs:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("ran",))


def test_nothing_is_imported_or_called(capsys: pytest.CaptureFixture[str]) -> None:
    found = structure(pickle.dumps({"x": _Runs(), "y": torch.nn.Identity}, protocol=2))
    assert "builtin__.print 1 0\n'ran'" in found and "global torch.nn.modules.linear.Identity" in found
    assert capsys.readouterr().out == ""


def test_what_cannot_be_written_down_has_no_structure() -> None:
    with pytest.raises(Unkeyable):
        structure(b"not a pickle")
    with pytest.raises(Unkeyable):
        structure(pickle.dumps({frozenset({(1, 2)})}, protocol=4))  # a set of objects: no order to write


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        max_leaves=20,
    )
)
def test_equal_values_have_equal_structures_and_pickling_again_keeps_it(value: Any) -> None:
    once = pickle.dumps(value, protocol=2)
    again = pickle.dumps(pickle.loads(once), protocol=4)
    assert structure(once) == structure(again)
    assert structure(once) == structure(io.BytesIO(once).getvalue())


def test_a_number_too_long_to_write_has_no_structure() -> None:
    with pytest.raises(Unkeyable):
        structure(pickle.dumps({"n": 10**5000}, protocol=2))


def test_values_at_paths_are_read_where_they_are_plain() -> None:
    loaded = read(pickle.dumps(SETTINGS, protocol=2))
    found = values_at(loaded, ("cfg.model.path", "cfg.model.absent", "cfg.nowhere.path"))
    assert found == {"cfg.model.path": "/runs/a"}
    with pytest.raises(Unkeyable):
        values_at(loaded, ("cfg.optimization",))  # not a plain value


def test_a_top_level_key_with_dots_is_one_key_of_an_unread_path() -> None:
    """audiocraft keeps its config under ``xp.cfg``: ``xp.cfg.optim`` names its ``optim`` section."""
    from wmap.pickle_structure import split_path, written

    assert split_path("xp.cfg.optim", ("xp.cfg",)) == ("xp.cfg", "optim")
    assert split_path("xp.cfg", ("xp.cfg",)) == ("xp.cfg",)
    assert split_path("cfg.model.data", ("xp.cfg",)) == ("cfg", "model", "data")
    run = {"xp.cfg": {"optim": {"lr": 0.1}, "transformer_lm": {"dim": 16}}}
    other = {"xp.cfg": {"optim": {"lr": 0.5}, "transformer_lm": {"dim": 16}}}
    unread = ("xp.cfg.optim",)
    assert written(run, unread, ("xp.cfg",)) == written(other, unread, ("xp.cfg",))
    assert written(run, unread) != written(other, unread)  # the control: without the key named, "xp" "cfg"
