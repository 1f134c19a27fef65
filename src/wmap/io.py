"""Safe reading of checkpoints and atomic writing of output directories.

Reading never executes pickled code: ``.pt``/``.ckpt`` files go through
``torch.load(weights_only=True)``, with exactly the config classes that real
checkpoints carry (``argparse.Namespace``, omegaconf containers) allowed on
top. Safetensors files are memory-mapped; for a layout only their header is read.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import errno
import io
import json
import mmap
import os
import re
import secrets
import shutil
import stat
import struct
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import torch
from returns.result import Failure, Result, Success
from safetensors import SafetensorError, safe_open
from transformers import PreTrainedModel

from wmap.dictionary import FAIRSEQ_GLOBAL, Dictionary
from wmap.errors import BadConfig, OutputRefused, UnreadableCheckpoint, UnsafePickle
from wmap.kinds import SAFETENSORS_NAMES
from wmap.layout import Kinds, kinds_of, tensors_layout
from wmap.pickle_scan import allocating_call
from wmap.transforms import Layout

_T = TypeVar("_T")

CONTAINER_KEYS = ("best_state", "model", "state_dict", "Distiller", "model_state_dict")
"""Where the state dict lives in the containers we know: EnCodec, fairseq, lightning-style, s3prl,
openai-whisper."""

EXPECTED = "a safetensors file or a torch checkpoint (.pt/.ckpt/.bin) holding a state dict"


@attrs.frozen
class Checkpoint:
    """A checkpoint's tensors (lazily mapped where the format allows) and its other top-level entries."""

    path: str
    tensors: Mapping[str, torch.Tensor]
    meta: Mapping[str, Any]

    @property
    def layout(self) -> Layout:
        return tensors_layout(self.tensors)

    @property
    def kinds(self) -> Kinds:
        return kinds_of(self.tensors)


@attrs.frozen
class Source:
    """What planning reads of a checkpoint: names and shapes, kinds (:mod:`wmap.kinds`) and metadata."""

    layout: Layout
    kinds: Kinds
    meta: Mapping[str, Any]


def _omegaconf_classes() -> list[Any]:
    try:
        import omegaconf
        from omegaconf import nodes
        from omegaconf.base import ContainerMetadata, Metadata
    except ImportError:
        return []
    classes: list[Any] = [omegaconf.DictConfig, omegaconf.ListConfig, ContainerMetadata, Metadata]
    classes += [getattr(nodes, name) for name in dir(nodes) if name.endswith("Node")]
    return classes


def allowed_globals() -> list[Any]:
    """The classes beyond tensors and plain containers a checkpoint may unpickle.

    Exactly the config holders of real speech checkpoints: ``argparse.Namespace``
    (older fairseq ``args``, s3prl ``Args``) and omegaconf's containers; plus
    ``typing.Any`` and the builtins omegaconf's metadata refers to.
    """
    import collections
    import typing

    return [
        argparse.Namespace,
        collections.defaultdict,
        typing.Any,
        dict,
        list,
        int,
        float,
        str,
        bool,
        type(None),
        *_omegaconf_classes(),
    ]


MAX_NESTING = 32
"""Deeper than any real state dict (data2vec's EMA teacher: 2 levels); deeper is refused, not recursed."""


def flatten_tensors(value: object, prefix: str = "", *, limit: int | None = None) -> dict[str, torch.Tensor] | None:
    """A (possibly nested) mapping whose leaves are all tensors, flattened to dotted keys in the
    file's order; else None.

    Nested state dicts occur in real files, e.g. data2vec's EMA teacher under ``_ema``. Iterative and
    bounded: at most :data:`MAX_NESTING` levels, each container visited once (a pickle of shared
    references cannot expand into more keys than it holds), at most ``limit`` keys.
    """
    if not isinstance(value, Mapping) or not value:
        return None
    flat: dict[str, torch.Tensor] = {}
    seen = {id(value)}
    walk: list[tuple[str, Iterator[tuple[Any, Any]]]] = [(prefix, iter(value.items()))]
    while walk:
        where, items = walk[-1]
        entry = next(items, None)
        if entry is None:
            walk.pop()
            continue
        key, item = entry
        if not isinstance(key, str):
            return None
        if isinstance(item, torch.Tensor):
            flat[where + key] = item
            if limit is not None and len(flat) > limit:
                return None
        elif isinstance(item, Mapping) and item and id(item) not in seen and len(walk) < MAX_NESTING:
            seen.add(id(item))
            walk.append((where + key + ".", iter(item.items())))
        else:
            return None
    return flat


