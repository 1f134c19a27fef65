"""End-to-end entry points over a registered model family: preview (dry run) and convert.

This module only orchestrates: reading goes through :mod:`wmap.io`, deciding
through :mod:`wmap.plan`, tensors through :mod:`wmap.apply`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import torch
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig, PreTrainedModel

from wmap.apply import apply_plan, load_into
from wmap.config_fields import IgnoredField
from wmap.errors import BadConfig, TensorMismatch, UnreadableCheckpoint, WmapError, WrongFamily
from wmap.io import (
    DEFAULT_MAX_SHARD_SIZE,
    Checkpoint,
    Source,
    check_output,
    holds_none_of,
    inputs_of,
    looks_like_checkpoint,
    mapped_file,
    parse_json,
    read_checkpoint,
    read_directory_source,
    read_small_text,
    read_source,
    read_weights,
    save_pretrained_streaming,
    save_torch,
    write_directory_atomically,
    write_files_atomically,
)
from wmap.layout import Kinds, build_on_meta, kinds_of, layout_of
from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig, Writer, no_extras
from wmap.pipeline import first_match
from wmap.plan import NO_EXCEPTIONS, Accept, MappingPlan
from wmap.planner import make_plan, reverse_plan
from wmap.registry import Registry, resolve
from wmap.reverse import reverse, tied_primary
from wmap.transforms import Layout, Transform

_T = TypeVar("_T")

ConfigSource = str | os.PathLike[str] | PretrainedConfig | None
"""A ``--config`` JSON file, a ready config object, or ``None`` (from the checkpoint / defaults)."""


@attrs.frozen
class Prepared:
    """Everything decided before any tensor is touched."""

    spec: ModelSpec
    config: PretrainedConfig
    pipeline: Transform
    target: PreTrainedModel
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
            expected = f"a {spec.config_class.__name__} ({spec.name} builds {spec.target})"
            return Failure(BadConfig(spec.name, field, expected, f"a {type(config).__name__}"))
        return Success(TranslatedConfig(config))
    if config is not None:
        path = Path(os.fspath(config))
        expected = f"a {spec.config_class.__name__} JSON file"
        return read_small_text(path, field, expected).bind(lambda text: _config_from_json(spec, path, text, field))
    return spec.config_from_checkpoint(meta, layout)


def _config_from_json(spec: ModelSpec, path: Path, text: str, field: str) -> Result[TranslatedConfig, BadConfig]:
    """The config a JSON file holds, as transformers' own validation accepts it."""
    expected = f"a {spec.config_class.__name__} JSON file"
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
    try:
        return Success(TranslatedConfig(spec.config_class.from_dict(data)))
    except Exception as error:  # transformers' and huggingface_hub's validation errors are of many types
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        return Failure(BadConfig(str(path), field, expected, detail))


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


def _build_target(spec: ModelSpec, config: PretrainedConfig) -> Result[PreTrainedModel, BadConfig]:
    try:
        return Success(build_on_meta(lambda: spec.build(config)))
    except Exception as error:  # a config transformers cannot build from (its errors are of many types)
        detail = " ".join(str(error).split())[:200]
        return Failure(BadConfig(spec.name, "<config>", f"a config {spec.target} can be built from", detail))


