"""Where a memory-mapped checkpoint lies in this process, and copying its unchanged bytes file to file
in the kernel."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterable

import attrs
import torch


@attrs.frozen
class MappedFile:
    """Where a memory-mapped source file lies in this process: tensors whose bytes lie in it can be
    copied file to file by the kernel (``os.copy_file_range``), never paged into memory."""

    path: str
    start: int
    end: int
    """The mapping's addresses; ``start`` is the file's byte 0."""
    size: int

    def offset_of(self, tensor: torch.Tensor) -> int | None:
        """The file offset of ``tensor``'s bytes, if they are there as they are (contiguous, in the file)."""
        if tensor.device.type != "cpu" or not tensor.is_contiguous():
            return None
        address, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
        if size == 0 or not (self.start <= address and address + size <= min(self.end, self.start + self.size)):
            return None
        return address - self.start

    def holds(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s storage lies in the mapping (reading it touches the file's pages)."""
        if tensor.device.type != "cpu" or tensor.layout != torch.strided:
            return False
        address = tensor.untyped_storage().data_ptr()
        return self.start <= address < self.end

    def check_intact(self) -> None:
        """Raise ``OSError`` if the file is now shorter than when it was mapped: touching a page past
        its new end would kill the process with SIGBUS (a file truncated or rewritten while converting)."""
        try:
            now = os.path.getsize(self.path)
        except OSError as error:
            raise OSError(f"the source {self.path} is gone ({error.strerror})") from error
        mapped_at_least = self.end - self.start - mmap.PAGESIZE + 1  # the mapping covers the file as read
        if now < max(self.size, mapped_at_least):
            raise OSError(f"the source {self.path} was truncated while converting ({self.size} -> {now} bytes)")


def mapped_file(path: str | os.PathLike[str], tensors: Iterable[torch.Tensor] = ()) -> MappedFile | None:
    """The mapping ``torch.load(mmap=True)`` made of ``path`` (the whole file from byte 0), read from
    ``/proc/self/maps``; ``None`` where there is none or the platform has no such table. A file read
    twice while the first read is alive is mapped twice: given ``tensors``, the mapping that holds
    them (the first holding a mapped storage decides), else the first."""
    where = os.path.realpath(path)
    probe = next((t.untyped_storage().data_ptr() for t in tensors if _has_cpu_storage(t)), None)
    try:
        size = os.path.getsize(where)
        with open("/proc/self/maps", errors="surrogateescape") as maps:  # names as os.fsdecode gives them
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].rstrip("\n") == where and int(fields[2], 16) == 0:
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    if probe is None or start <= probe < end:
                        return MappedFile(where, start, end, size)
    except (OSError, ValueError):
        return None
    return None


def _has_cpu_storage(tensor: torch.Tensor) -> bool:
    return tensor.device.type == "cpu" and tensor.layout == torch.strided and tensor.untyped_storage().nbytes() > 0


_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}
"""Answers of ``copy_file_range`` that mean 'not here' (another file system, an old kernel): write instead."""


def copy_from_file(source: int, out: int, offset: int, size: int) -> int:
    """Copy ``size`` bytes at ``offset`` of ``source`` to ``out``'s position; the bytes copied (fewer
    where the kernel cannot copy between these files: the caller writes the rest)."""
    done = 0
    while done < size:
        try:
            copied = os.copy_file_range(source, out, size - done, offset + done)
        except OSError as error:
            if error.errno in _NO_KERNEL_COPY:
                return done
            raise
        if copied <= 0:
            raise OSError(f"the source ends before byte {offset + size} (truncated while converting?)")
        done += copied
    return done