def unresolved(value: object, depth: int = 0) -> object:
    """``value`` with every omegaconf container replaced by its plain containers, interpolations
    and resolver calls left as the strings they are: a file's ``${oc.env:HOME}`` is never resolved
    (it would read the converting user's environment), only shown as written."""
    if depth > MAX_NESTING:
        return None
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if OmegaConf.is_config(value):
        try:
            value = OmegaConf.to_container(value, resolve=False, enum_to_str=True)
        except Exception:  # a container omegaconf itself cannot read back: nothing of it is used
            return None
    if isinstance(value, dict):
        return {k: unresolved(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [unresolved(v, depth + 1) for v in value]
    if isinstance(value, argparse.Namespace):
        return argparse.Namespace(**{k: unresolved(v, depth + 1) for k, v in vars(value).items()})
    return value


def unwrap(
    container: object, path: str
) -> Result[tuple[dict[str, torch.Tensor], dict[str, Any]], UnreadableCheckpoint]:
    """Find the state dict in a loaded container; the other top-level entries become metadata."""
    if isinstance(container, Mapping):
        for name in CONTAINER_KEYS:
            inner = flatten_tensors(container.get(name))
            if inner is not None:
                meta = {k: unresolved(v) for k, v in container.items() if k != name and isinstance(k, str)}
                return Success((inner, meta))
        top = flatten_tensors(container)
        if top is not None:
            return Success((top, {}))
        return Failure(
            UnreadableCheckpoint(
                path,
                f"a state dict at the top level or under one of {', '.join(CONTAINER_KEYS)}",
                f"top-level keys are {sorted(map(str, container))[:8]}",
            )
        )
    return Failure(UnreadableCheckpoint(path, EXPECTED, f"it holds a {type(container).__name__}"))


STAND_INS: Mapping[str, type] = {FAIRSEQ_GLOBAL: Dictionary}
"""Classes real checkpoints pickle beyond plain containers, read as inert data: global name -> stand-in.

fairseq's trainer keeps its label dictionaries in ``task_state``; the stand-in keeps their
fields and runs no fairseq code."""

_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def refused_globals(message: str) -> tuple[str, ...]:
    """The globals torch's weights-only unpickler named as refused in ``message``."""
    return tuple(dict.fromkeys(_REFUSED_GLOBAL.findall(message)))


def _classify_load_error(path: str, error: BaseException) -> UnreadableCheckpoint | UnsafePickle:
    message = str(error)
    text = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    if "Weights only load failed" in message or "Unsupported global" in message or "WeightsUnpickler" in message:
        # torch wraps the unpickler's reason in advice we never repeat (it includes turning weights_only off)
        names = refused_globals(message)
        if names:
            return UnsafePickle(path, f"it refers to {', '.join(names)}", names)
        lines = (line.replace("WeightsUnpickler error:", "").strip() for line in message.splitlines())
        reason = next((line for line in lines if line and not line.startswith(_TORCH_ADVICE)), "unsupported content")
        return UnsafePickle(path, reason.split(". ")[0][:200])
    return UnreadableCheckpoint(path, EXPECTED, f"{type(error).__name__}: {text[:200]}")


_TORCH_ADVICE = (
    "Weights only load failed",
    "Please file an issue",
    "Check the documentation",
    "In PyTorch",
    "(1)",
    "(2)",
)


LEGACY_PICKLES = 4
"""torch's legacy format unpickles a magic number, the protocol, system info, then the objects."""


def _allocating_call(path: str, archive: bool) -> str | None:
    """The allocating call the file's pickle makes (:mod:`wmap.pickle_scan`), before torch unpickles it."""
    try:
        if archive:
            with zipfile.ZipFile(path) as zipped:
                name = next((n for n in zipped.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                return None if name is None else allocating_call(io.BytesIO(zipped.read(name)))
        with open(path, "rb") as stream:
            return allocating_call(stream, pickles=LEGACY_PICKLES)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError):
        return None  # not a readable pickle: torch's own reader says what is wrong


def _load_pickle(path: str, stand_ins: Mapping[str, type]) -> Result[object, UnreadableCheckpoint | UnsafePickle]:
    archive = zipfile.is_zipfile(path)
    allocating = _allocating_call(path, archive)
    if allocating is not None:
        reason = f"it calls {allocating}, which would allocate memory the file does not hold"
        return Failure(UnsafePickle(path, reason, (allocating,)))
    allowed = [*allowed_globals(), *((cls, name) for name, cls in stand_ins.items())]
    try:
        with (
            torch.serialization.safe_globals(allowed),
            warnings.catch_warnings(),
            _utf8_name(path) as name,
        ):
            # torch's note on the pickle protocol of a file it then refuses or reads anyway is noise here
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return Success(torch.load(name, map_location="cpu", weights_only=True, mmap=archive))
    except Exception as error:
        return Failure(_classify_load_error(path, error))


@contextlib.contextmanager
def _utf8_name(path: str) -> Iterator[str]:
    """A name torch can open ``path`` by: itself, or where it is not UTF-8 (a file name in another
    encoding, which torch's C++ side cannot take) the process's own link to it, ``/proc/self/fd/N``."""
    try:
        path.encode("utf-8")
        yield path
        return
    except UnicodeEncodeError:
        pass
    handle = os.open(path, os.O_RDONLY)
    try:
        yield f"/proc/self/fd/{handle}"
    finally:
        os.close(handle)


def _is_safetensors(path: str) -> bool:
    return path.endswith(".safetensors")


NAME_MAX = 255
PATH_MAX = 4095
"""Linux's limits on one name and on a whole path, in bytes."""


def path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot name a file here (empty, a NUL byte, a name or path too long), or ``None``.
    Checked before any system call, which would raise instead of answering."""
    try:
        raw = os.fsencode(path)
    except (TypeError, UnicodeError) as error:
        return f"not a file name ({type(error).__name__})"
    if not raw:
        return "an empty path (an unset shell variable?)"
    if b"\0" in raw:
        return "a path holding a NUL byte"
    if len(raw) > PATH_MAX:
        return f"a path longer than {PATH_MAX} bytes"
    if any(len(part) > NAME_MAX for part in raw.split(b"/")):
        return f"a path with a name longer than {NAME_MAX} bytes"
    return None


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a readable, non-empty regular file (missing, a directory, a FIFO or device
    that a read could wait on forever, unreadable, empty), or ``None``."""
    problem = path_problem(path)
    if problem is not None:
        return problem
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return "no such file"
    except OSError as error:
        return f"cannot be opened ({error.strerror or error})"
    if stat.S_ISDIR(found.st_mode):
        return "a directory, not a file"
    if not stat.S_ISREG(found.st_mode):
        return "not a regular file (a FIFO, socket or device is never read)"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    if found.st_size == 0:
        return "the file is empty"
    return None


def _check_file(path: str) -> Result[str, UnreadableCheckpoint]:
    problem = regular_file_problem(path)
    return Success(path) if problem is None else Failure(UnreadableCheckpoint(path, EXPECTED, problem))


def _bad_safetensors(path: str, error: BaseException) -> UnreadableCheckpoint:
    return UnreadableCheckpoint(path, "a valid safetensors file", f"{type(error).__name__}: {error}")


def _read_safetensors(path: str) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():  # noqa: SIM118 - safe_open is not iterable
                tensors[key] = handle.get_tensor(key)
        return Success(Checkpoint(path, tensors, dict(metadata)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return Failure(_bad_safetensors(path, error))


def _record_spans(path: str) -> list[tuple[int, int]] | None:
    """The byte ranges of a torch zip archive's stored records (``None``: not a zip, or compressed)."""
    try:
        with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
            spans = []
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    return None
                raw.seek(info.header_offset)
                header = raw.read(30)
                if len(header) < 30 or header[:4] != b"PK\x03\x04":
                    return None
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                start = info.header_offset + 30 + name_length + extra_length
                spans.append((start, start + info.file_size))
            return sorted(spans)
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def _storages_within_records(checkpoint: Checkpoint) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
    """Every tensor's storage lies inside one record of the archive it was mapped from.

    ``torch.load(mmap=True)`` maps the whole file and slices each storage at its record's offset
    by the size the pickle declares, without the size check its copying path makes: a record
    shorter than declared would hand zip headers and other tensors' bytes to a tensor."""
    mapped = mapped_file(checkpoint.path, checkpoint.tensors.values())
    spans = _record_spans(checkpoint.path) if mapped is not None else None
    if mapped is None or spans is None:
        return Success(checkpoint)
    starts = [start for start, _ in spans]
    for key, tensor in checkpoint.tensors.items():
        if tensor.layout != torch.strided:
            continue  # sparse and the like have no one storage; apply refuses them by name
        storage = tensor.untyped_storage()
        begin = storage.data_ptr() - mapped.start
        end = begin + storage.nbytes()
        if not 0 <= begin <= mapped.size or storage.nbytes() == 0:
            continue  # not from the mapping (or empty): nothing to check
        index = bisect.bisect_right(starts, begin) - 1
        if index < 0 or end > spans[index][1]:
            return Failure(
                UnreadableCheckpoint(
                    checkpoint.path,
                    EXPECTED,
                    f"tensor {key!r} needs {storage.nbytes()} bytes but its record in the archive is shorter "
                    "(a truncated or crafted file)",
                )
            )
    return Success(checkpoint)


def read_checkpoint(
    path: str | os.PathLike[str], *, stand_ins: Mapping[str, type] = STAND_INS
) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
    """Read a checkpoint safely; tensors stay memory-mapped where the format allows.

    A torch checkpoint may pickle, beyond tensors and plain containers, only the
    config classes of :func:`allowed_globals` and the classes named in
    ``stand_ins`` (global name -> an inert class built from the saved fields);
    anything else is refused, naming the global. Entries other than the state
    dict (a trainer's optimizer state, say) stay memory-mapped and unread."""
    where = os.fspath(path)

    def pickled(_: str) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
        loaded = _load_pickle(where, stand_ins)
        return (
            loaded.bind(lambda container: _widen(unwrap(container, where)))
            .map(lambda found: Checkpoint(where, found[0], found[1]))
            .bind(_storages_within_records)
        )

    checked: Result[str, UnreadableCheckpoint | UnsafePickle] = _check_file(where)
    return checked.bind(_read_safetensors if _is_safetensors(where) else pickled)


def read_source(path: str | os.PathLike[str]) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    """Names, shapes, kinds and metadata: for safetensors just the header is read."""
    where = os.fspath(path)
    if not _is_safetensors(where):
        return read_checkpoint(where).map(lambda found: Source(found.layout, found.kinds, found.meta))
    return _widen(_check_file(where)).bind(_safetensors_header)


def read_layout(
    path: str | os.PathLike[str],
) -> Result[tuple[Layout, Mapping[str, Any]], UnreadableCheckpoint | UnsafePickle]:
    """Names and shapes (and metadata) only: for safetensors just the header is read."""
    return read_source(path).map(lambda found: (found.layout, found.meta))


def _safetensors_header(where: str) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    try:
        with safe_open(where, framework="pt") as handle:
            slices = {key: handle.get_slice(key) for key in handle.keys()}  # noqa: SIM118
            layout = {key: tuple(part.get_shape()) for key, part in slices.items()}
            kinds = {key: SAFETENSORS_NAMES.get(part.get_dtype(), part.get_dtype()) for key, part in slices.items()}
            return Success(Source(layout, kinds, dict(handle.metadata() or {})))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return Failure(_bad_safetensors(where, error))


def _widen(result: Result[_T, UnreadableCheckpoint | UnsafePickle]) -> Result[_T, UnreadableCheckpoint | UnsafePickle]:
    """The reading errors' union, so that ``bind`` chains steps that fail with either."""
    return result


SMALL_FILE_LIMIT = 16 * 2**20
"""The largest dictionary or config file wmap reads whole (real ones are kilobytes)."""


def read_small_text(path: Path, option: str, expected: str) -> Result[str, BadConfig]:
    """A small UTF-8 text file the user named (``--dict``, ``--config``), read whole; bounded, never a device."""
    where = str(path)
    problem = regular_file_problem(path)
    if problem is not None and problem != "the file is empty":
        return Failure(BadConfig(where, option, expected, problem))
    try:
        with open(path, "rb") as handle:
            data = handle.read(SMALL_FILE_LIMIT + 1)
    except OSError as error:
        return Failure(BadConfig(where, option, expected, f"unreadable ({error.strerror or error})"))
    if len(data) > SMALL_FILE_LIMIT:
        return Failure(BadConfig(where, option, expected, f"larger than {SMALL_FILE_LIMIT // 2**20} MiB"))
    try:
        return Success(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        return Failure(BadConfig(where, option, expected, f"not UTF-8 text ({error.reason} at byte {error.start})"))


def parse_json(text: str) -> object:
    """JSON from a file wmap did not write: nesting too deep for the parser, or a number too large,
    raise ``ValueError`` like any other malformed text."""
    try:
        return json.loads(text)
    except (RecursionError, OverflowError) as error:
        raise ValueError(f"nested too deeply or a number too large ({type(error).__name__})") from None


SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


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


def _copy_from_file(source: int, out: int, offset: int, size: int) -> int:
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


def write_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: MappedFile | None = None
) -> None:
    """Write a safetensors file tensor by tensor, never holding a second copy of the weights.

    A tensor whose bytes lie in ``source`` (the memory-mapped checkpoint, unchanged) is copied file
    to file by the kernel, so its pages never become resident; any other is written from its memory.
    (``safetensors.torch.save_file`` first copies every tensor into one bytes object.) The format is
    the published one: an 8-byte little-endian header length, a JSON header with dtype, shape and
    byte offsets, then the data.
    """
    header: dict[str, Any] = {}
    offset = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header["__metadata__"] = dict(metadata)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    copy_from = None if source is None or sys.byteorder != "little" else os.open(source.path, os.O_RDONLY)
    try:
        with open(path, "wb") as handle:
            handle.write(struct.pack("<Q", len(blob)))
            handle.write(blob)
            for tensor in tensors.values():
                at = None if copy_from is None or source is None else source.offset_of(tensor)
                done = 0
                if at is not None and copy_from is not None:
                    handle.flush()
                    done = _copy_from_file(copy_from, handle.fileno(), at, tensor.numel() * tensor.element_size())
                    handle.seek(0, os.SEEK_END)
                if source is not None and done < tensor.numel() * tensor.element_size() and source.holds(tensor):
                    source.check_intact()  # before its pages are touched
                flat = tensor.detach().contiguous().reshape(-1)
                if flat.numel() and done < flat.numel() * flat.element_size():
                    handle.write(flat.view(torch.uint8).numpy().data[done:])
    finally:
        if copy_from is not None:
            os.close(copy_from)


DEFAULT_MAX_SHARD_SIZE = "50GB"
"""transformers v5's default for ``save_pretrained``: one file for any speech model."""


def write_weights(
    directory: Path,
    state: Mapping[str, torch.Tensor],
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    source: MappedFile | None = None,
) -> None:
    """``model.safetensors``, or shards ``model-0000k-of-0000n.safetensors`` of at most ``max_shard_size``
    and ``model.safetensors.index.json`` (``metadata.total_size``, ``metadata.total_parameters`` and the
    ``weight_map`` of the keys written), as ``save_pretrained`` lays them out (``huggingface_hub``'s split)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    split = split_torch_state_dict_into_shards(dict(state), max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        write_safetensors(directory / filename, {n: state[n] for n in names}, {"format": "pt"}, source)
    if split.is_sharded:
        index = {
            "metadata": {
                **split.metadata,
                "total_size": sum(t.numel() * t.element_size() for t in state.values()),
                "total_parameters": sum(t.numel() for t in state.values()),
            },
            "weight_map": dict(sorted(split.tensor_to_filename.items())),
        }
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def save_pretrained_streaming(
    model: PreTrainedModel,
    state: Mapping[str, torch.Tensor],
    directory: Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    source: MappedFile | None = None,
) -> None:
    """What ``model.save_pretrained(directory, max_shard_size=...)`` writes, the weights streamed from ``state``.

    ``state`` is what was loaded into ``model`` (strictly, by assignment), so
    the two agree; writing from it (and from the source file itself where a
    tensor is unchanged) avoids the second copy ``save_pretrained`` makes. A tied copy
    (Whisper's ``proj_out``) is left out, as ``save_pretrained`` leaves it: loading ties it again.
    """
    tied = model.get_expanded_tied_weights_keys(all_submodels=True)  # target -> source, as the config ties them
    state = {key: value for key, value in state.items() if not (key in tied and tied[key] in state)}
    floating = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    model.config.dtype = str(floating).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(directory)
    if model.can_generate() and model.generation_config is not None:
        model.generation_config.save_pretrained(directory)
    write_weights(directory, state, max_shard_size=max_shard_size, source=source)


INDEX = "model.safetensors.index.json"


class _ShardedTensors(Mapping[str, torch.Tensor]):
    """The tensors of a sharded directory, each read (memory-mapped) from its shard when asked for."""

    def __init__(self, directory: Path, weight_map: Mapping[str, str]) -> None:
        self._directory = directory
        self._map = dict(weight_map)
        self._open: dict[str, Any] = {}

    @property
    def weight_map(self) -> Mapping[str, str]:
        """key -> the shard file that holds it."""
        return self._map

    def __getitem__(self, key: str) -> torch.Tensor:
        shard = self._map[key]
        handle = self._open.get(shard)
        if handle is None:
            handle = self._open[shard] = safe_open(self._directory / shard, framework="pt")
        tensor: torch.Tensor = handle.get_tensor(key)
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


WEIGHTS_FILES = ("model.safetensors", INDEX, "pytorch_model.bin")
"""Where a ``save_pretrained`` directory keeps its weights, in the order transformers looks for them: a
single ``model.safetensors`` wins over an index beside it (transformers leaves a stale index when a
model once sharded is saved again unsharded, and loads the single file)."""


def weights_file(directory: str | os.PathLike[str]) -> Result[Path, UnreadableCheckpoint]:
    """The file holding a ``save_pretrained`` directory's weights (:data:`WEIGHTS_FILES`)."""
    where = Path(directory)
    problem = path_problem(where)
    if problem is None and not where.is_dir():
        problem = "no such directory" if not where.exists() else "not a directory"
    if problem is not None:
        return Failure(UnreadableCheckpoint(str(where), "a save_pretrained directory", problem))
    for name in WEIGHTS_FILES:
        if os.path.lexists(where / name):
            return Success(where / name)
    return Failure(
        UnreadableCheckpoint(str(where), "a save_pretrained directory", f"it holds none of {', '.join(WEIGHTS_FILES)}")
    )


def _index(path: Path) -> Result[dict[str, str], UnreadableCheckpoint]:
    """The ``weight_map`` of a sharded directory's index, every shard a readable regular file beside it."""
    expected = "a sharded safetensors index (model.safetensors.index.json)"
    read = read_small_text(path, INDEX, expected)
    if isinstance(read, Failure):
        return Failure(UnreadableCheckpoint(str(path), expected, read.failure().found))
    try:
        found = parse_json(read.unwrap())
        weight_map = found.get("weight_map") if isinstance(found, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and "/" not in v and v.endswith(".safetensors")
            for k, v in weight_map.items()
        ):
            raise ValueError("weight_map is not a mapping of key -> shard file in the directory")
        for shard in sorted(set(weight_map.values())):
            problem = regular_file_problem(path.parent / shard)
            if problem is not None:
                raise ValueError(f"shard {shard}: {problem}")
            with safe_open(path.parent / shard, framework="pt") as handle:
                missing = {k for k, v in weight_map.items() if v == shard} - set(handle.keys())
                if missing:
                    raise ValueError(f"{shard} lacks {sorted(missing)[:3]} that the index puts there")
    except (OSError, ValueError, SafetensorError) as error:
        return Failure(UnreadableCheckpoint(str(path), expected, str(error)[:200]))
    return Success(weight_map)


def read_weights(directory: str | os.PathLike[str]) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
    """The weights of a ``save_pretrained`` directory: ``model.safetensors``, or the shards its index
    names (each opened lazily, header first, when one of its tensors is read), or ``pytorch_model.bin``
    (read as any torch checkpoint: weights only)."""

    def read(path: Path) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
        if path.name != INDEX:
            return read_checkpoint(path)
        found = _index(path).map(
            lambda weight_map: Checkpoint(str(path.parent), _ShardedTensors(path.parent, weight_map), {})
        )
        return _widen(found)

    return _widen(weights_file(directory)).bind(read)


def read_directory_source(directory: str | os.PathLike[str]) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    """Names, shapes and kinds of a ``save_pretrained`` directory's weights, from the safetensors
    headers alone (one file or the shards its index names)."""

    def headers(path: Path) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
        if path.name != INDEX:
            return read_source(path)
        return _widen(_index(path)).bind(lambda weight_map: _shard_headers(path.parent, weight_map))

    return _widen(weights_file(directory)).bind(headers)


def _shard_headers(
    directory: Path, weight_map: Mapping[str, str]
) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    layout: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())):
        read = _safetensors_header(str(directory / shard))
        if isinstance(read, Failure):
            return read
        layout.update(read.unwrap().layout)
        kinds.update(read.unwrap().kinds)
    return Success(Source(layout, kinds, {}))


@attrs.frozen
class PickledAs:
    """Pickled as an instance of the class ``global_name`` whose fields are ``state``, without that class
    being importable here (fairseq's ``Dictionary`` in an export's ``task_state``; wmap never imports
    fairseq). The original's unpickler makes its own object from it, as from a file it wrote."""

    global_name: str
    state: Mapping[str, Any]


def _pickle_module() -> Any:
    """A pickle module for ``torch.save`` that writes :class:`PickledAs` values as their class."""
    import pickle
    import types

    python_pickler: Any = pickle._Pickler  # the Python pickler: its save() can be overridden

    class Pickler(python_pickler):  # type: ignore[misc]
        def save(self, obj: object, save_persistent_id: bool = True) -> None:
            if isinstance(obj, PickledAs):
                module, _, name = obj.global_name.rpartition(".")
                self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
                self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)  # cls.__new__(cls), as copyreg.__newobj__
                super().save(dict(obj.state))
                self.write(pickle.BUILD)  # its __dict__ updated with the fields
                return
            super().save(obj, save_persistent_id)

    module = types.ModuleType("wmap_pickle")
    module.Pickler = Pickler  # type: ignore[attr-defined]
    module.Unpickler = pickle.Unpickler  # type: ignore[attr-defined]
    module.load = pickle.load  # type: ignore[attr-defined]
    return module


def save_torch(container: object, path: Path) -> None:
    """``torch.save(container, path)``, :class:`PickledAs` values written as the classes they name. A
    write that fails (a full disk) is an ``OSError``, as any other write's: torch's zip writer says so
    with a ``RuntimeError``."""
    try:
        torch.save(container, path, pickle_module=_pickle_module())
    except RuntimeError as error:
        if any(sign in str(error) for sign in ("inline_container", "PytorchStreamWriter", "file write failed")):
            # torch's zip writer: a short write shows as "unexpected pos", a failed one as "file write failed"
            raise OSError(errno.EIO, "the file could not be written (a full disk?)") from error
        raise


@contextlib.contextmanager
def staged_copy(path: Path, name: str) -> Iterator[Path]:
    """A temporary directory holding a copy of ``path`` under ``name``, removed afterwards (for
    loaders that only look for a file by its conventional name in a directory)."""
    with tempfile.TemporaryDirectory() as staging:
        shutil.copyfile(path, Path(staging) / name)
        yield Path(staging)


def _staging_name(target: Path) -> Path:
    """A fresh hidden name beside ``target`` (``.NAME.wmap-<64 random bits>``), for what is written
    before it is renamed into place; named before it is made, so that whoever makes it can remove it
    whatever interrupts them."""
    return target.parent / f".{target.name[:120]}.wmap-{secrets.token_hex(8)}"


@contextlib.contextmanager
def _made_beside(target: Path, *, directory: bool) -> Iterator[Path]:
    """A new file or directory beside ``target`` (:func:`_staging_name`), removed at the end whatever
    happens. It is named before it is made and made inside the ``try``: an interrupt (SIGTERM raises
    in any bytecode) arriving just after it is made still removes it, which ``mkdtemp`` followed by
    ``try`` cannot promise."""
    path = _staging_name(target)
    taken = False
    try:
        try:
            if directory:
                os.mkdir(path, 0o700)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            taken = True  # someone else's (64 random bits: never in practice); not ours to remove
            raise
        yield path
    finally:
        if not taken and directory:
            shutil.rmtree(path, ignore_errors=True)
        elif not taken:
            with contextlib.suppress(OSError):
                path.unlink()


MODEL_DIRECTORY_FILES = (".json", ".safetensors", ".bin", ".txt", ".model", ".md", ".pt", ".tiktoken", ".gitattributes")
"""What a model directory holds (configs, weights, tokenizer and processor files, a model card): the
only files ``--overwrite`` replaces a directory of."""


def _not_a_model_directory(target: Path) -> str | None:
    """Why ``--overwrite`` must not replace the directory ``target``: it is the current directory or
    holds it, or it holds something a model directory does not (named)."""
    real = os.path.realpath(target)
    here = os.path.realpath(os.getcwd())
    if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
        return "is the current directory or holds it; name a model directory to replace"
    others = []
    with os.scandir(target) as entries:
        for entry in entries:
            staging = entry.name.startswith(".") and ".wmap-" in entry.name
            if not staging and (
                not entry.is_file(follow_symlinks=False) or not entry.name.endswith(MODEL_DIRECTORY_FILES)
            ):
                others.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            if len(others) >= 3:
                break
    if others:
        shown = ", ".join(repr(name) for name in sorted(others))
        return f"holds {shown}, which a model directory does not: not replaced (remove it yourself, or write elsewhere)"
    return None


def check_output(out_dir: str | os.PathLike[str], *, overwrite: bool) -> Result[Path, OutputRefused]:
    """The absolute output path, unless it exists and may not be replaced: without ``overwrite``, or a
    directory that is not a model directory (:func:`_not_a_model_directory`)."""
    problem = path_problem(out_dir)
    if problem is not None:
        return Failure(OutputRefused(repr(os.fspath(out_dir))[:80], f"{problem}; name the output directory"))
    target = Path(out_dir).absolute()
    if target.exists() and not overwrite:
        return Failure(OutputRefused(str(target), "already exists; pass overwrite (--overwrite) to replace it"))
    if target.exists() and not target.is_dir():
        return Failure(OutputRefused(str(target), "exists and is not a directory"))
    if target.exists():
        try:
            refused = _not_a_model_directory(target)
        except OSError as error:
            refused = f"cannot be listed ({error.strerror or error})"
        if refused is not None:
            return Failure(OutputRefused(str(target), refused))
    return Success(target)


def write_directory_atomically(
    out_dir: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike[str], ...] = (),
) -> Result[Path, OutputRefused]:
    """Call ``write`` on a staging directory beside ``out_dir`` and rename it into place at the end.

    An existing ``out_dir`` is left alone unless ``overwrite``; then it is replaced only after the
    new one is complete, never when it holds one of ``protect`` (the input), and only if it is a model
    directory (:func:`check_output`). Without ``overwrite`` the final rename cannot replace a
    directory that appeared meanwhile (another conversion's): it is refused. The directory gets the
    permissions ``save_pretrained``'s would (the umask's). Any failure leaves no staging directory, no
    parent created for it, and the old ``out_dir`` (if any) unchanged.
    """
    return (
        check_output(out_dir, overwrite=overwrite)
        .bind(lambda target: holds_none_of(target, protect))
        .bind(lambda target: _write_into(target, write, overwrite=overwrite))
    )


def inputs_of(directory: str | os.PathLike[str], limit: int = 10_000) -> tuple[str, ...]:
    """``directory`` and what each of its entries resolves to (a Hub cache's links to its blobs): the
    paths an output must not replace."""
    found = [os.fspath(directory)]
    with contextlib.suppress(OSError, ValueError), os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= limit:
                break
            found.append(os.path.realpath(entry.path))
    return tuple(found)


def looks_like_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a file wmap could have written as an export: empty, a torch zip archive, or
    a pickle (legacy torch format), judged from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head in (b"",) or head.startswith((b"PK\x03\x04", b"\x80"))


def _file_refused(
    target: Path,
    overwrite: bool,
    protect: tuple[str | os.PathLike[str], ...],
    replaces: Callable[[Path], str | None],
) -> str | None:
    """Why ``target`` may not be written (checked for every file before any is)."""
    problem = path_problem(target)
    if problem is not None:
        return f"{problem}; name the file to write"
    if target.is_dir():
        return "is a directory; name the file to write"
    if os.path.lexists(target) and not overwrite:
        return "already exists; pass overwrite (--overwrite) to replace it"
    if os.path.lexists(target) and not target.is_file():
        return "exists and is not a regular file: not replaced"
    if not target.parent.is_dir():
        return "its directory does not exist"
    real = os.path.realpath(target)
    for item in protect:  # the file must not replace the input, nor land inside the input directory
        if path_problem(item) is not None:
            continue
        inside = os.path.realpath(item)
        if real == inside or real.startswith(inside + os.sep):
            return f"is, or lies in, the input {item}; write the output elsewhere"
    return replaces(target) if os.path.lexists(target) else None


def write_file_atomically(
    out_file: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike[str], ...] = (),
) -> Result[Path, OutputRefused]:
    """Call ``write`` on a temporary file beside ``out_file`` and move it into place at the end
    (:func:`write_files_atomically` with one file)."""
    return write_files_atomically({out_file: write}, overwrite=overwrite, protect=protect).map(lambda paths: paths[0])


def write_files_atomically(
    files: Mapping[str | os.PathLike[str], Callable[[Path], None]],
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike[str], ...] = (),
    replaces: Callable[[Path], str | None] = lambda path: None,
) -> Result[tuple[Path, ...], OutputRefused]:
    """Write several files (an export and its companions) all or none: each ``write`` fills a
    temporary file beside its target; only when all are complete are they moved into place, and a
    failure or interrupt while moving puts back what was there. An existing file is replaced only with
    ``overwrite`` (never one of ``protect``, the input, and never a non-regular file); without it one
    that appears meanwhile is not replaced; ``replaces(path)`` says why an existing file must not be
    replaced (not a file this writer could have written), or ``None``. The files get the umask's
    permissions, as ``torch.save`` would give them."""
    if not files:
        return Success(())
    targets = [Path(os.fspath(out)).absolute() if path_problem(out) is None else Path(os.fspath(out)) for out in files]
    for out, target in zip(files, targets, strict=True):
        refused = _file_refused(target, overwrite, protect, replaces)
        if refused is not None:
            shown = str(target) if path_problem(target) is None else repr(os.fspath(out))[:80]
            return Failure(OutputRefused(shown, refused))
    try:
        with contextlib.ExitStack() as stack:
            staged = [stack.enter_context(_made_beside(target, directory=False)) for target in targets]
            for write, path in zip(files.values(), staged, strict=True):
                write(path)
                os.chmod(path, 0o666 & ~_umask())
            backup = stack.enter_context(_made_beside(targets[0], directory=True))
            _move_all_in(staged, targets, backup, overwrite=overwrite)
    except BaseException as error:
        if not isinstance(error, OSError):
            raise  # an interrupt, or a bug in a writer: not the output's fault (the CLI says which)
        detail = " ".join(str(error).split())
        return Failure(OutputRefused(str(targets[0]), f"could not write output: {type(error).__name__}: {detail}"))
    return Success(tuple(targets))


