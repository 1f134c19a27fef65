"""End-to-end entry points over a registered model family: preview (dry run) and convert.

This module only orchestrates: reading goes through :mod:`wmap.io`, deciding
through :mod:`wmap.plan`, tensors through :mod:`wmap.apply`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import torch
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.apply import apply_plan, fits_layout, load_into
from wmap.config_fields import IgnoredField
from wmap.errors import BadConfig, UnreadableCheckpoint, WmapError, WrongFamily
from wmap.io import (
    DEFAULT_MAX_SHARD_SIZE,
    Checkpoint,
    Source,
    check_output,
    holds_none_of,
    mapped_file,
    parse_json,
    read_small_text,
    read_source,
    save_pretrained_streaming,
    shard_split,
    write_directory_atomically,
)
from wmap.kinds import WRITABLE
from wmap.layout import Kinds, build_on_meta, target_layout_of
from wmap.models.base import ModelSpec, TranslatedConfig, Writer, class_name, config_from_dict
from wmap.plan import NO_EXCEPTIONS, Accept, MappingPlan
from wmap.planner import make_plan
from wmap.registry import Registry, resolve
from wmap.target import TargetLayout
from wmap.target_layouts import LayoutCache
from wmap.transforms import Layout, Transform

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_T = TypeVar("_T")

ConfigSource = str | os.PathLike[str] | PretrainedConfig | None
"""A ``--config`` JSON file, a ready config object, or ``None`` (from the checkpoint / defaults)."""


@attrs.frozen
class Prepared:
    """Everything decided before any tensor is touched."""

    spec: ModelSpec
    config: PretrainedConfig
    pipeline: Transform
    target: PreTrainedModel | None
    """The target model on ``meta``; ``None`` where its layout was kept (:mod:`wmap.target_layouts`)."""
    target_layout: TargetLayout
    """The target's layout and what its directory is written from (kept, or read off ``target``)."""
    plan: MappingPlan
    ignored: tuple[IgnoredField, ...] = ()
    """Fields of the checkpoint's config that the conversion does not carry over, with the reasons."""


def widen(result: Result[_T, WmapError]) -> Result[_T, WmapError]:
    """A result typed with the union of every error, so that ``bind`` can chain steps that fail differently."""
    return result


def resolve_config(
    spec: ModelSpec, meta: Mapping[str, Any], layout: Layout, config: ConfigSource, *, field: str = "--config"
) -> Result[TranslatedConfig, BadConfig]:
    """The override if given (a JSON file or a config object), else the family's translation.
    ``field``: what errors call the file (the ``--config`` option; an exported directory's ``config.json``)."""
    if isinstance(config, PretrainedConfig):
        if not isinstance(config, spec.config_class):
            expected = f"a config of class {spec.config_class.__name__} ({spec.name} builds {spec.target})"
            return Failure(BadConfig(spec.name, field, expected, f"a config of class {type(config).__name__}"))
        return Success(TranslatedConfig(config))
    if config is not None:
        path = Path(os.fspath(config))
        expected = _config_file(spec)
        return read_small_text(path, field, expected).bind(lambda text: _config_from_json(spec, path, text, field))
    return spec.config_from_checkpoint(meta, layout)


def _config_file(spec: ModelSpec) -> str:
    """What a ``--config`` file must be, for messages."""
    return f"a config.json of the family's config class, {spec.config_class.__name__}"


def _config_from_json(spec: ModelSpec, path: Path, text: str, field: str) -> Result[TranslatedConfig, BadConfig]:
    """The config a JSON file holds, as transformers' own validation accepts it."""
    expected = _config_file(spec)
    try:
        data = parse_json(text)
    except ValueError as error:
        return Failure(BadConfig(str(path), field, expected, f"not JSON ({type(error).__name__}: {error})"[:200]))
    if not isinstance(data, dict):
        return Failure(BadConfig(str(path), field, expected, f"a JSON {type(data).__name__}, not an object"))
    unbuildable = _too_many_modules(data)
    if unbuildable is not None:
        return Failure(
            BadConfig(str(path), unbuildable[0], f"at most {MAX_MODULES} (no real model has more)", unbuildable[1])
        )
    kind = spec.config_class.model_type
    if data.get("model_type", kind) != kind:  # another family's config: from_dict would take it regardless
        return Failure(BadConfig(str(path), "model_type", f"{kind!r} ({expected})", repr(data["model_type"])[:80]))
    return (
        config_from_dict(spec.config_class, data)
        .map(TranslatedConfig)
        .alt(lambda detail: BadConfig(str(path), field, expected, detail))
    )