def prepare(
    spec: ModelSpec,
    layout: Layout,
    meta: Mapping[str, Any],
    config: ConfigSource = None,
    *,
    lint: bool = True,
    kinds: Kinds | None = None,
) -> Result[Prepared, WmapError]:
    """Config, pipeline, target model on ``meta`` and the plan, from a source layout (and the
    tensors' ``kinds``, so that a kind the output cannot hold is refused by the plan)."""

    def planned(translated: TranslatedConfig) -> Result[Prepared, BadConfig]:
        pipeline = spec.pipeline(translated.config, meta)
        return _build_target(spec, translated.config).map(
            lambda target: Prepared(
                spec,
                translated.config,
                pipeline,
                target,
                make_plan(
                    pipeline,
                    layout,
                    layout_of(target),
                    lint=lint,
                    kinds=kinds,
                    target_kinds=kinds_of(target.state_dict()),
                ),
                translated.ignored,
            )
        )

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
) -> Result[Prepared, WmapError]:
    """The dry run: plan a conversion from names and shapes only.

    Without ``checkpoint`` the family's reference layout is used. ``registry``
    resolves a name (default: the shipped and installed families).
    """

    def source(spec: ModelSpec) -> Result[tuple[Source, str], WmapError]:
        if checkpoint is None:
            where = f"<{spec.name} reference layout>"
            return widen(spec.reference_layout()).map(lambda found: (Source(found[0], {}, found[1]), where))
        return widen(read_source(checkpoint)).map(lambda read: (read, os.fspath(checkpoint)))

    def planned(spec: ModelSpec) -> Result[Prepared, WmapError]:
        return source(spec).bind(
            lambda found: prepare(spec, found[0].layout, found[0].meta, config, kinds=found[0].kinds).bind(
                lambda prepared: _of_the_family(prepared, found[1], found[0].layout)
            )
        )

    return widen(resolve(model, registry)).bind(planned)


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
    """
    step = on_step or (lambda _: None)
    file = None if processor_file is None else Path(processor_file)

    def read(spec: ModelSpec) -> Result[tuple[ModelSpec, Checkpoint], WmapError]:
        step("reading checkpoint")
        return widen(read_checkpoint(checkpoint)).map(lambda source: (spec, source))

    def planned(found: tuple[ModelSpec, Checkpoint]) -> Result[tuple[Prepared, Checkpoint], WmapError]:
        spec, source = found
        step("planning")

        def seen(prepared: Prepared) -> Result[Prepared, WmapError]:
            if on_plan is not None:
                on_plan(prepared.plan)
            return _of_the_family(prepared, source.path, source.layout)

        prepared = prepare(spec, source.layout, source.meta, config, lint=False, kinds=source.kinds)
        return prepared.bind(seen).map(lambda p: (p, source))

    def written(found: tuple[Prepared, Checkpoint]) -> Result[Path, WmapError]:
        prepared, source = found
        extras = prepared.spec.extras if processor else no_extras
        return widen(extras(prepared.config, source.meta, file)).bind(
            lambda extras: _apply_and_write(
                prepared,
                source,
                extras,
                _Output(out_dir, overwrite, max_shard_size, () if file is None else (str(file),)),
                dtype,
                accept,
                step,
            )
        )

    def output_free(spec: ModelSpec) -> Result[ModelSpec, WmapError]:
        protect = (checkpoint, *(() if file is None else (file,)))
        free = check_output(out_dir, overwrite=overwrite).bind(lambda target: holds_none_of(target, protect))
        return widen(free).map(lambda _: spec)

    return (
        widen(_floating(dtype))
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
    from huggingface_hub import split_torch_state_dict_into_shards

    try:
        if isinstance(size, bool) or (isinstance(size, int) and size <= 0):
            raise ValueError("not a positive size")
        if isinstance(size, str) and not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*[KMGT]B", size.strip().upper()):
            raise ValueError("not a positive number of KB, MB, GB or TB")
        split_torch_state_dict_into_shards({}, max_shard_size=size)
    except (ValueError, TypeError) as error:
        found = f"{size!r} ({' '.join(str(error).split())[:80]})"
        return Failure(BadConfig("--max-shard-size", "max_shard_size", "a size such as 5GB or 500MB", found))
    return Success(spec)


def _apply_and_write(
    prepared: Prepared,
    source: Checkpoint,
    extras: Writer,
    output: _Output,
    dtype: torch.dtype | None,
    accept: Accept,
    step: Callable[[str], None],
) -> Result[Path, WmapError]:
    step("applying plan")

    mapped = mapped_file(source.path, source.tensors.values())

    def write(tensors: dict[str, torch.Tensor], model: PreTrainedModel) -> Result[Path, WmapError]:
        def files(directory: Path) -> None:
            save_pretrained_streaming(model, tensors, directory, max_shard_size=output.max_shard_size, source=mapped)
            extras(directory)

        step("writing output")
        return widen(
            write_directory_atomically(
                output.directory, files, overwrite=output.overwrite, protect=(source.path, *output.protect)
            )
        )

    kinds = {key: value.dtype for key, value in prepared.target.state_dict().items()}  # on meta: no memory
    if mapped is not None and (dtype is not None or any(a.tied_to for a in prepared.plan.applied)):
        try:
            mapped.check_intact()  # apply reads the pages of what it casts or copies
        except OSError as error:
            return Failure(UnreadableCheckpoint(source.path, "the file as it was read", str(error)))
    return widen(apply_plan(prepared.plan, source.tensors, accept=accept, dtype=dtype, target_dtypes=kinds)).bind(
        lambda tensors: widen(load_into(prepared.target, tensors)).bind(  # strict: exactly the model's keys
            lambda model: write(tensors, model)
        )
    )


@attrs.frozen
class Verification:
    """What ``verify`` found: every applied target compared with its source tensor."""

    checked: int
    differing: tuple[str, ...]
    absent: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.differing and not self.absent


def _compare(plan: MappingPlan, source: Checkpoint, written: Checkpoint) -> Verification:
    """Every written tensor against the source tensor the plan maps to it, bit for bit after the
    cast to the written dtype (so a NaN copied exactly verifies)."""
    differing: list[str] = []
    absent: list[str] = []
    for item in plan.applied:
        out = written.tensors.get(item.target)
        if out is None and item.tied_to is not None:
            continue  # a tied copy: left out as save_pretrained leaves it, tied again on loading
        if out is None:
            absent.append(item.target)
            continue
        original = source.tensors[item.source]
        produced = original if item.value is None else item.value.apply(original)  # what apply writes
        expected = produced.to(out.dtype)
        if out.shape != expected.shape or not torch.equal(_bits(out), _bits(expected)):
            differing.append(item.target)
    return Verification(len(plan.applied), tuple(differing), tuple(absent))


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.numel() else flat


def verify(
    model: Family,
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
) -> Result[Verification, WmapError]:
    """Check a converted directory against its source: plan again with the directory's own
    ``config.json``, then compare every written tensor with the source tensor the plan maps to it
    (cast to the written dtype). Needs neither the original package nor the target model's code."""

    def checked(spec: ModelSpec, source: Checkpoint) -> Result[Verification, WmapError]:
        return (
            prepare(spec, source.layout, source.meta, Path(out_dir) / "config.json", lint=False)
            .bind(lambda prepared: widen(prepared.plan.result()))
            .bind(lambda plan: widen(read_weights(out_dir)).map(lambda written: _compare(plan, source, written)))
        )

    return widen(resolve(model, registry)).bind(
        lambda spec: widen(read_checkpoint(checkpoint)).bind(lambda source: checked(spec, source))
    )


