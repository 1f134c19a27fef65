"""A torch checkpoint written record by record, in the zip format ``torch.save`` writes and
``torch.load`` (``weights_only`` too) reads, with the memory of one buffer, not of the model.

``torch.save`` writes each storage from memory: a state dict whose tensors lie in a memory-mapped
file is first paged in whole (the process holds the model). Here the pickle (``data.pkl``) names
each tensor's record, and each record is written as its own stored (uncompressed) zip member: a
tensor whose bytes lie unchanged in a mapped source file (:class:`~wmap.io.mapped.MappedFile`) is
read from that file in bounded chunks (``os.preadv``, so its pages never enter this process), any
other from its memory; the zip's checksums are computed as the bytes pass (:mod:`zipfile`). Records
start on 64-byte boundaries and the archive holds the members ``torch.save`` writes, in its order.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import attrs
import torch

from wmap.io.mapped import MappedFile, copy_from_file
from wmap.io.stored_zip import StoredZip

Writer = Callable[[BinaryIO], int]
"""Writes a record's bytes at the file's position; returns their CRC-32."""

STORAGE_TYPES: Mapping[torch.dtype, str] = {
    torch.float64: "DoubleStorage",
    torch.float32: "FloatStorage",
    torch.float16: "HalfStorage",
    torch.bfloat16: "BFloat16Storage",
    torch.int64: "LongStorage",
    torch.int32: "IntStorage",
    torch.int16: "ShortStorage",
    torch.int8: "CharStorage",
    torch.uint8: "ByteStorage",
    torch.bool: "BoolStorage",
}
"""The legacy storage classes ``torch.save`` names in its pickle, by dtype (what ``torch.load`` maps back)."""

ALIGNMENT = 64
"""Where each record starts (``torch.save``'s ``.storage_alignment``)."""
CHUNK = 16 << 20
"""Bytes read from a source file at a time: the memory a copied record costs."""
ARCHIVE = "archive"


@attrs.frozen
class PickledAs:
    """Pickled as an instance of the class ``global_name`` whose fields are ``state``, without that class
    being importable here (fairseq's ``Dictionary`` in an export's ``task_state``; wmap never imports
    fairseq). The original's unpickler makes its own object from it, as from a file it wrote."""

    global_name: str
    state: Mapping[str, Any]


def save_pickled_as(pickler: Any, value: PickledAs) -> None:
    """Write ``value`` with a Python pickler as an instance of the class it names: the class, its
    ``__new__`` and its fields (``BUILD``), as pickle writes an object of that class."""
    module, _, name = value.global_name.rpartition(".")
    pickler.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
    pickler.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)  # cls.__new__(cls), as copyreg.__newobj__
    pickler.save(dict(value.state))
    pickler.write(pickle.BUILD)  # its __dict__ updated with the fields


@attrs.frozen
class _Record:
    """A tensor's storage as ``torch.save`` names it: ``('storage', class, key, 'cpu', numel)``."""

    storage_type: type
    key: str
    numel: int


_PythonPickler: Any = pickle._Pickler  # the Python pickler: its save() can be extended