MAX_MODULES = 4096
"""The most layers (or conv layers, ...) a config may ask for: building a model on ``meta`` takes time
per module, so ``num_hidden_layers: 10**9`` would hang before any check could compare it with the weights."""


def _too_many_modules(data: Mapping[str, Any], depth: int = 0) -> tuple[str, str] | None:
    """A field of a config JSON (or of a nested encoder/decoder config) that counts modules beyond
    :data:`MAX_MODULES`: an integer named ``*layers*`` or a list of per-layer settings (``conv_dim``)."""
    for key, value in data.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and "layers" in key and value > MAX_MODULES:
            return key, str(value)[:40]
        if isinstance(value, list) and len(value) > MAX_MODULES and key.startswith(("conv_", "tdnn_", "upsampling")):
            return key, f"a list of {len(value)}"
        if isinstance(value, Mapping) and depth < 2:
            found = _too_many_modules(value, depth + 1)
            if found is not None:
                return f"{key}.{found[0]}", found[1]
    return None


def build_target(spec: ModelSpec, config: PretrainedConfig) -> Result[PreTrainedModel, BadConfig]:
    try:
        return Success(build_on_meta(lambda: spec.build(config)))
    except Exception as error:  # a config transformers cannot build from (its errors are of many types)
        detail = " ".join(str(error).split())[:200]
        return Failure(BadConfig(spec.name, "<config>", f"a config {spec.target} can be built from", detail))


def target_of(
    spec: ModelSpec, config: PretrainedConfig, layouts: LayoutCache | None = None
) -> Result[tuple[TargetLayout, PreTrainedModel | None], BadConfig]:
    """The target's layout and kinds, and the model on ``meta`` where it was built: a layout kept in
    ``layouts`` spares building it (and importing the modelling code); one built is kept there, unless
    building the model changed its config (``SpeechEncoderDecoderModel`` sets ``tie_word_embeddings``):
    a directory written without the model would then not have the config the model would write."""
    key = None if layouts is None else layouts.key(class_name(spec.built_class(config)), config)
    kept = None if layouts is None or key is None else layouts.load(key)
    if kept is not None:
        return Success((kept, None))

    def measured(model: PreTrainedModel) -> tuple[TargetLayout, PreTrainedModel | None]:
        found = target_layout_of(model)
        if layouts is not None and key == layouts.key(class_name(spec.built_class(model.config)), model.config):
            layouts.store(key, found)
        return found, model

    return build_target(spec, config).map(measured)


def model_of(prepared: Prepared) -> Result[PreTrainedModel, BadConfig]:
    """The target model on ``meta``: the one prepared, or built now where its layout was kept."""
    return Success(prepared.target) if prepared.target is not None else build_target(prepared.spec, prepared.config)


def prepare(
    spec: ModelSpec,
    layout: Layout,
    meta: Mapping[str, Any],
    config: ConfigSource = None,
    *,
    lint: bool = True,
    kinds: Kinds | None = None,
    layouts: LayoutCache | None = None,
) -> Result[Prepared, WmapError]:
    """Config, pipeline, target model on ``meta`` and the plan, from a source layout (and the
    tensors' ``kinds``, so that a kind the output cannot hold is refused by the plan). ``layouts``:
    where target layouts are kept (a kept one spares building the target)."""

    def planned(translated: TranslatedConfig) -> Result[Prepared, BadConfig]:
        pipeline = spec.pipeline(translated.config, meta)

        def prepared(target: tuple[TargetLayout, PreTrainedModel | None]) -> Prepared:
            found, model = target
            plan = make_plan(
                pipeline,
                layout,
                found.layout,
                lint=lint,
                kinds=kinds,
                target_kinds=found.kinds,
                made=spec.made(translated.config),
            )
            return Prepared(spec, translated.config, pipeline, model, found, plan, translated.ignored)

        return target_of(spec, translated.config, layouts).map(prepared)

    return widen(resolve_config(spec, meta, layout, config)).bind(planned)


def _of_the_family(prepared: Prepared, where: str, layout: Layout) -> Result[Prepared, WmapError]:
    """The prepared conversion, unless no rule spoke about any key (a checkpoint of another family)."""
    plan = prepared.plan
    if layout and not plan.applied and not plan.skipped and not plan.refused:
        return Failure(WrongFamily(prepared.spec.name, where, tuple(list(layout)[:3])))
    return Success(prepared)


Family = str | ModelSpec
"""A family as callers name it: a :class:`ModelSpec`, a registered name, or ``"package.module:SPEC"``."""


