"""Writing tensors: safetensors streamed tensor by tensor (copied from the mapped source where
unchanged), what save_pretrained writes, and torch files that name classes wmap never imports."""

from __future__ import annotations

import copy
import errno
import json
import os
import struct
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from wmap.io.mapped import MappedFile, copy_from_file
from wmap.io.torch_file import PickledAs as PickledAs  # re-exported where it always was
from wmap.io.torch_file import save_pickled_as, writable, write_torch_file
from wmap.kinds import DTYPES
from wmap.target import GENERATION_FILE, TargetLayout

if TYPE_CHECKING:
    from huggingface_hub import StateDictSplit
    from transformers import FeatureExtractionMixin, PretrainedConfig, PreTrainedTokenizerBase

SAFETENSORS_DTYPES: dict[torch.dtype, str] = {getattr(torch, name): code for name, code in DTYPES}
"""torch dtype -> safetensors' code, from :data:`wmap.kinds.DTYPES`."""


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
                    done = copy_from_file(copy_from, handle.fileno(), at, tensor.numel() * tensor.element_size())
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


def shard_split(state: Mapping[str, torch.Tensor], max_shard_size: int | str) -> StateDictSplit:
    """``huggingface_hub``'s split of ``state`` into shards (what ``split_torch_state_dict_into_shards``
    gives), with its measures of a plain tensor's storage (its size, and its device, address and size
    as its identity). A conversion holds plain tensors only; the torch wrapper would import
    ``torch.distributed.tensor`` (half a second) to recognise distributed ones."""
    from huggingface_hub import constants, split_state_dict_into_shards_factory

    return split_state_dict_into_shards_factory(
        dict(state),
        get_storage_size=_storage_size,
        get_storage_id=_storage_id,
        filename_pattern=constants.SAFETENSORS_WEIGHTS_FILE_PATTERN,
        max_shard_size=max_shard_size,
    )


def _storage_size(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().nbytes()


def _storage_id(tensor: torch.Tensor) -> tuple[torch.device, int, int]:
    return tensor.device, tensor.untyped_storage().data_ptr(), _storage_size(tensor)


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
    split = shard_split(state, max_shard_size)
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
    config: PretrainedConfig,
    architecture: str,
    target: TargetLayout,
    state: Mapping[str, torch.Tensor],
    directory: Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    source: MappedFile | None = None,
) -> None:
    """What ``save_pretrained(directory, max_shard_size=...)`` of a model of class ``architecture`` writes,
    the weights streamed from ``state``, the model known by its ``target`` layout
    (:func:`wmap.layout.target_layout_of`): no model is needed, so a layout kept from an earlier run
    spares building one (and importing its code).

    ``state`` holds exactly the target's keys (loaded strictly, or checked against the layout);
    writing from it (and from the source file itself where a tensor is unchanged) avoids the second
    copy ``save_pretrained`` makes. A tied copy (Whisper's ``proj_out``) is left out, as
    ``save_pretrained`` leaves it: loading ties it again. Tensors are written in the model's own
    order, so that the same model gives the same bytes from any source (an original, or the export of
    a converted directory). ``config`` is not changed: its copy gets the dtype and the class written.
    """
    keys = [*(k for k in target.layout if k in state), *(k for k in state if k not in target.layout)]
    tied = target.tied
    state = {key: state[key] for key in keys if not (key in tied and tied[key] in state)}
    floating = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    written = copy.deepcopy(config)
    written.dtype = str(floating).split(".")[1]
    written.architectures = [architecture]
    written.save_pretrained(directory)
    if target.generation is not None:
        (directory / GENERATION_FILE).write_text(target.generation, encoding="utf-8")
    write_weights(directory, state, max_shard_size=max_shard_size, source=source)


PROCESSOR_FILE = "processor_config.json"


def save_processor(
    processor_class: str, feature_extractor: FeatureExtractionMixin, tokenizer: PreTrainedTokenizerBase, directory: Path
) -> None:
    """What ``processor_class(feature_extractor=..., tokenizer=...).save_pretrained(directory)`` writes for a
    processor of one feature extractor and one tokenizer (and no chat template or custom code): the
    tokenizer's files, marked with the processor's class, and ``processor_config.json`` holding the
    feature extractor's settings. The processor class itself is not imported: its module
    (``transformers.processing_utils``) imports the whole modelling stack, some 2 s of a conversion
    that needs none of it. The files are byte for byte the processor's own (``tests/test_writing.py``
    compares them for every processor a shipped family writes)."""
    tokenizer._set_processor_class(processor_class)
    tokenizer.save_pretrained(directory)
    settings = {"feature_extractor": feature_extractor.to_dict(), "processor_class": processor_class}
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    (directory / PROCESSOR_FILE).write_text(text, encoding="utf-8")


def _pickle_module() -> Any:
    """A pickle module for ``torch.save`` that writes :class:`PickledAs` values as their class."""
    import pickle
    import types

    python_pickler: Any = pickle._Pickler  # the Python pickler: its save() can be overridden

    class Pickler(python_pickler):  # type: ignore[misc]
        def save(self, obj: object, save_persistent_id: bool = True) -> None:
            if isinstance(obj, PickledAs):
                save_pickled_as(self, obj)
                return
            super().save(obj, save_persistent_id)

    module = types.ModuleType("wmap_pickle")
    module.Pickler = Pickler  # type: ignore[attr-defined]
    module.Unpickler = pickle.Unpickler  # type: ignore[attr-defined]
    module.load = pickle.load  # type: ignore[attr-defined]
    return module


def save_torch(container: object, path: Path, sources: Iterable[MappedFile] = ()) -> None:
    """``torch.save(container, path)``, :class:`PickledAs` values written as the classes they name;
    record by record where every tensor's dtype allows (:func:`~wmap.io.torch_file.write_torch_file`:
    a tensor unchanged in one of the mapped ``sources`` is read from its file in bounded chunks, so
    the model is never resident), else by ``torch.save``. A write that fails (a full disk) is an
    ``OSError``, as any other write's: torch's zip writer says so with a ``RuntimeError``."""
    if writable(container):
        write_torch_file(container, path, sources)
        return
    try:
        torch.save(container, path, pickle_module=_pickle_module())
    except RuntimeError as error:
        if any(sign in str(error) for sign in ("inline_container", "PytorchStreamWriter", "file write failed")):
            # torch's zip writer: a short write shows as "unexpected pos", a failed one as "file write failed"
            raise OSError(errno.EIO, "the file could not be written (a full disk?)") from error
        raise
