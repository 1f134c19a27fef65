"""End-to-end entry points over a registered model family: preview (dry run) and convert.

This module only orchestrates: reading goes through :mod:`wmap.io`, deciding
through :mod:`wmap.plan`, tensors through :mod:`wmap.apply`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig, PreTrainedModel

from wmap.apply import apply_plan, load_into
from wmap.config_fields import IgnoredField
from wmap.errors import BadConfig, WmapError, WrongFamily
from wmap.io import check_output, read_checkpoint, read_layout, save_pretrained_streaming, write_directory_atomically
from wmap.layout import build_on_meta, layout_of
from wmap.models import get_model
from wmap.models.base import ModelSpec, TranslatedConfig
from wmap.plan import NO_EXCEPTIONS, Accept, MappingPlan, make_plan
from wmap.transforms import Layout, Transform

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


def resolve_config(
    spec: ModelSpec, meta: Mapping[str, Any], layout: Layout, config: ConfigSource
) -> Result[TranslatedConfig, BadConfig]:
    """The override if given (a JSON file or a config object), else the family's translation."""
    if isinstance(config, PretrainedConfig):
        return Success(TranslatedConfig(config))
    if config is not None:
        path = os.fspath(config)
        try:
            return Success(TranslatedConfig(spec.config_class.from_json_file(path)))
        except (OSError, ValueError, TypeError) as error:
            return Failure(BadConfig(path, "<file>", f"a {spec.config_class.__name__} JSON file", str(error)))
    return spec.config_from_checkpoint(meta, layout)


def prepare(
    spec: ModelSpec,
    layout: Layout,
    meta: Mapping[str, Any],
    config: ConfigSource = None,
    *,
    lint: bool = True,
) -> Result[Prepared, WmapError]:
    """Config, pipeline, target model on ``meta`` and the plan, from a source layout."""
    resolved = resolve_config(spec, meta, layout, config)
    if isinstance(resolved, Failure):
        return Failure(resolved.failure())
    translated = resolved.unwrap()
    hf_config = translated.config
    try:
        target = build_on_meta(lambda: spec.build(hf_config))
    except (ValueError, TypeError, AttributeError, RuntimeError) as error:
        return Failure(BadConfig(spec.name, "<config>", f"a config {spec.target} can be built from", str(error)))
    pipeline = spec.pipeline(hf_config, meta)
    plan = make_plan(pipeline, layout, layout_of(target), lint=lint)
    return Success(Prepared(spec, hf_config, pipeline, target, plan, translated.ignored))


def _wrong_family(spec: ModelSpec, path: str, plan: MappingPlan, layout: Layout) -> WrongFamily | None:
    if layout and not plan.applied and not plan.skipped and not plan.refused:
        return WrongFamily(spec.name, path, tuple(list(layout)[:3]))
    return None


def preview(
    model: str,
    checkpoint: str | os.PathLike[str] | None = None,
    config: ConfigSource = None,
) -> Result[Prepared, WmapError]:
    """The dry run: plan a conversion from names and shapes only.

    Without ``checkpoint`` the family's bundled reference layout is used.
    """
    found = get_model(model)
    if isinstance(found, Failure):
        return Failure(found.failure())
    spec = found.unwrap()
    meta: Mapping[str, Any]
    if checkpoint is None:
        layout, meta = spec.reference_layout()
        where = f"<bundled {spec.name} reference layout>"
    else:
        read = read_layout(checkpoint)
        if isinstance(read, Failure):
            return Failure(read.failure())
        layout, meta = read.unwrap()
        where = os.fspath(checkpoint)
    prepared = prepare(spec, layout, meta, config)
    if isinstance(prepared, Success):
        wrong = _wrong_family(spec, where, prepared.unwrap().plan, layout)
        if wrong is not None:
            return Failure(wrong)
    return prepared


def convert(
    model: str,
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
    """
    step = on_step or (lambda _: None)
    found = get_model(model)
    if isinstance(found, Failure):
        return Failure(found.failure())
    spec = found.unwrap()
    checked = check_output(out_dir, overwrite=overwrite)  # before the (possibly large) read
    if isinstance(checked, Failure):
        return Failure(checked.failure())
    if processor_file is not None and spec.takes_file is None:
        return Failure(
            BadConfig(
                spec.name,
                "--dict/--tokenizer",
                "no file: this family takes none (it writes no tokenizer)",
                os.fspath(processor_file),
            )
        )
    step("reading checkpoint")
    read = read_checkpoint(checkpoint)
    if isinstance(read, Failure):
        return Failure(read.failure())
    source = read.unwrap()
    layout = source.layout
    step("planning")
    prepared_result = prepare(spec, layout, source.meta, config, lint=False)
    if isinstance(prepared_result, Failure):
        return Failure(prepared_result.failure())
    prepared = prepared_result.unwrap()
    if on_plan is not None:
        on_plan(prepared.plan)
    wrong = _wrong_family(spec, source.path, prepared.plan, layout)
    if wrong is not None:
        return Failure(wrong)
    extras = spec.extras(prepared.config, source.meta, None if processor_file is None else Path(processor_file))
    if isinstance(extras, Failure):
        return Failure(extras.failure())
    write_extras = extras.unwrap()
    step("applying plan")
    state = apply_plan(prepared.plan, source.tensors, accept=accept, dtype=dtype)
    if isinstance(state, Failure):
        return Failure(state.failure())
    tensors = state.unwrap()
    loaded = load_into(prepared.target, tensors)  # strict: the state is exactly the model's
    if isinstance(loaded, Failure):
        return Failure(loaded.failure())
    target_model = loaded.unwrap()

    def write(directory: Path) -> None:
        save_pretrained_streaming(target_model, tensors, directory)
        write_extras(directory)

    step("writing output")
    written: Result[Path, WmapError] = write_directory_atomically(out_dir, write, overwrite=overwrite)
    return written


@attrs.frozen
class Verification:
    """What ``verify`` found: every applied target compared with its source tensor."""

    checked: int
    differing: tuple[str, ...]
    absent: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.differing and not self.absent


def verify(
    model: str,
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
) -> Result[Verification, WmapError]:
    """Check a converted directory against its source: plan again with the directory's own
    ``config.json``, then compare every written tensor with the source tensor the plan maps to it
    (cast to the written dtype). Needs neither the original package nor the target model's code."""
    found = get_model(model)
    if isinstance(found, Failure):
        return Failure(found.failure())
    spec = found.unwrap()
    read = read_checkpoint(checkpoint)
    if isinstance(read, Failure):
        return Failure(read.failure())
    source = read.unwrap()
    prepared = prepare(spec, source.layout, source.meta, Path(out_dir) / "config.json", lint=False)
    if isinstance(prepared, Failure):
        return Failure(prepared.failure())
    plan_result = prepared.unwrap().plan.result()
    if isinstance(plan_result, Failure):
        return Failure(plan_result.failure())
    written = read_checkpoint(Path(out_dir) / "model.safetensors")
    if isinstance(written, Failure):
        return Failure(written.failure())
    outputs = written.unwrap().tensors
    differing: list[str] = []
    absent: list[str] = []
    for item in plan_result.unwrap().applied:
        out = outputs.get(item.target)
        if out is None:
            absent.append(item.target)
        elif not torch.equal(out, source.tensors[item.source].to(out.dtype)):
            differing.append(item.target)
    return Success(Verification(len(plan_result.unwrap().applied), tuple(differing), tuple(absent)))
