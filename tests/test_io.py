"""Bad input never crashes, never runs code, never loses or half-writes data (library level)."""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from safetensors.torch import save_file

from tests.helpers import reference_checkpoint, reference_state
from wmap.conversion import convert, preview
from wmap.errors import OutputRefused, PlanNotClean, UnknownModel, UnreadableCheckpoint, UnsafePickle, WrongFamily
from wmap.io import read_checkpoint, read_layout, write_directory_atomically


class Payload:
    """Unpickling this would create ``path``: the file must never appear."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def test_truncated_empty_and_foreign_files(tmp_path: Path) -> None:
    good = reference_checkpoint(tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.touch()
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    for path, detail in ((truncated, ""), (empty, "empty"), (text, ""), (tmp_path / "missing.pt", "no such file")):
        error = read_checkpoint(path).failure()
        assert isinstance(error, UnreadableCheckpoint), (path, error)
        assert str(path) in error.message and detail in error.message
        assert isinstance(preview("encodec_32khz", path).failure(), UnreadableCheckpoint)


def test_corrupt_safetensors_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", 40) + b'{"a": {"dtype": "F32", "shape": [2], "da')
    for read in (read_checkpoint, read_layout):
        error = read(path).failure()
        assert isinstance(error, UnreadableCheckpoint) and "safetensors" in error.message


def test_safetensors_layout_reads_the_header_only(tmp_path: Path) -> None:
    state, _ = reference_state("encodec_32khz")
    path = tmp_path / "ok.safetensors"
    save_file(state, path)
    layout, _ = read_layout(path).unwrap()
    assert layout == {k: tuple(v.shape) for k, v in state.items()}
    assert preview("encodec_32khz", path).unwrap().plan.is_clean()


@pytest.mark.parametrize("container", ["raw pickle protocol 2", "raw pickle protocol 5", "torch zip"])
def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if container == "torch zip":
        torch.save({"model": {"w": torch.zeros(1)}, "extra": Payload(marker)}, path)
    else:
        protocol = int(container[-1])
        path.write_bytes(pickle.dumps({"model": {"w": Payload(marker)}}, protocol=protocol))
    error = read_checkpoint(path).failure()
    assert isinstance(error, UnsafePickle), error
    assert str(path) in error.message and "weights_only" not in error.message
    if container != "raw pickle protocol 5":  # protocol 5 is refused at an opcode before any global
        assert "system" in error.message
    assert not marker.exists()
    assert isinstance(preview("encodec_24khz", path).failure(), UnsafePickle)
    assert not marker.exists()


def test_known_config_classes_are_allowed_and_nothing_else(tmp_path: Path) -> None:
    state, _ = reference_state("encodec_32khz")
    legacy = tmp_path / "legacy.pt"
    torch.save(
        {"args": argparse.Namespace(arch="x"), "cfg": OmegaConf.create({"model": {"a": 1}}), "model": state}, legacy
    )
    checkpoint = read_checkpoint(legacy).unwrap()
    assert checkpoint.meta["args"].arch == "x" and checkpoint.meta["cfg"] == {"model": {"a": 1}}  # as plain data
    other = tmp_path / "other.pt"
    torch.save({"model": state, "odd": Path("/etc/passwd")}, other)
    assert isinstance(read_checkpoint(other).failure(), UnsafePickle)


def test_unknown_model_lists_the_known_ones(tmp_path: Path) -> None:
    error = preview("encodec_96khz").failure()
    assert isinstance(error, UnknownModel) and "encodec_24khz" in error.message


def test_a_checkpoint_of_another_family(tmp_path: Path) -> None:
    path = reference_checkpoint(tmp_path / "d2v.pt", "distilhubert")
    torch.save(torch.load(path)["model"], path)  # a plain state dict of another family
    error = convert("encodec_24khz", path, tmp_path / "out").failure()
    assert isinstance(error, WrongFamily) and "another family" in error.message
    assert not (tmp_path / "out").exists()


def test_plan_problems_assign_nothing(tmp_path: Path) -> None:
    state, _ = reference_state("encodec_32khz")
    del state["encoder.model.0.conv.conv.bias"]  # missing
    state["encoder.model.3.conv.conv.bias"] = torch.zeros(3)  # shape mismatch
    state["extra.weight"] = torch.zeros(1)  # extra key
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    plan = preview("encodec_32khz", path).unwrap().plan
    assert plan.missing == ("encoder.layers.0.conv.bias",)
    assert [m.source for m in plan.shape_mismatches] == ["encoder.model.3.conv.conv.bias"]
    assert plan.unused == ("extra.weight",)
    error = convert("encodec_32khz", path, tmp_path / "out").failure()
    assert isinstance(error, PlanNotClean) and "missing target key" in error.message
    assert not (tmp_path / "out").exists()


def test_injected_failure_mid_write_leaves_no_directory_and_keeps_the_old_one(tmp_path: Path) -> None:
    def half_then_fail(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    error = write_directory_atomically(out, half_then_fail).failure()
    assert isinstance(error, OutputRefused) and "No space left" in error.message
    assert not out.exists() and list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "old.txt").write_text("old")
    assert isinstance(write_directory_atomically(out, half_then_fail, overwrite=True).failure(), OutputRefused)
    assert [p.name for p in out.iterdir()] == ["old.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_interrupt_mid_write_leaves_nothing(tmp_path: Path) -> None:
    def interrupted(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_directory_atomically(tmp_path / "out", interrupted)
    assert list(tmp_path.iterdir()) == []


KEY_TEXT = st.text(min_size=0, max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(KEY_TEXT, st.just(""), st.just("a..b"), st.just("." * 50), st.just("x" * 10_000)), max_size=20)
)
def test_odd_keys_never_raise_and_are_all_accounted_for(keys: list[str]) -> None:
    from wmap.models import get_model
    from wmap.models.encodec import preset_config
    from wmap.planner import make_plan

    spec = get_model("encodec_24khz").unwrap()
    target, _ = spec.reference_layout().unwrap()
    source = {key: (1,) for key in keys}
    plan = make_plan(spec.pipeline(preset_config("encodec_24khz"), {}), source, target)
    assert set(plan.unused) | {u.source for u in plan.unknown_targets} | {m.source for m in plan.shape_mismatches} | {
        a.source for a in plan.applied
    } == set(source)


def test_streamed_safetensors_read_back_exactly(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from wmap.io import write_safetensors

    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).to(torch.bfloat16),
        "f16.scalar": torch.tensor(2.5, dtype=torch.float16),
        "i64": torch.arange(7),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "strided": torch.randn(4, 6)[:, ::2],
    }
    write_safetensors(tmp_path / "t.safetensors", tensors, {"format": "pt"})
    loaded = load_file(tmp_path / "t.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name


def test_interpolations_in_a_files_config_are_never_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WMAP_SECRET", "hunter2")
    state, meta = reference_state("data2vec_audio")
    cfg = OmegaConf.create({"model": {**meta["cfg"]["model"], "dropout": "${oc.env:WMAP_SECRET}"}})
    path = tmp_path / "interpolated.pt"
    torch.save({"cfg": cfg, "model": state}, path)
    error = preview("data2vec_audio", path).failure()
    assert "'dropout'" in error.message and "oc.env:WMAP_SECRET" in error.message
    assert "hunter2" not in error.message
    args = argparse.Namespace(w2v_args=OmegaConf.create({"x": "${oc.env:WMAP_SECRET}"}))
    torch.save({"args": args, "model": state}, path)
    assert read_checkpoint(path).unwrap().meta["args"].w2v_args == {"x": "${oc.env:WMAP_SECRET}"}


def test_deep_and_shared_nesting_is_refused_not_expanded(tmp_path: Path) -> None:
    deep: dict[str, object] = {"w": torch.zeros(1)}
    for _ in range(200):  # past any real nesting (MAX_NESTING), within what pickle itself writes
        deep = {"l": deep}
    shared: dict[str, object] = {f"k{i}": torch.zeros(1) for i in range(4)}
    bomb: dict[str, object] = shared
    for _ in range(30):  # 2^30 keys if expanded
        bomb = {"a": bomb, "b": bomb}
    for name, value in (("deep", deep), ("bomb", bomb)):
        path = tmp_path / f"{name}.pt"
        torch.save({"model": value}, path)
        error = read_checkpoint(path).failure()
        assert isinstance(error, UnreadableCheckpoint), error


def test_output_gets_the_umasks_permissions_and_never_replaces_what_appeared(tmp_path: Path) -> None:
    from wmap.io.atomic import _umask

    def write(directory: Path) -> None:
        (directory / "f").write_text("x")

    out = write_directory_atomically(tmp_path / "a", write).unwrap()
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()

    target = tmp_path / "b"

    def meanwhile(directory: Path) -> None:  # another conversion finishes first
        target.mkdir()
        (target / "theirs").write_text("keep me")
        write(directory)

    error = write_directory_atomically(target, meanwhile).failure()
    assert "appeared while converting" in error.message
    assert (target / "theirs").read_text() == "keep me" and not list(tmp_path.glob(".b.wmap-*"))


def test_a_failed_run_removes_the_parents_it_created(tmp_path: Path) -> None:
    def fail(directory: Path) -> None:
        raise OSError(28, "No space left on device")

    assert write_directory_atomically(tmp_path / "x" / "y" / "out", fail).failure()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_never_deletes_the_directory_holding_the_input(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    checkpoint = reference_checkpoint(folder / "encodec.pt")
    error = convert("encodec_32khz", checkpoint, folder, overwrite=True).failure()
    assert "holds the input" in error.message and checkpoint.exists()


def test_a_long_legal_output_name_works(tmp_path: Path) -> None:
    def write(directory: Path) -> None:
        (directory / "f").write_text("x")

    out = write_directory_atomically(tmp_path / ("n" * 250), write).unwrap()
    assert (out / "f").exists() and len(out.name) == 250


def test_an_audiocraft_style_container_with_an_omegaconf_cfg_is_read(tmp_path: Path) -> None:
    state, _ = reference_state("encodec_32khz")
    cfg = OmegaConf.create({"solver": "compression", "sample_rate": 32000, "seanet": {"ratios": [8, 5, 4, 4]}})
    torch.save({"best_state": state, "xp.cfg": cfg, "epoch": 200}, tmp_path / "audiocraft.th")
    checkpoint = read_checkpoint(tmp_path / "audiocraft.th").unwrap()
    assert checkpoint.meta["xp.cfg"]["seanet"] == {"ratios": [8, 5, 4, 4]} and len(checkpoint.tensors) == len(state)
    assert preview("encodec_32khz", tmp_path / "audiocraft.th").unwrap().plan.is_clean()


def test_a_storage_record_shorter_than_declared_is_refused(tmp_path: Path) -> None:
    import zipfile

    good = tmp_path / "good.pt"
    torch.save({"model": {"a": torch.arange(64, dtype=torch.float32), "b": torch.ones(64)}}, good)
    short = tmp_path / "short.pt"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(short, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data/0"):
                data = data[: len(data) // 2]  # the pickle still declares the full size
            out.writestr(info, data)
    assert read_checkpoint(good).unwrap().tensors["a"].sum() == sum(range(64))
    error = read_checkpoint(short).failure()
    assert isinstance(error, UnreadableCheckpoint) and "record in the archive is shorter" in error.message


TRUNCATE_WHILE_CONVERTING = """
import os, sys, torch
from tests.helpers import reference_state
from wmap.conversion import convert
from wmap.io import read_checkpoint