class _Pickler(_PythonPickler):  # type: ignore[misc]
    """``data.pkl``: tensors as ``torch._utils._rebuild_tensor_v2`` of a persistent storage record
    (one per tensor, contiguous), :class:`PickledAs` values as their class; the rest as pickle does."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, protocol=2)
        self.tensors: list[torch.Tensor] = []

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Record):
            return ("storage", obj.storage_type, obj.key, "cpu", obj.numel)
        return None

    def save(self, obj: object, save_persistent_id: bool = True) -> None:
        if isinstance(obj, PickledAs):
            save_pickled_as(self, obj)
            return
        if isinstance(obj, torch.Tensor) and id(obj) not in self.memo:
            record = _Record(getattr(torch, STORAGE_TYPES[obj.dtype]), str(len(self.tensors)), obj.numel())
            self.tensors.append(obj)
            shape = tuple(obj.shape)
            hooks: collections.OrderedDict[str, Any] = collections.OrderedDict()  # no backward hooks, as torch.save
            args = (record, 0, shape, _contiguous_strides(shape), False, hooks)
            self.save_reduce(torch._utils._rebuild_tensor_v2, args, obj=obj)
            return
        super().save(obj, save_persistent_id)


def _contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides: list[int] = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def writable(container: object) -> bool:
    """Whether every tensor in ``container`` (nested in dicts, lists and tuples) has a dtype this
    writer names (:data:`STORAGE_TYPES`) and lies on the CPU of a little-endian machine (the
    archive says ``little``)."""
    if sys.byteorder != "little":
        return False
    if isinstance(container, torch.Tensor):
        return container.dtype in STORAGE_TYPES and container.device.type == "cpu" and not container.is_sparse
    if isinstance(container, Mapping):
        return all(writable(value) for value in container.values())
    if isinstance(container, list | tuple):
        return all(writable(value) for value in container)
    return True


def _read(fd: int, at: int, size: int, buffer: bytearray) -> Iterator[memoryview]:
    """``size`` bytes of a file from ``at``, a ``buffer`` at a time (``os.preadv``: the pages stay in
    the page cache, never in this process); each view is valid until the next is read."""
    view, done = memoryview(buffer), 0
    while done < size:
        got = os.preadv(fd, [view[: min(len(buffer), size - done)]], at + done)
        if got <= 0:
            raise OSError(f"the source ends before byte {at + size} (truncated while exporting?)")
        yield view[:got]
        done += got


def _crc_of(fd: int, at: int, size: int, buffer: bytearray) -> int:
    """The CRC-32 of ``size`` bytes of a file at ``at``."""
    crc = 0
    for chunk in _read(fd, at, size, buffer):
        crc = zlib.crc32(chunk, crc)
    return crc


def _copied(fd: int, at: int, size: int, buffer: bytearray, checksums: ThreadPoolExecutor) -> Writer:
    """Writes ``size`` bytes of a source file at ``at``: copied by the kernel while another thread
    computes their checksum from the same pages (through ``buffer``); where the kernel cannot copy
    (another file system), the rest read and written here."""

    def write(out: BinaryIO) -> int:
        crc = checksums.submit(_crc_of, fd, at, size, buffer)
        out.flush()
        done = copy_from_file(fd, out.fileno(), at, size)
        out.seek(0, os.SEEK_END)
        if done < size:
            for chunk in _read(fd, at + done, size - done, bytearray(min(CHUNK, size - done))):
                out.write(chunk)
        return crc.result()

    return write


def _from_memory(tensor: torch.Tensor) -> Writer:
    def write(out: BinaryIO) -> int:
        flat = tensor.detach().contiguous().reshape(-1)
        if not flat.numel():
            return 0
        data = flat.view(torch.uint8).numpy().data
        out.write(data)
        return zlib.crc32(data)

    return write


def _emptied(path: Path) -> BinaryIO:
    """``path`` opened for writing from its start, truncated only if it holds anything: ext4 flushes a
    file truncated to nothing when it is closed (its ``auto_da_alloc``), so the empty staging file an
    atomic writer made is not truncated again (``open(path, "wb")`` would, and wait for the disk)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        return open(fd, "wb", closefd=True)
    except BaseException:
        os.close(fd)
        raise


def write_torch_file(container: object, path: Path, sources: Iterable[MappedFile] = ()) -> None:
    """``container`` as ``torch.save(container, path)`` writes it (see the module's docstring);
    :class:`PickledAs` values as the classes they name. The caller checks :func:`writable` first."""
    sources = tuple(sources)
    pickled = io.BytesIO()  # names, shapes and configs: no tensor data
    pickler = _Pickler(pickled)
    pickler.dump(container)
    buffer = bytearray(CHUNK)
    opened = {source.path: os.open(source.path, os.O_RDONLY) for source in sources}
    try:
        with _emptied(path) as file, ThreadPoolExecutor(1, "wmap-checksum") as checksums:
            archive = StoredZip(file, ALIGNMENT)
            archive.add_bytes(f"{ARCHIVE}/data.pkl", pickled.getvalue())
            archive.add_bytes(f"{ARCHIVE}/.format_version", b"1")
            archive.add_bytes(f"{ARCHIVE}/.storage_alignment", str(ALIGNMENT).encode())
            archive.add_bytes(f"{ARCHIVE}/byteorder", b"little")
            for key, tensor in enumerate(pickler.tensors):
                size = tensor.numel() * tensor.element_size()
                held = next(((s, at) for s in sources if (at := s.offset_of(tensor)) is not None), None)
                write = (
                    _from_memory(tensor)
                    if held is None
                    else _copied(opened[held[0].path], held[1], size, buffer, checksums)
                )
                archive.add(f"{ARCHIVE}/data/{key}", size, write)
            archive.add_bytes(f"{ARCHIVE}/version", b"3\n")
            archive.add_bytes(f"{ARCHIVE}/.data/serialization_id", b"0" * 40)
            archive.close()
    finally:
        for fd in opened.values():
            os.close(fd)
