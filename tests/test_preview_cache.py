"""wmap.preview_cache: a repeated preview is shown again without importing torch, and only while
nothing it depends on has changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import torch

from tests.helpers import reference_checkpoint
from tests.test_cli import wmap
from wmap import preview_cache

PROBE = """
import sys
from wmap.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules)), file=sys.stderr)
sys.exit(code)
"""


def _preview_process(*args: str) -> tuple[int, str, list[str]]:
    """``wmap preview ARGS`` as a fresh process: its exit code, output, and which of torch and
    transformers it imported."""
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + PROBE, "preview", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return done.returncode, done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def test_a_repeated_preview_is_the_same_and_imports_neither_torch_nor_transformers(tmp_path: Path) -> None:
    checkpoint = reference_checkpoint(tmp_path / "encodec.pt", "encodec_32khz")
    first = _preview_process("encodec_32khz", str(checkpoint))
    again = _preview_process("encodec_32khz", str(checkpoint))
    assert first[2] == ["torch", "transformers"] and again[2] == []  # the control: the first one planned
    assert again[:2] == first[:2] and first[0] == 0 and "applied" in first[1]
    fresh = _preview_process("encodec_32khz", str(checkpoint), "--no-cache")
    assert fresh[2] == ["torch", "transformers"] and fresh[:2] == first[:2]


def test_a_file_of_the_same_structure_elsewhere_is_shown_again_naming_itself(tmp_path: Path) -> None:
    checkpoint = reference_checkpoint(tmp_path / "encodec.pt", "encodec_32khz")
    state = torch.load(checkpoint, weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "another.pt")  # another fine-tune, elsewhere
    first = _preview_process("encodec_32khz", str(checkpoint))
    other = _preview_process("encodec_32khz", str(tmp_path / "another.pt"))
    fresh = _preview_process("encodec_32khz", str(tmp_path / "another.pt"), "--no-cache")
    assert first[2] == ["torch", "transformers"] and other[2] == []  # shown again: nothing imported
    assert other[:2] == fresh[:2] and str(tmp_path / "another.pt") in other[1] and str(checkpoint) not in other[1]
    assert other[1].replace("another.pt", "encodec.pt") == first[1]  # the control: all else the same (names alike long)
    as_json = [_preview_process("encodec_32khz", str(path), "--json") for path in (checkpoint, tmp_path / "another.pt")]
    assert as_json[1][2] == [] and as_json[1][:2] == as_json[0][:2]


def test_what_the_preview_depends_on_is_in_the_key(tmp_path: Path) -> None:
    """The checkpoint's names, shapes and metadata, the config file, how it is shown, the family; not
    the tensors' values (a fine-tune of the same model previews the same)."""
    checkpoint = reference_checkpoint(tmp_path / "encodec.pt", "encodec_32khz")
    shipped = ("encodec_32khz", "encodec_48khz")
    shown = {"json": False}

    def key(path: Path = checkpoint, config: str | None = None, **overrides: object) -> preview_cache.Key | None:
        return preview_cache.key(
            str(overrides.get("family", "encodec_32khz")),
            str(path),
            config,
            {**shown, **overrides.get("shown", {})},  # type: ignore[dict-item]
            shipped,
        )

    base = key()
    assert base is not None and key() == base
    state = torch.load(checkpoint, weights_only=True)
    torch.save({k: v + 1 for k, v in state.items()}, tmp_path / "tuned.pt")
    assert key(tmp_path / "tuned.pt") == base  # another path: its summary line is shown as it is named
    os.replace(tmp_path / "tuned.pt", checkpoint)
    assert key() == base  # same names, shapes and metadata: the same preview
    torch.save({**state, "extra.weight": torch.zeros(2)}, checkpoint)
    assert key() not in (None, base)
    torch.save({k: v.half() for k, v in state.items()}, checkpoint)
    assert key() not in (None, base)
    torch.save(state, checkpoint)
    (tmp_path / "config.json").write_text("{}")
    assert key(config=str(tmp_path / "config.json")) not in (None, base)
    assert key(shown={"json": True}) != base
    assert key(family="encodec_48khz") != base
    assert key(family="my_module:SPEC") is None  # a family wmap does not ship: its code is not known here
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")  # not a zip: its structure is not read here
    assert key(tmp_path / "legacy.pt") is None


