"""Reading a save_pretrained directory's weights: one file, shards with their index, or
pytorch_model.bin, as transformers looks for them."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from returns.result import Failure, Result, Success
from safetensors import SafetensorError, safe_open

from wmap.errors import UnreadableCheckpoint, UnsafePickle
from wmap.io.mapped import MappedFile, mapped_file
from wmap.io.paths import parse_json, path_problem, read_small_text, regular_file_problem
from wmap.io.reading import (
    Checkpoint,
    Source,
    mapped_safetensors,
    read_checkpoint,
    read_source,
    safetensors_header,
    widen_reading,
)

INDEX = "model.safetensors.index.json"
_V = TypeVar("_V")


class _ShardedTensors(Mapping[str, torch.Tensor]):
    """The tensors of a sharded directory, each read (memory-mapped) from its shard when asked for."""

    def __init__(self, directory: Path, weight_map: Mapping[str, str]) -> None:
        self._directory = directory
        self._map = dict(weight_map)
        self._open: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def weight_map(self) -> Mapping[str, str]:
        """key -> the shard file that holds it."""
        return self._map

    def __getitem__(self, key: str) -> torch.Tensor:
        shard = self._map[key]
        tensors = self._open.get(shard)
        if tensors is None:
            tensors = self._open[shard] = mapped_safetensors(str(self._directory / shard))[0]
        return tensors[key]

    def opened(self) -> dict[Path, Mapping[str, torch.Tensor]]:
        """The shard files mapped so far, with their tensors."""
        return {self._directory / shard: tensors for shard, tensors in self._open.items()}

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


def in_model_directory(directory: str | os.PathLike[str], value: _V) -> Result[_V, UnreadableCheckpoint]:
    """``value``, where ``directory`` is a ``save_pretrained`` directory (:func:`weights_file` finds its
    weights), else the error naming it as such: a step of a chain, checked before its ``config.json``."""
    return weights_file(directory).map(lambda _: value)


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
        return widen_reading(found)

    return widen_reading(weights_file(directory)).bind(read)


def mapped_sources(weights: Checkpoint) -> tuple[MappedFile, ...]:
    """Where the tensors of a directory read by :func:`read_weights` lie mapped in this process (one
    file, or the shards opened so far), for a writer to copy unchanged bytes from the files."""
    tensors = weights.tensors
    files = tensors.opened() if isinstance(tensors, _ShardedTensors) else {Path(weights.path): tensors}
    found = (mapped_file(path, held.values()) for path, held in files.items())
    return tuple(source for source in found if source is not None)


def read_directory_source(directory: str | os.PathLike[str]) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    """Names, shapes and kinds of a ``save_pretrained`` directory's weights, from the safetensors
    headers alone (one file or the shards its index names)."""

    def headers(path: Path) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
        if path.name != INDEX:
            return read_source(path)
        return widen_reading(_index(path)).bind(lambda weight_map: _shard_headers(path.parent, weight_map))

    return widen_reading(weights_file(directory)).bind(headers)


def _shard_headers(
    directory: Path, weight_map: Mapping[str, str]
) -> Result[Source, UnreadableCheckpoint | UnsafePickle]:
    layout: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())):
        read = safetensors_header(str(directory / shard))
        if isinstance(read, Failure):
            return read
        layout.update(read.unwrap().layout)
        kinds.update(read.unwrap().kinds)
    return Success(Source(layout, kinds, {}))


@contextlib.contextmanager
def staged_copy(path: Path, name: str) -> Iterator[Path]:
    """A temporary directory holding a copy of ``path`` under ``name``, removed afterwards (for
    loaders that only look for a file by its conventional name in a directory)."""
    with tempfile.TemporaryDirectory() as staging:
        shutil.copyfile(path, Path(staging) / name)
        yield Path(staging)