path, out, how = sys.argv[1], sys.argv[2], sys.argv[3]
state, _ = reference_state("encodec_24khz")
torch.save(state, path)
half = os.path.getsize(path) // 2
if how == "touch":  # the negative control: reading a mapped page past the new end
    tensors = read_checkpoint(path).unwrap().tensors
    os.truncate(path, half)
    print(sum(float(t.double().sum()) for t in tensors.values()))
else:
    dtype = torch.float16 if how == "cast" else None
    result = convert("encodec_24khz", path, out, dtype=dtype, on_plan=lambda plan: os.truncate(path, half))
    print(result.failure().message)
"""


def test_an_input_truncated_while_converting_is_one_error_not_sigbus(tmp_path: Path) -> None:
    """The tensors are memory-mapped: after the file shrinks, touching a page past its end kills the
    process (SIGBUS; the control shows it). Conversion checks the file before touching its pages
    (cast), and a kernel copy that comes up short is an error too (copy)."""
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    runs = {}
    for mode in ("touch", "cast", "copy"):
        where = tmp_path / mode
        where.mkdir()
        args = [sys.executable, "-c", TRUNCATE_WHILE_CONVERTING, str(where / "in.pt"), str(where / "hf"), mode]
        runs[mode] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
    done = {mode: (run.wait(timeout=300), *run.communicate()) for mode, run in runs.items()}
    assert done["touch"][0] == -signal.SIGBUS, done["touch"][2][-500:]
    for mode in ("cast", "copy"):
        code, out, err = done[mode]
        assert code == 0, err[-500:]
        assert "truncated while converting" in out and "in.pt" in out, out
        assert not (tmp_path / mode / "hf").exists() and not list((tmp_path / mode).glob(".hf.wmap-*"))


@pytest.mark.parametrize(
    ("call", "done", "expected"),
    [(1, True, "old"), (2, False, "old"), (2, True, "new")],
    ids=["after-moving-the-old-aside", "before-moving-the-new-in", "after-moving-the-new-in"],
)
def test_an_interrupt_while_replacing_keeps_one_whole_output(
    tmp_path: Path, call: int, done: bool, expected: str
) -> None:
    """SIGTERM raises KeyboardInterrupt between any two bytecodes. Raised around either rename of an
    ``--overwrite``, the output directory is there afterwards, whole (the old one unless the new one
    was already in place), and nothing else is."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors").write_text("old")
    real_replace = os.replace
    calls: list[int] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(1)
        if len(calls) == call:
            if done:
                real_replace(src, dst)
            raise KeyboardInterrupt
        real_replace(src, dst)

    def write(staging: Path) -> None:
        (staging / "model.safetensors").write_text("new")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            write_directory_atomically(out, write, overwrite=True)
    assert (out / "model.safetensors").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_checkpoint_whose_name_is_not_utf8_is_read_and_copied_from_its_mapping(tmp_path: Path) -> None:
    """torch's C++ side cannot open a name that is not UTF-8 (``os.fsdecode`` gives it surrogates): wmap
    hands torch the process's own link to the file, and still finds its mapping for the kernel copy."""
    from wmap.io import mapped_file, read_checkpoint

    name = tmp_path / os.fsdecode(b"encodec-\xff.pt")
    reference_checkpoint(name)
    read = read_checkpoint(name).unwrap()
    assert mapped_file(name, read.tensors.values()) is not None
    convert("encodec_32khz", name, tmp_path / "hf").unwrap()
    assert (tmp_path / "hf" / "model.safetensors").stat().st_size > 1000


def test_the_io_package_imports_only_the_layers_below_it() -> None:
    """``wmap.io`` reads and writes files: it imports no family, no cache of kept results, no planning
    or conversion (a fresh process; before ``wmap.target`` held the layout value, writing imported the
    layout cache and through it the preview cache)."""
    probe = "import sys, wmap.io; print(' '.join(sorted(m for m in sys.modules if m.startswith('wmap.'))))"
    imported = set(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    )
    below = {"wmap.errors", "wmap.keys", "wmap.kinds", "wmap.layout", "wmap.pickle_scan", "wmap.target"}
    below |= {"wmap.transforms", "wmap.values"}  # the layout's types
    assert {name for name in imported if not name.startswith("wmap.io")} <= below
    assert "wmap.io.writing" in imported  # the probe saw the package whole