def preview(
    model: Family,
    checkpoint: str | os.PathLike[str] | None = None,
    config: ConfigSource = None,
    *,
    registry: Registry | None = None,
    processor_file: str | os.PathLike[str] | None = None,
    layouts: LayoutCache | None = None,
) -> Result[Prepared, WmapError]:
    """The dry run: plan a conversion from names and shapes only.

    Without ``checkpoint`` the family's reference layout is used. ``registry``
    resolves a name (default: the shipped and installed families). ``processor_file``: the user's
    file where the family reads part of its source from it (MusicGen's ``--text-encoder``).
    ``layouts``: where target layouts are kept (:mod:`wmap.target_layouts`); a kept one spares
    building the target model, and ``Prepared.target`` is then ``None``.
    """
    file = None if processor_file is None else Path(processor_file)

    def source(spec: ModelSpec) -> Result[tuple[Source, str], WmapError]:
        if checkpoint is None:
            where = f"<{spec.name} reference layout>"
            return widen(spec.reference_layout()).map(lambda found: (Source(found[0], {}, found[1]), where))
        if spec.reads is not None:
            parts = spec.reads(os.fspath(checkpoint), file)
            return parts.map(lambda read: (Source(read.layout, read.kinds, read.meta), os.fspath(checkpoint)))
        return widen(read_source(checkpoint, stand_ins=spec.stand_ins)).map(lambda read: (read, os.fspath(checkpoint)))

    def planned(spec: ModelSpec) -> Result[Prepared, WmapError]:
        return source(spec).bind(lambda found: _planned_from(spec, found[0], found[1], config, layouts))

    return widen(resolve(model, registry)).bind(planned)


def _planned_from(
    spec: ModelSpec, source: Source, where: str, config: ConfigSource, layouts: LayoutCache | None
) -> Result[Prepared, WmapError]:
    """The plan of ``source`` (read from ``where``), unless no rule spoke about any of its keys."""
    prepared = prepare(spec, source.layout, source.meta, config, kinds=source.kinds, layouts=layouts)
    return prepared.bind(lambda ready: _of_the_family(ready, where, source.layout))


def _no_file_unless_taken(
    spec: ModelSpec, file: str | os.PathLike[str] | None, processor: bool = True
) -> Result[ModelSpec, WmapError]:
    if file is not None and not processor:
        return Failure(BadConfig(spec.name, "--no-processor", "no --dict/--tokenizer with it", os.fspath(file)))
    if file is not None and spec.takes_file is None:
        expected = "no file: this family takes none (it writes no tokenizer)"
        return Failure(BadConfig(spec.name, "--dict/--tokenizer", expected, os.fspath(file)))
    return Success(spec)