def test_a_folder_counts_by_its_files_and_a_folder_beside_the_checkpoint_counts_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder (MusicGen's, the T5 named beside it): each weights file by its structure (not its
    values), any other file by its bytes (by its size and time beyond what is read whole: the bound is
    made small here, so that a "big" file is small), hidden ones not at all; a subfolder is not keyed."""
    from safetensors.torch import save_file

    folder = tmp_path / "t5"
    folder.mkdir()
    save_file({"w": torch.zeros(2, 3)}, folder / "model.safetensors")
    (folder / "config.json").write_text('{"d_model": 3}')
    checkpoint = reference_checkpoint(tmp_path / "lm.pt", "encodec_32khz")

    def key(path: Path = folder, beside: Path | None = None) -> str | None:
        found = preview_cache.key(
            "musicgen", str(path), None, {}, ("musicgen",), beside=None if beside is None else str(beside)
        )
        return None if found is None else found.digest

    base = key()
    assert base is not None and key() == base
    save_file({"w": torch.ones(2, 3)}, folder / "model.safetensors")  # other values, the same structure
    (folder / ".cache").write_text("a hub download's bookkeeping")
    assert key() == base
    (folder / "config.json").write_text('{"d_model": 4}')
    assert key() not in (None, base)
    with_t5 = key(checkpoint, folder)
    assert with_t5 is not None and with_t5 != key(checkpoint)  # what lies beside counts
    (folder / "config.json").write_text('{"d_model": 3}')
    assert key(checkpoint, folder) not in (None, with_t5) and key() == base
    monkeypatch.setattr(preview_cache, "MAX_STRUCTURE", 256)  # the folder's own files stay below it
    (folder / "tf_model.h5").write_bytes(b"h" * 300)  # beyond what is read whole: by its size and time
    with_big = key()
    assert with_big not in (None, base) and key() == with_big
    (folder / "tf_model.h5").write_bytes(b"H" * 301)
    assert key() not in (None, with_big)
    (folder / "sub").mkdir()
    assert key() is None


def test_a_kept_not_clean_plan_exits_1_again_and_a_broken_entry_is_planned_again(tmp_path: Path) -> None:
    checkpoint = tmp_path / "odd.pt"
    state = torch.load(reference_checkpoint(tmp_path / "e.pt", "encodec_32khz"), weights_only=True)
    torch.save({**state, "mystery.weight": torch.zeros(3)}, checkpoint)
    first = wmap("preview", "encodec_32khz", str(checkpoint))
    assert first.returncode == 1 and "mystery.weight" in first.stdout
    entries = list(Path(os.environ["WMAP_CACHE_DIR"]).glob("*.json"))
    assert len(entries) == 1
    again = wmap("preview", "encodec_32khz", str(checkpoint))
    assert (again.returncode, again.stdout) == (1, first.stdout)
    entries[0].write_text("{not json")
    planned = wmap("preview", "encodec_32khz", str(checkpoint))
    assert (planned.returncode, planned.stdout) == (1, first.stdout)
    assert json.loads(entries[0].read_text())["code"] == 1  # kept again, whole


def test_an_error_is_not_kept_and_an_unwritable_cache_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not a zip")
    assert wmap("preview", "encodec_32khz", str(tmp_path / "bad.pt")).returncode == 2
    assert not list(Path(os.environ["WMAP_CACHE_DIR"]).glob("*.json"))
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("WMAP_CACHE_DIR", str(blocked / "cache"))  # under a file: cannot be made
    result = wmap("preview", "encodec_48khz")
    assert result.returncode == 0 and "applied" in result.stdout


def test_an_entry_whose_displayed_rows_are_not_there_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WMAP_CACHE_DIR", str(tmp_path))
    row = ("fairseq cfg.model", "data", "'/runs/a'", "the training data directory")
    as_text = preview_cache.Entry("", 0, ("clean", "green", ""), "", (row,), ((0, "cfg.model.data"),))
    as_json = preview_cache.Entry(json.dumps(preview_cache.placeholder(0)), 0, None, "", (), ((0, "cfg.model.data"),))
    for name, entry in (("text", as_text), ("json", as_json)):
        preview_cache.store(name, entry)
        assert preview_cache.load(name) == entry
    preview_cache.store("text", attrs.evolve(as_text, displayed=((1, "cfg.model.data"),)))  # no row 1
    preview_cache.store("json", attrs.evolve(as_json, text="{}"))  # no placeholder
    assert preview_cache.load("text") is None and preview_cache.load("json") is None


def test_a_displayed_value_shown_by_more_than_one_row_is_not_kept() -> None:
    from wmap.config_fields import IgnoredField
    from wmap.preview_cache import displayed_rows

    rows = [IgnoredField("cfg.model", "data", "'/runs/a'", "why"), IgnoredField("cfg.task", "data", "'/runs/a'", "why")]
    values = {"cfg.model.data": "/runs/a"}
    assert displayed_rows(rows[:1], values) == ((0, "cfg.model.data"),)
    assert displayed_rows(rows, values) is None
    assert displayed_rows(rows[:1], {"cfg.model.data": "/runs/b"}) == ()  # not shown: nothing to read again