# --- the way back ---------------------------------------------------------------------------------


@attrs.frozen
class PreparedReverse:
    """Everything an export decides before any tensor is read: the transformers config, the
    reversed rules, the original's layout and metadata, and the reverse plan."""

    spec: ModelSpec
    exporter: Exporter
    config: PretrainedConfig
    pipeline: Transform
    meta: Mapping[str, Any]
    plan: MappingPlan


def _exporter(spec: ModelSpec) -> Result[Exporter, WmapError]:
    if spec.export is None:
        expected = "a family wmap exports (whisper, encodec_*, data2vec_audio[_ctc], wav2vec2[_ctc], hubert)"
        return Failure(BadConfig(spec.name, "export", expected, f"{spec.name} converts one way only"))
    return Success(spec.export)


@attrs.frozen
class Described:
    """What a directory's ``config.json`` describes: the target model built from it on ``meta``, as
    names, shapes and kinds. The directory's weights must be exactly these (a tied copy may be absent,
    as ``save_pretrained`` leaves it out)."""

    config: PretrainedConfig
    layout: Layout
    kinds: Kinds


def describe(spec: ModelSpec, config: PretrainedConfig) -> Result[Described, WmapError]:
    """The model ``config`` describes, on ``meta`` (no memory, no random init)."""
    return widen(_build_target(spec, config)).map(
        lambda model: Described(config, layout_of(model), kinds_of(model.state_dict()))
    )


