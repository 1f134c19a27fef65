"""Safe reading of checkpoints: safetensors memory-mapped, torch pickles weights-only with an allow-
list of config classes and inert stand-ins, every storage checked to lie inside its record."""

from __future__ import annotations

import argparse
import bisect
import contextlib
import io
import json
import math
import mmap
import os
import re
import struct
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import attrs
import torch
from returns.result import Failure, Result, Success
from safetensors import SafetensorError, safe_open

from wmap.errors import UnreadableCheckpoint, UnsafePickle
from wmap.io.mapped import mapped_file
from wmap.io.paths import regular_file_problem
from wmap.kinds import DTYPES, SAFETENSORS_NAMES
from wmap.layout import Kinds, kinds_of, tensors_layout
from wmap.pickle_scan import allocating_call
from wmap.transforms import Layout

_T = TypeVar("_T")

CONTAINER_KEYS = ("best_state", "model", "state_dict", "Distiller", "model_state_dict")
"""Where the state dict lives in the containers we know: EnCodec, fairseq, lightning-style, s3prl,
openai-whisper."""

SOLVER_STATES = ("fsdp_best_state", "best_state")
"""An audiocraft solver's checkpoint (``checkpoint.th``) keeps its model's best weights as ``model`` in
one of these (the FSDP copy where it is filled), beside the live model, optimizer and EMA: the best
``model`` is what audiocraft's ``export_encodec``/``export_lm`` take, so it is what is read."""

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
        for name, held in _state_dicts(container):
            inner = flatten_tensors(held)
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


def _state_dicts(container: Mapping[Any, Any]) -> Iterator[tuple[str, object]]:
    """Where a state dict may be, in order: an audiocraft solver's best ``model`` (:data:`SOLVER_STATES`),
    then each of :data:`CONTAINER_KEYS`."""
    for name in SOLVER_STATES:
        best = container.get(name)
        if isinstance(best, Mapping) and isinstance(best.get("model"), Mapping):
            yield name, best["model"]
    for name in CONTAINER_KEYS:
        yield name, container.get(name)


NO_STAND_INS: Mapping[str, type] = MappingProxyType({})
"""Beyond plain containers and :func:`allowed_globals`, nothing: a family names the classes its
original pickles (fairseq's label dictionary: :data:`wmap.fairseq.STAND_INS`)."""

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


TORCH_PACKAGE = (
    "it is a torch.package archive: the model's code pickled with its weights (the default of DAC.save and "
    "audiotools' models), which wmap does not unpickle; save the weights alone (DAC.save(path, package=False)), "
    "or convert the weights.pth that audiotools' save_to_folder writes beside package.pth"
)


def _torch_package(path: str) -> bool:
    """Whether ``path`` is a ``torch.package`` archive (``.data/version``, no ``data.pkl``)."""
    try:
        with zipfile.ZipFile(path) as zipped:
            names = zipped.namelist()
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    pickled = any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)
    return not pickled and any(n.endswith(".data/version") for n in names)


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
        if archive and _torch_package(path):  # torch finds no data.pkl: say what the file is instead
            return Failure(UnreadableCheckpoint(path, EXPECTED, TORCH_PACKAGE))
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


def _check_file(path: str) -> Result[str, UnreadableCheckpoint]:
    problem = regular_file_problem(path)
    return Success(path) if problem is None else Failure(UnreadableCheckpoint(path, EXPECTED, problem))


def _bad_safetensors(path: str, error: BaseException) -> UnreadableCheckpoint:
    return UnreadableCheckpoint(path, "a valid safetensors file", f"{type(error).__name__}: {error}")


MAX_SAFETENSORS_HEADER = 100_000_000
"""The longest safetensors header read (safetensors' own limit)."""

TORCH_DTYPES = {code: getattr(torch, name) for name, code in DTYPES}
"""safetensors' dtype codes -> torch dtypes, from :data:`wmap.kinds.DTYPES`."""


