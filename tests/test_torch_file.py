"""wmap.io.torch_file: torch checkpoints written record by record, read by torch.load as its own."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from wmap.io import mapped_file
from wmap.io.reading import mapped_safetensors
from wmap.io.torch_file import ALIGNMENT, STORAGE_TYPES, PickledAs, writable, write_torch_file

DTYPES = sorted(STORAGE_TYPES, key=str)


def _tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.randint(-100 if dtype != torch.uint8 else 0, 100, shape, generator=generator).to(dtype)


SHAPES = st.lists(st.integers(min_value=0, max_value=5), max_size=3).map(tuple)


@settings(max_examples=40, deadline=None)
@given(
    entries=st.lists(st.tuples(st.sampled_from(DTYPES), SHAPES), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_what_it_writes_torch_loads_as_torch_save_would(
    tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[torch.dtype, tuple[int, ...]]], seed: int
) -> None:
    """Every dtype and shape (empty and 0-d included), nested in plain containers: ``torch.load`` gives
    equal tensors (weights only, and memory-mapped), the zip's checksums hold, every record is aligned."""
    path = tmp_path_factory.mktemp("write") / "file.pt"
    state = {f"t{i}": _tensor(dtype, shape, seed + i) for i, (dtype, shape) in enumerate(entries)}
    container = {"model": state, "cfg": {"name": "x", "sizes": [1, 2.5, None], "flag": True}, "n": 3}
    write_torch_file(container, path)
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert loaded["cfg"] == container["cfg"] and loaded["n"] == 3
        assert loaded["model"].keys() == state.keys()
        for key, tensor in state.items():
            assert loaded["model"][key].dtype == tensor.dtype and torch.equal(loaded["model"][key], tensor), key
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        names = [info.filename.split("/", 1)[1] for info in archive.infolist()]
        assert names[:4] == ["data.pkl", ".format_version", ".storage_alignment", "byteorder"]
        for info in archive.infolist():
            if "/data/" in info.filename:
                start = info.header_offset + 30 + len(info.filename) + len(_local_extra(path, info))
                assert start % ALIGNMENT == 0


def _local_extra(path: Path, info: zipfile.ZipInfo) -> bytes:
    with open(path, "rb") as file:
        file.seek(info.header_offset + 28)
        length = int.from_bytes(file.read(2), "little")
        file.seek(info.header_offset + 30 + len(info.filename))
        return file.read(length)


def test_a_tensor_held_twice_is_one_tensor_again_and_pickled_classes_are_named(tmp_path: Path) -> None:
    shared = torch.randn(4, 3)
    write_torch_file(
        {"a": shared, "b": shared, "dictionary": PickledAs("collections.Counter", {"x": 1})}, tmp_path / "f"
    )
    loaded = torch.load(tmp_path / "f", weights_only=False)
    assert loaded["a"] is loaded["b"] and torch.equal(loaded["a"], shared)
    assert type(loaded["dictionary"]).__name__ == "Counter" and vars(loaded["dictionary"]) == {"x": 1}


def test_unchanged_tensors_are_read_from_their_file_and_changed_ones_from_memory(tmp_path: Path) -> None:
    """A tensor mapped from a safetensors file is copied from the file (its pages never read here);
    the control: the same tensor changed in this process's copy-on-write memory is written as the file
    holds it when the file is given as its source, and as the memory holds it when not."""
    source = tmp_path / "model.safetensors"
    original = {"w": torch.randn(64, 32), "b": torch.arange(10, dtype=torch.int64)}
    save_file(original, source)
    tensors, _ = mapped_safetensors(str(source))
    mapped = mapped_file(source, tensors.values())
    assert mapped is not None and mapped.offset_of(tensors["w"]) is not None
    tensors["w"][0, 0] = 1234.0  # a private page: the file keeps its value
    write_torch_file({"model": tensors}, tmp_path / "from_file.pt", [mapped])
    write_torch_file({"model": tensors}, tmp_path / "from_memory.pt")
    from_file = torch.load(tmp_path / "from_file.pt", weights_only=True)["model"]
    from_memory = torch.load(tmp_path / "from_memory.pt", weights_only=True)["model"]
    assert torch.equal(from_file["w"], original["w"]) and torch.equal(from_file["b"], original["b"])
    assert from_memory["w"][0, 0] == 1234.0 and not torch.equal(from_memory["w"], original["w"])


def test_what_it_cannot_name_is_left_to_torch_save() -> None:
    assert writable({"a": [torch.zeros(2)], "b": (torch.ones(1, dtype=torch.bfloat16),)})
    assert not writable({"a": torch.zeros(2, dtype=torch.complex64)})
    assert not writable([torch.zeros(2).to_sparse()])


def test_a_safetensors_header_that_lies_is_refused(tmp_path: Path) -> None:
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    (tmp_path / "short.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(ValueError, match="w: shape"):
        mapped_safetensors(str(tmp_path / "short.safetensors"))
    (tmp_path / "long.safetensors").write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="header of"):
        mapped_safetensors(str(tmp_path / "long.safetensors"))


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=5),
    zip64_from=st.sampled_from([0, 50, 1000, 2**31 - 1]),
)
def test_the_stored_zip_is_read_by_zipfile_with_zip64_where_needed(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], zip64_from: int
) -> None:
    """``StoredZip`` with its zip64 threshold lowered (sizes and offsets past it, as in a model of
    several GB): zipfile reads every member back with its checksum, each aligned."""
    import io
    import os

    from wmap.io.stored_zip import StoredZip

    path = tmp_path_factory.mktemp("zip") / "f.zip"
    payloads = {f"d/{i}": os.urandom(size) for i, size in enumerate(sizes)}
    with open(path, "wb") as file:
        archive = StoredZip(file, 64, zip64_from)
        for name, data in payloads.items():
            archive.add_bytes(name, data)
        archive.close()
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as read:
        assert read.testzip() is None
        assert {info.filename: read.read(info) for info in read.infolist()} == payloads
        for info in read.infolist():
            assert (info.header_offset + 30 + len(info.filename) + len(_local_extra(path, info))) % 64 == 0


def test_where_the_kernel_cannot_copy_between_the_files_the_bytes_are_read_and_written(tmp_path: Path) -> None:
    """Source and output on two file systems (copy_file_range answers EXDEV): every record is still
    the file's bytes, with its checksum."""
    import os
    import tempfile

    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system beside the test's temporary directory")
    source = tmp_path / "model.safetensors"
    original = {"w": torch.randn(300, 200), "b": torch.arange(7, dtype=torch.int64)}
    save_file(original, source)
    tensors, _ = mapped_safetensors(str(source))
    mapped = mapped_file(source, tensors.values())
    assert mapped is not None
    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        out = Path(elsewhere) / "out.pt"
        write_torch_file({"model": tensors}, out, [mapped])
        with zipfile.ZipFile(out) as archive:
            assert archive.testzip() is None
        loaded = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(loaded[k], v) for k, v in original.items())