def prepare_reverse(spec: ModelSpec, hf_dir: str | os.PathLike[str]) -> Result[PreparedReverse, WmapError]:
    """The reverse plan of ``hf_dir`` (a ``save_pretrained`` directory, one file or shards) back to
    the family's original format: the forward rules reversed (:func:`wmap.reverse.reverse`), from the
    model the directory's ``config.json`` describes (built on ``meta``) to the original's names and
    shapes, with the directory's own tensors as the source. So a tensor the model holds that the
    directory lacks is missing, one it does not hold is unknown, a shape or kind that differs is
    named: the plan checks the directory against its config, not the config against itself."""
    directory = Path(hf_dir)

    def configured(exporter: Exporter) -> Result[tuple[Exporter, Described], WmapError]:
        config = resolve_config(spec, {}, {}, directory / "config.json", field="config.json")
        return widen(config).bind(lambda found: describe(spec, found.config)).map(lambda d: (exporter, d))

    def reversed_rules(found: tuple[Exporter, Described]) -> Result[tuple[Exporter, Described, Transform], WmapError]:
        exporter, described = found
        only = exporter.way_back_only(described.config)
        return widen(reverse(spec.pipeline(described.config, {}))).map(
            lambda rules: (exporter, described, first_match("the way back", [*only, rules]) if only else rules)
        )

    def planned(found: tuple[Exporter, Described, Transform]) -> Result[PreparedReverse, WmapError]:
        exporter, described, rules = found

        def against(weights: Source, files: dict[str, str]) -> Result[PreparedReverse, WmapError]:
            what = ExportSource(described.config, rules, described.layout, files)
            return widen(exporter.original(what)).map(
                lambda original: PreparedReverse(
                    spec,
                    exporter,
                    described.config,
                    rules,
                    original[1],
                    reverse_plan(
                        rules, weights.layout, original[0], kinds=weights.kinds, expected_kinds=described.kinds
                    ),
                )
            )

        return widen(read_directory_source(directory)).bind(
            lambda weights: _companion_files(directory, exporter.reads).bind(lambda files: against(weights, files))
        )

    return _exporter(spec).bind(configured).bind(reversed_rules).bind(planned)


def _companion_files(directory: Path, names: tuple[str, ...]) -> Result[dict[str, str], WmapError]:
    """The small files of a transformers directory an exporter reads (``vocab.json``), by name;
    ``a|b`` names alternatives (the first that exists is read, under the name ``a|b``)."""
    files: dict[str, str] = {}
    for name in names:
        choices = name.split("|")
        found = next((c for c in choices if (directory / c).is_file()), choices[0])
        read = read_small_text(directory / found, found, f"the {' or '.join(choices)} of a converted directory")
        if isinstance(read, Failure):
            return widen(read).map(lambda _: {})
        files[name] = read.unwrap()
    return Success(files)


def preview_reverse(
    model: Family, hf_dir: str | os.PathLike[str], *, registry: Registry | None = None
) -> Result[PreparedReverse, WmapError]:
    """The dry run of an export: the reverse plan, from the directory's config and safetensors headers."""
    return widen(resolve(model, registry)).bind(lambda spec: prepare_reverse(spec, hf_dir))


def _tied_copies_equal(prepared: PreparedReverse, weights: Checkpoint) -> Result[Checkpoint, WmapError]:
    """A tied copy the directory holds (``proj_out``) must equal its primary: the original holds one
    tensor, so a fine-tune that untied them cannot go back without losing one."""
    for item in prepared.plan.skipped:
        primary = tied_primary(prepared.pipeline, item.key)
        if primary is None or primary not in weights.tensors or item.key not in weights.tensors:
            continue
        if not torch.equal(weights.tensors[item.key], weights.tensors[primary]):
            expected = f"equal to {primary} (tied: the original holds one tensor)"
            return Failure(TensorMismatch(item.key, expected, "a different tensor (the two were untied)"))
    return Success(weights)