def mapped_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors as views of one private memory map of the file (no copy: a tensor's
    pages are read when it is used, and a writer can copy its bytes from the file,
    :func:`~wmap.io.mapped.mapped_file`), and its metadata. The header is checked against the file
    (bounded, every tensor within the data, sizes that agree with dtype and shape): ``ValueError``."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(MAX_SAFETENSORS_HEADER, size - 8):
            raise ValueError(f"a header of {length} bytes in a file of {size}")
        header = json.loads(handle.read(length))
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) if size > 8 + length else None
    if not isinstance(header, dict):
        raise ValueError("a header that is not a JSON object")
    start = 8 + length
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = TORCH_DTYPES.get(str(entry.get("dtype"))) if isinstance(entry, dict) else None
        if dtype is None:
            raise ValueError(f"{name}: dtype {entry.get('dtype') if isinstance(entry, dict) else entry!r}")
        shape, (begin, end) = [int(n) for n in entry["shape"]], entry["data_offsets"]
        count = math.prod(shape)
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= size - start or end - begin != count * dtype.itemsize:
            raise ValueError(f"{name}: shape {shape} of {dtype} at bytes {begin}..{end}")
        if count == 0 or mapped is None:
            tensors[name] = torch.empty(shape, dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(mapped, dtype=dtype, count=count, offset=start + begin).view(shape)
    metadata = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _read_safetensors(path: str) -> Result[Checkpoint, UnreadableCheckpoint | UnsafePickle]:
    try:
        tensors, metadata = mapped_safetensors(path)
        return Success(Checkpoint(path, tensors, metadata))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
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
    path: str | os.PathLike[str], *, stand_ins: Mapping[str, type] = NO_STAND_INS
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
            loaded.bind(lambda container: widen_reading(unwrap(container, where)))
            .map(lambda found: Checkpoint(where, found[0], found[1]))
            .bind(_storages_within_records)
        )

    checked: Result[str, UnreadableCheckpoint | UnsafePickle] = _check_file(where)
    return checked.bind(_read_safetensors if _is_safetensors(where) else pickled)


def read_pickled(
    path: str | os.PathLike[str], *, stand_ins: Mapping[str, type] = NO_STAND_INS
) -> Result[object, UnreadableCheckpoint | UnsafePickle]:
    """A torch file's object as it is (for one that holds no state dict: audiocraft's reference to a
    pretrained model by name), read as safely as :func:`read_checkpoint` reads."""
    where = os.fspath(path)
    checked: Result[str, UnreadableCheckpoint | UnsafePickle] = _check_file(where)
    return checked.bind(lambda _: _load_pickle(where, stand_ins))


def read_source(
    path: str | os.PathLike[str], *, stand_ins: Mapping[str, type] = NO_STAND_INS
) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    """Names, shapes, kinds and metadata: for safetensors just the header is read (``stand_ins`` as
    for :func:`read_checkpoint`)."""
    where = os.fspath(path)
    if not _is_safetensors(where):
        return read_checkpoint(where, stand_ins=stand_ins).map(
            lambda found: Source(found.layout, found.kinds, found.meta)
        )
    return widen_reading(_check_file(where)).bind(safetensors_header)


def read_layout(
    path: str | os.PathLike[str], *, stand_ins: Mapping[str, type] = NO_STAND_INS
) -> Result[tuple[Layout, Mapping[str, Any]], UnreadableCheckpoint | UnsafePickle]:
    """Names and shapes (and metadata) only: for safetensors just the header is read."""
    return read_source(path, stand_ins=stand_ins).map(lambda found: (found.layout, found.meta))


def safetensors_header(where: str) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    try:
        with safe_open(where, framework="pt") as handle:
            slices = {key: handle.get_slice(key) for key in handle.keys()}  # noqa: SIM118
            layout = {key: tuple(part.get_shape()) for key, part in slices.items()}
            kinds = {key: SAFETENSORS_NAMES.get(part.get_dtype(), part.get_dtype()) for key, part in slices.items()}
            return Success(Source(layout, kinds, dict(handle.metadata() or {})))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        return Failure(_bad_safetensors(where, error))


def widen_reading(
    result: Result[_T, UnreadableCheckpoint | UnsafePickle],
) -> Result[_T, UnreadableCheckpoint | UnsafePickle]:
    """The reading errors' union, so that ``bind`` chains steps that fail with either."""
    return result