def convert(
    model: Family,
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: ConfigSource = None,
    *,
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
    accept: Accept = NO_EXCEPTIONS,
    on_plan: Callable[[MappingPlan], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    processor_file: str | os.PathLike[str] | None = None,
    registry: Registry | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    processor: bool = True,
    layouts: LayoutCache | None = None,
) -> Result[Path, WmapError]:
    """Read, plan, refuse unless clean, apply, load strictly, and write ``out_dir`` atomically.

    ``out_dir`` becomes a ``save_pretrained`` directory (safetensors) plus the
    processor files the original script wrote (for CTC families a
    ``Wav2Vec2Processor`` with the checkpoint's own vocabulary). Nothing is
    written on failure. ``on_plan`` sees the plan before anything is applied;
    ``on_step`` is told each stage as it starts (for progress displays).
    ``processor_file`` is the file the family builds its tokenizer from where the
    checkpoint lacks it (``--dict dict.ltr.txt`` for CTC families, ``--tokenizer``
    a sentencepiece model for ``wav2vec2_mbart``); it is read before anything is written.
    ``max_shard_size`` (bytes, or ``"5GB"``) splits the weights into shards with an index, as
    ``save_pretrained`` does. Tensors that stay as they are in a memory-mapped source are copied file
    to file, so conversion needs little more memory than its largest changed tensor.
    ``processor=False`` writes the weights and configs alone (no tokenizer or feature extractor): a
    CTC checkpoint whose dictionary is lost still converts (``--no-processor``).
    ``layouts``: where target layouts are kept (:mod:`wmap.target_layouts`): a kept one spares
    building the target model; the tensors are then checked against its layout (every key, each
    shape), as a strict load checks them, and the directory is written from it.
    """
    step = on_step or (lambda _: None)
    file = None if processor_file is None else Path(processor_file)

    def read(spec: ModelSpec) -> Result[tuple[ModelSpec, Checkpoint], WmapError]:
        step("reading checkpoint")
        return spec.read(checkpoint, file).map(lambda source: (spec, source))

    def planned(found: tuple[ModelSpec, Checkpoint]) -> Result[tuple[Prepared, Checkpoint], WmapError]:
        spec, source = found
        step("planning")

        def seen(prepared: Prepared) -> Result[Prepared, WmapError]:
            if on_plan is not None:
                on_plan(prepared.plan)
            return _of_the_family(prepared, source.path, source.layout)

        prepared = prepare(spec, source.layout, source.meta, config, lint=False, kinds=source.kinds, layouts=layouts)
        return prepared.bind(seen).map(lambda p: (p, source))

    def written(found: tuple[Prepared, Checkpoint]) -> Result[Path, WmapError]:
        prepared, source = found
        extras = prepared.spec.extras if processor else prepared.spec.without_processor
        output = _Output(out_dir, overwrite, max_shard_size, () if file is None else (str(file),))
        writer = widen(extras(prepared.config, source.meta, file))
        return writer.bind(lambda ready: _apply_and_write(prepared, ready, source, output, dtype, accept, step))

    def output_free(spec: ModelSpec) -> Result[ModelSpec, WmapError]:
        protect = (checkpoint, *(() if file is None else (file,)))
        free = check_output(out_dir, overwrite=overwrite).bind(lambda target: holds_none_of(target, protect))
        return widen(free).map(lambda _: spec)

    return (
        widen(floating_dtype(dtype))
        .bind(lambda _: widen(resolve(model, registry)))
        .bind(output_free)
        .bind(lambda spec: _shard_size_valid(spec, max_shard_size))
        .bind(lambda spec: _no_file_unless_taken(spec, processor_file, processor))
        .bind(read)
        .bind(planned)
        .bind(written)
    )


@attrs.frozen
class _Output:
    directory: str | os.PathLike[str]
    overwrite: bool
    max_shard_size: int | str
    protect: tuple[str, ...] = ()


def _shard_size_valid(spec: ModelSpec, size: int | str) -> Result[ModelSpec, WmapError]:
    """The size checked now, by the same parser the writer uses (``huggingface_hub``'s split)."""
    try:
        if isinstance(size, bool) or (isinstance(size, int) and size <= 0):
            raise ValueError("not a positive size")
        if isinstance(size, str) and not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*[KMGT]B", size.strip().upper()):
            raise ValueError("not a positive number of KB, MB, GB or TB")
        shard_split({}, max_shard_size=size)
    except (ValueError, TypeError) as error:
        found = f"{size!r} ({' '.join(str(error).split())[:80]})"
        return Failure(BadConfig("--max-shard-size", "max_shard_size", "a size such as 5GB or 500MB", found))
    return Success(spec)


def _apply_and_write(
    prepared: Prepared,
    extras: Writer,
    source: Checkpoint,
    output: _Output,
    dtype: torch.dtype | None,
    accept: Accept,
    step: Callable[[str], None],
) -> Result[Path, WmapError]:
    step("applying plan")
    mapped = mapped_file(source.path, source.tensors.values())

    target = prepared.target_layout
    architecture = class_name(prepared.spec.built_class(prepared.config))

    def write(tensors: dict[str, torch.Tensor]) -> Result[Path, WmapError]:
        def files(directory: Path) -> None:
            save_pretrained_streaming(
                prepared.config,
                architecture,
                target,
                tensors,
                directory,
                max_shard_size=output.max_shard_size,
                source=mapped,
            )
            extras(directory)

        step("writing output")
        return widen(
            write_directory_atomically(
                output.directory, files, overwrite=output.overwrite, protect=(source.path, *output.protect)
            )
        )

    kinds = {key: getattr(torch, kind) for key, kind in target.kinds.items() if kind in WRITABLE}
    if mapped is not None and (dtype is not None or any(a.tied_to for a in prepared.plan.applied)):
        try:
            mapped.check_intact()  # apply reads the pages of what it casts or copies
        except OSError as error:
            return Failure(UnreadableCheckpoint(source.path, "the file as it was read", str(error)))

    def loaded(tensors: dict[str, torch.Tensor]) -> Result[Path, WmapError]:
        model = prepared.target
        strict = load_into(model, tensors) if model is not None else fits_layout(architecture, target.layout, tensors)
        return widen(strict).bind(lambda _: write(tensors))  # strict: exactly the model's keys

    applied = apply_plan(prepared.plan, source.tensors, accept=accept, dtype=dtype, target_dtypes=kinds)
    return widen(applied).bind(loaded)


def floating_dtype(dtype: torch.dtype | None) -> Result[torch.dtype | None, BadConfig]:
    """``dtype`` if it is one a model's weights can be cast to (a floating dtype), or ``None``."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype.itemsize >= 2):
        return Success(dtype)
    return Failure(BadConfig("dtype", "dtype", "a floating dtype (float32, float16, bfloat16)", repr(dtype)[:40]))