def _text(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(text)

    return write


def _write_export(
    prepared: PreparedReverse,
    state: Mapping[str, torch.Tensor],
    out_file: Path,
    overwrite: bool,
    hf_dir: str | os.PathLike[str],
) -> Result[Path, WmapError]:
    """The file the original's loader reads and its companions (fairseq's ``dict.ltr.txt``), all or
    none (:func:`wmap.io.write_files_atomically`); never over a file the directory reads (a Hub
    cache's blob included), and over an existing file only if it looks like a checkpoint."""
    where = out_file.absolute()
    container = prepared.exporter.container(state, prepared.meta, where)
    files: dict[str | os.PathLike[str], Callable[[Path], None]] = {where: lambda path: save_torch(container, path)}
    for name, text in prepared.exporter.companions(prepared.meta).items():
        files[where.parent / name] = _text(text)
    protect, replaces = inputs_of(hf_dir), _replaceable(where)
    written = write_files_atomically(files, overwrite=overwrite, protect=protect, replaces=replaces)
    return widen(written).map(lambda _: where)


def _replaceable(out_file: Path) -> Callable[[Path], str | None]:
    """What ``--overwrite`` may replace: at ``out_file`` a torch checkpoint only (never a user's other
    file named by mistake); the companions the exporter names (``dict.ltr.txt``) as they are."""

    def why_not(path: Path) -> str | None:
        if path != out_file or looks_like_checkpoint(path):
            return None
        return "exists and is not a torch checkpoint: not replaced"

    return why_not


def export(
    model: Family,
    hf_dir: str | os.PathLike[str],
    out_file: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    accept: Accept = NO_EXCEPTIONS,
    dtype: torch.dtype | None = None,
    registry: Registry | None = None,
) -> Result[Path, WmapError]:
    """A transformers directory back into the original implementation's own format (``out_file``).

    Refused unless the reverse plan is clean: keys of the original that the directory cannot give
    back (the forward direction skipped them) are ``unrecoverable`` and must be named in
    ``accept.unrecoverable`` to export without them. Tensors keep the directory's dtype unless
    ``dtype`` is given. The file is written atomically and never replaces one without ``overwrite``.
    """

    def written(prepared: PreparedReverse) -> Result[Path, WmapError]:
        return (
            widen(_accepted_keys_exist(prepared.plan, accept))
            .bind(lambda _: widen(prepared.plan.result(accept)))
            .bind(
                lambda plan: (
                    widen(read_weights(hf_dir))
                    .bind(lambda weights: _tied_copies_equal(prepared, weights))
                    .bind(
                        lambda weights: widen(apply_plan(plan, weights.tensors, accept=accept, dtype=dtype)).bind(
                            lambda state: _write_export(prepared, state, Path(out_file), overwrite, hf_dir)
                        )
                    )
                )
            )
        )

    return (
        widen(_floating(dtype))
        .bind(lambda _: widen(resolve(model, registry)))
        .bind(lambda spec: _exporter(spec).map(lambda _: spec))
        .bind(lambda spec: prepare_reverse(spec, hf_dir))
        .bind(written)
    )


def _accepted_keys_exist(plan: MappingPlan, accept: Accept) -> Result[MappingPlan, BadConfig]:
    """Every key ``accept`` names is one the plan calls unrecoverable: a short or misspelt one would
    otherwise be ignored in silence and the export refused for a reason the user thinks they accepted."""
    known = {u.key for u in plan.unrecoverable}
    unknown = sorted(accept.unrecoverable - known)
    if not unknown:
        return Success(plan)
    expected = f"one of the unrecoverable keys the plan names ({', '.join(sorted(known)) or 'none'})"
    return Failure(BadConfig("--accept-unrecoverable", unknown[0], expected, repr(unknown[0])))


def _floating(dtype: torch.dtype | None) -> Result[torch.dtype | None, BadConfig]:
    """``dtype`` if it is one a model's weights can be cast to (a floating dtype), or ``None``."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point and dtype.itemsize >= 2):
        return Success(dtype)
    return Failure(BadConfig("dtype", "dtype", "a floating dtype (float32, float16, bfloat16)", repr(dtype)[:40]))