def _move_all_in(staged: list[Path], targets: list[Path], backup: Path, *, overwrite: bool) -> None:
    """Each staged file to its target; whatever stops this (an error, SIGTERM between any two steps),
    every target is put back as it was."""
    kept: list[tuple[Path, Path]] = []
    try:
        for number, (path, target) in enumerate(zip(staged, targets, strict=True)):
            if overwrite and os.path.lexists(target):
                old = backup / str(number)
                os.replace(target, old)
                kept.append((old, target))
            try:
                os.link(path, target)  # never replaces a file that appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{target} appeared while writing (another export?); not replaced") from None
    except BaseException:
        for path, target in zip(staged, targets, strict=True):  # ours: the same file as what we staged
            with contextlib.suppress(OSError):
                if os.path.samefile(path, target):
                    target.unlink()
        for old, target in kept:
            with contextlib.suppress(OSError):
                os.replace(old, target)
        raise


def holds_none_of(target: Path, protect: tuple[str | os.PathLike[str], ...]) -> Result[Path, OutputRefused]:
    """``target``, unless replacing it would delete one of ``protect`` (it is, or holds, that path)."""
    real = os.path.realpath(target)
    for item in protect:
        if path_problem(item) is not None:
            continue  # names no file: cannot be inside
        inside = os.path.realpath(item)
        if inside == real or inside.startswith(real + os.sep):
            return Failure(OutputRefused(str(target), f"holds the input {item}; write the output elsewhere"))
    return Success(target)


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def _replace_keeping_the_old_until_done(staging: Path, target: Path) -> None:
    """Move the old ``target`` aside, ``staging`` into its place, then delete the old one. Whatever
    stops this (an error, SIGTERM raising between any two steps), the old one is put back unless the
    new one is already in place (the backup is removed as :func:`_made_beside` removes what it made)."""
    with _made_beside(target, directory=True) as backup:
        old = backup / target.name
        try:
            os.replace(target, old)
            os.replace(staging, target)
        except BaseException:
            if os.path.lexists(old) and not os.path.lexists(target):
                os.replace(old, target)
            raise


def _missing_parents(target: Path) -> list[Path]:
    missing = []
    for parent in target.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}


def _write_into(target: Path, write: Callable[[Path], None], *, overwrite: bool) -> Result[Path, OutputRefused]:
    created = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _made_beside(target, directory=True) as staging:
            write(staging)
            os.chmod(staging, 0o777 & ~_umask())
            if overwrite and target.exists():
                _replace_keeping_the_old_until_done(staging, target)
            else:
                try:
                    os.rename(staging, target)  # never replaces a directory with something in it
                except OSError as error:
                    if error.errno in _TAKEN:
                        raise FileExistsError("appeared while converting (another conversion?); not replaced") from None
                    raise
    except BaseException as error:
        for parent in created:  # deepest first; only the empty ones this run made
            with contextlib.suppress(OSError):
                parent.rmdir()
        if not isinstance(error, OSError):
            raise  # an interrupt, or a bug in a writer: not the output's fault (the CLI says which)
        detail = " ".join(str(error).split())
        return Failure(OutputRefused(str(target), f"could not write output: {type(error).__name__}: {detail}"))
    return Success(target)
