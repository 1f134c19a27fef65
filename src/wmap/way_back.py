"""The way back: a transformers directory to the original implementation's format (``preview_reverse``,
``export``), its reverse plan checked against the model the directory's ``config.json`` describes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import torch
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.apply import apply_plan
from wmap.conversion import Family, floating_dtype, resolve_config, target_of, widen
from wmap.errors import BadConfig, TensorMismatch, WmapError
from wmap.io import (
    Checkpoint,
    MappedFile,
    Source,
    in_model_directory,
    inputs_of,
    looks_like_checkpoint,
    mapped_sources,
    read_directory_source,
    read_small_text,
    read_weights,
    save_torch,
    write_files_atomically,
)
from wmap.models.base import Exporter, ExportSource, ModelSpec
from wmap.pipeline import first_match
from wmap.plan import NO_EXCEPTIONS, Accept, MakeRule, MappingPlan
from wmap.planner import reverse_plan
from wmap.registry import Registry, resolve
from wmap.reverse import reverse, tied_primary
from wmap.target import TargetLayout
from wmap.target_layouts import LayoutCache
from wmap.transforms import EXACT, Layout, Transform, skip


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

    @property
    def beside(self) -> tuple[str, ...]:
        """The files an export writes beside its file, known before any tensor is read: its companions
        (fairseq's ``dict.ltr.txt``) and the files of the directory it copies (``spm.model``)."""
        return (*self.exporter.companions(self.meta), *self.exporter.copied(self.meta))


def _exporter(spec: ModelSpec) -> Result[Exporter, WmapError]:
    if spec.export is None:
        expected = "a family wmap exports (whisper, encodec_*, data2vec_audio[_ctc], wav2vec2[_ctc], hubert)"
        return Failure(BadConfig(spec.name, "export", expected, f"{spec.name} converts one way only"))
    return Success(spec.export)


@attrs.frozen
class Described:
    """What a directory's ``config.json`` describes: the target model (built from it on ``meta``, or its
    layout kept), as names, shapes and kinds. The directory's weights must be exactly these (a tied copy
    may be absent, as ``save_pretrained`` leaves it out)."""

    config: PretrainedConfig
    target: TargetLayout


def describe(
    spec: ModelSpec, config: PretrainedConfig, layouts: LayoutCache | None = None
) -> Result[Described, WmapError]:
    """The model ``config`` describes, on ``meta`` (no memory, no random init), or its layout kept in
    ``layouts`` (:mod:`wmap.target_layouts`: not built, its modelling code not imported)."""
    return widen(target_of(spec, config, layouts)).map(lambda found: Described(config, found[0]))


def prepare_reverse(
    spec: ModelSpec, hf_dir: str | os.PathLike[str], layouts: LayoutCache | None = None
) -> Result[PreparedReverse, WmapError]:
    """The reverse plan of ``hf_dir`` (a ``save_pretrained`` directory, one file or shards) back to
    the family's original format: the forward rules reversed (:func:`wmap.reverse.reverse`), from the
    model the directory's ``config.json`` describes (built on ``meta``) to the original's names and
    shapes, with the directory's own tensors as the source. So a tensor the model holds that the
    directory lacks is missing, one it does not hold is unknown, a shape or kind that differs is
    named: the plan checks the directory against its config, not the config against itself.
    ``layouts``: where target layouts are kept (a kept one spares building the model)."""
    directory = Path(hf_dir)

    def configured(exporter: Exporter) -> Result[tuple[Exporter, Described], WmapError]:
        config = resolve_config(spec, {}, {}, directory / "config.json", field="config.json")
        return widen(config).bind(lambda found: describe(spec, found.config, layouts)).map(lambda d: (exporter, d))

    def reversed_rules(found: tuple[Exporter, Described]) -> Result[tuple[Exporter, Described, Transform], WmapError]:
        exporter, described = found
        made = _made_dropped(spec.made(described.config), described.target.layout)
        only = (*exporter.way_back_only(described.config), *made)
        return widen(reverse(spec.pipeline(described.config, {}))).map(
            lambda rules: (exporter, described, first_match("the way back", [*only, rules]) if only else rules)
        )

    def planned(found: tuple[Exporter, Described, Transform]) -> Result[PreparedReverse, WmapError]:
        exporter, described, rules = found

        def against(weights: Source, files: dict[str, str]) -> Result[PreparedReverse, WmapError]:
            listed = tuple(sorted(entry.name for entry in directory.iterdir() if entry.is_file()))
            what = ExportSource(described.config, rules, described.target.layout, files, listed)
            return widen(exporter.original(what)).map(
                lambda original: PreparedReverse(
                    spec,
                    exporter,
                    described.config,
                    rules,
                    original[1],
                    reverse_plan(
                        rules,
                        weights.layout,
                        original[0],
                        kinds=weights.kinds,
                        expected_kinds=described.target.kinds,
                        made=exporter.made(described.config),
                    ),
                )
            )

        def with_files(weights: Source) -> Result[PreparedReverse, WmapError]:
            return _companion_files(directory, exporter.reads).bind(lambda files: against(weights, files))

        return widen(read_directory_source(directory)).bind(with_files)

    return (
        _exporter(spec).bind(partial(in_model_directory, directory)).bind(configured).bind(reversed_rules).bind(planned)
    )


def _made_dropped(rules: tuple[MakeRule, ...], layout: Layout) -> tuple[Transform, ...]:
    """What the forward direction made from the config (an identity projection) has no place in the
    original: each key of the model's ``layout`` a rule names, dropped while it is still what would be
    made (:func:`_made_still_as_made` checks); not what the original holds too (``kept_back``)."""
    dropped = (rule for rule in rules if not rule.kept_back)
    return tuple(
        skip(key, f"made by the forward direction ({rule.reason}); dropped while it still is", EXACT)
        for rule in dropped
        for key in layout
        if rule.names(key)
    )


def _made_still_as_made(prepared: PreparedReverse, weights: Checkpoint) -> Result[Checkpoint, WmapError]:
    """A made tensor the directory holds goes back only by being dropped, so it must still be what
    would be made: a fine-tune that trained the identity projection has no place in the original."""
    rules = tuple(rule for rule in prepared.spec.made(prepared.config) if not rule.kept_back)
    for item in prepared.plan.skipped:
        rule = next((r for r in rules if r.names(item.key)), None)
        if rule is not None and item.key in weights.tensors and not rule.maker.is_made(weights.tensors[item.key]):
            expected = f"{rule.maker!r}, as made ({rule.reason}); the original has no place for another"
            return Failure(TensorMismatch(item.key, expected, "a trained tensor"))
    return Success(weights)


def _companion_files(directory: Path, names: tuple[str, ...]) -> Result[dict[str, str], WmapError]:
    """The small files of a transformers directory an exporter reads (``vocab.json``), by name;
    ``a|b`` names alternatives: the first that exists is read under the name ``a|b``, and every one
    that exists under its own name too (so that the exporter can check that they agree)."""
    files: dict[str, str] = {}
    for name in names:
        choices = name.split("|")
        present = [c for c in choices if (directory / c).is_file()] or choices[:1]
        for found in present:
            read = read_small_text(directory / found, found, f"the {' or '.join(choices)} of a converted directory")
            if isinstance(read, Failure):
                return widen(read).map(lambda _: {})
            files[found] = read.unwrap()
        files[name] = files[present[0]]
    return Success(files)


def preview_reverse(
    model: Family,
    hf_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    layouts: LayoutCache | None = None,
) -> Result[PreparedReverse, WmapError]:
    """The dry run of an export: the reverse plan, from the directory's config and safetensors headers
    (the target's layout kept in ``layouts`` where one is)."""
    return widen(resolve(model, registry)).bind(lambda spec: prepare_reverse(spec, hf_dir, layouts))


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


def _torch_file(container: object, sources: tuple[MappedFile, ...]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        save_torch(container, path, sources)

    return write


def _text(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(text)

    return write


@attrs.frozen
class _Applied:
    """The reverse plan applied: the original's state dict, and where its unchanged tensors lie mapped."""

    prepared: PreparedReverse
    state: StateDict
    sources: tuple[MappedFile, ...]


def _write_export(
    applied: _Applied, out_file: Path, overwrite: bool, hf_dir: str | os.PathLike[str]
) -> Result[Path, WmapError]:
    """The file the original's loader reads and its companions (fairseq's ``dict.ltr.txt``, files of the
    directory copied beside it), all or
    none (:func:`wmap.io.write_files_atomically`); never over a file the directory reads (a Hub
    cache's blob included), and over an existing file only if it looks like a checkpoint. Tensors
    unchanged in the directory's files are copied from them record by record (the model is never
    resident: :func:`wmap.io.save_torch`)."""
    where, prepared = out_file.absolute(), applied.prepared
    container = prepared.exporter.container(applied.state, prepared.meta, where)
    files: dict[str | os.PathLike[str], Callable[[Path], None]] = {
        where: lambda path: save_torch(container, path, applied.sources)
    }
    for name, text in prepared.exporter.companions(prepared.meta).items():
        files[where.parent / name] = _text(text)
    for name, source in prepared.exporter.copied(prepared.meta).items():
        files[where.parent / name] = partial(shutil.copyfile, Path(hf_dir) / source)
    for name, beside in prepared.exporter.beside(applied.state, prepared.meta, where).items():
        files[where.parent / name] = _torch_file(beside, applied.sources)
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
    layouts: LayoutCache | None = None,
) -> Result[Path, WmapError]:
    """A transformers directory back into the original implementation's own format (``out_file``).

    Refused unless the reverse plan is clean: keys of the original that the directory cannot give
    back (the forward direction skipped them) are ``unrecoverable`` and must be named in
    ``accept.unrecoverable`` to export without them. Tensors keep the directory's dtype unless
    ``dtype`` is given. The file is written atomically and never replaces one without ``overwrite``.
    ``layouts``: where target layouts are kept (a kept one spares building the model the directory's
    config describes).
    """

    def accepted(prepared: PreparedReverse) -> Result[PreparedReverse, WmapError]:
        checked = widen(_accepted_keys_exist(prepared.plan, accept)).bind(lambda plan: widen(plan.result(accept)))
        return checked.map(lambda _: prepared)

    def weighed(prepared: PreparedReverse) -> Result[tuple[PreparedReverse, Checkpoint], WmapError]:
        weights = widen(read_weights(hf_dir)).bind(lambda found: _tied_copies_equal(prepared, found))
        weights = weights.bind(lambda found: _made_still_as_made(prepared, found))
        return weights.map(lambda found: (prepared, found))

    def applied(found: tuple[PreparedReverse, Checkpoint]) -> Result[_Applied, WmapError]:
        prepared, weights = found
        state = widen(apply_plan(prepared.plan, weights.tensors, accept=accept, dtype=dtype))
        return state.map(lambda tensors: _Applied(prepared, tensors, mapped_sources(weights)))

    def written(found: _Applied) -> Result[Path, WmapError]:
        return _write_export(found, Path(out_file), overwrite, hf_dir)

    return (
        widen(floating_dtype(dtype))
        .bind(lambda _: widen(resolve(model, registry)))
        .bind(_exportable)
        .bind(lambda spec: prepare_reverse(spec, hf_dir, layouts))
        .bind(accepted)
        .bind(weighed)
        .bind(applied)
        .bind(written)
    )


def _exportable(spec: ModelSpec) -> Result[ModelSpec, WmapError]:
    return _exporter(spec).map(lambda _: spec)


StateDict = dict[str, torch.Tensor]
"""The original's state dict, as apply builds it."""


def _accepted_keys_exist(plan: MappingPlan, accept: Accept) -> Result[MappingPlan, BadConfig]:
    """Every key ``accept`` names is one the plan calls unrecoverable: a short or misspelt one would
    otherwise be ignored in silence and the export refused for a reason the user thinks they accepted."""
    known = {u.key for u in plan.unrecoverable}
    unknown = sorted(accept.unrecoverable - known)
    if not unknown:
        return Success(plan)
    expected = f"one of the unrecoverable keys the plan names ({', '.join(sorted(known)) or 'none'})"
    return Failure(BadConfig("--accept-unrecoverable", unknown[0], expected, repr(unknown[0])))
