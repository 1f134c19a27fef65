"""A zip archive of stored (uncompressed) members whose data the caller writes straight into the
file, by any means (a kernel copy from another file included), returning its CRC-32.

:mod:`zipfile` writes a member's data through its own handle, which copies every byte through
Python to compute the checksum; a member copied file to file by the kernel cannot go that way. The
format here is the published one (PKWARE's APPNOTE): local headers padded so that each member's
data starts on an ``alignment`` boundary (as ``torch.save`` aligns its records), zip64 fields where
a size or an offset needs them (from :data:`zipfile.ZIP64_LIMIT`, zipfile's own threshold), the
central directory at the end. :mod:`zipfile` reads what this writes (tested, zip64 included).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import BinaryIO

import attrs

LOCAL = 0x04034B50
CENTRAL = 0x02014B50
END = 0x06054B50
END64 = 0x06064B50
LOCATOR64 = 0x07064B50
PADDING = 0x4246
"""The extra field ``torch.save`` pads its local headers with (``FB``)."""
DOS_DATE = (0 << 9) | (1 << 5) | 1
"""1980-01-01, the earliest date a zip holds (the members carry no time: the archive is reproducible)."""


@attrs.frozen
class _Member:
    name: bytes
    offset: int
    size: int
    crc: int


@attrs.define
class StoredZip:
    """Members added in order, each aligned; :meth:`close` writes the central directory."""

    file: BinaryIO
    alignment: int = 64
    zip64_from: int = zipfile.ZIP64_LIMIT
    """Sizes and offsets above it are written as zip64 (lowered by tests to exercise zip64)."""
    _members: list[_Member] = attrs.field(factory=list, init=False)

    def add(self, name: str, size: int, write: Callable[[BinaryIO], int]) -> None:
        """A member of ``size`` bytes: ``write(file)`` writes them at the file's position and returns
        their CRC-32; the local header's checksum is filled in after."""
        encoded, offset = name.encode(), self.file.tell()
        wide = size > self.zip64_from
        extra = struct.pack("<HHQQ", 1, 16, size, size) if wide else b""
        fixed = 30 + len(encoded) + len(extra) + 4
        pad = -(offset + fixed) % self.alignment
        extra += struct.pack("<HH", PADDING, pad) + b"\0" * pad
        small = 0xFFFFFFFF if wide else size
        header = struct.pack(
            "<IHHHHHIIIHH", LOCAL, 45 if wide else 20, 0, 0, 0, DOS_DATE, 0, small, small, len(encoded), len(extra)
        )
        self.file.write(header + encoded + extra)
        data = self.file.tell()
        crc = write(self.file) & 0xFFFFFFFF
        end = self.file.tell()
        if end - data != size:
            raise AssertionError(f"{name}: {size} bytes declared, {end - data} written")
        self.file.seek(offset + 14)
        self.file.write(struct.pack("<I", crc))
        self.file.seek(end)
        self._members.append(_Member(encoded, offset, size, crc))

    def add_bytes(self, name: str, data: bytes) -> None:
        """A member holding ``data``."""

        def write(file: BinaryIO) -> int:
            file.write(data)
            return zlib.crc32(data)

        self.add(name, len(data), write)

    def close(self) -> None:
        """The central directory and its end records (zip64 ones where a count, size or offset needs them)."""
        start = self.file.tell()
        for member in self._members:
            wide_size, wide_offset = member.size > self.zip64_from, member.offset > self.zip64_from
            fields = ((member.size, member.size) if wide_size else ()) + ((member.offset,) if wide_offset else ())
            extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
            size = 0xFFFFFFFF if wide_size else member.size
            wide = wide_size or wide_offset
            self.file.write(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    CENTRAL,
                    45 if wide else 20,
                    45 if wide else 20,
                    0,
                    0,
                    0,
                    DOS_DATE,
                    member.crc,
                    size,
                    size,
                    len(member.name),
                    len(extra),
                    0,
                    0,
                    0,
                    0,
                    0xFFFFFFFF if wide_offset else member.offset,
                )
                + member.name
                + extra
            )
        end = self.file.tell()
        count, length = len(self._members), end - start
        if count >= 0xFFFF or start > self.zip64_from or length > self.zip64_from:
            self.file.write(struct.pack("<IQHHIIQQQQ", END64, 44, 45, 45, 0, 0, count, count, length, start))
            self.file.write(struct.pack("<IIQI", LOCATOR64, 0, end, 1))
            count, length, start = min(count, 0xFFFF), min(length, 0xFFFFFFFF), 0xFFFFFFFF
        self.file.write(struct.pack("<IHHHHIIH", END, 0, 0, count, count, length, start, 0))
