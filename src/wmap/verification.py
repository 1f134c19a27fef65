"""``verify``: a converted directory checked tensor by tensor, bit for bit, against what apply writes
from its source."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import attrs
import torch
from returns.result import Result

from wmap.conversion import Family, prepare, widen
from wmap.errors import WmapError
from wmap.io import (
    Checkpoint,
    in_model_directory,
    read_weights,
)
from wmap.models.base import ModelSpec
from wmap.plan import MappingPlan
from wmap.registry import Registry, resolve
from wmap.target_layouts import LayoutCache


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
    for made in plan.made:  # what apply made from the config: still what it makes
        out = written.tensors.get(made.target)
        if out is None:
            absent.append(made.target)
        elif not made.maker.is_made(out):
            differing.append(made.target)
    for joined in plan.joined:  # the parts, concatenated as apply does
        out = written.tensors.get(joined.target)
        expected = joined.joiner.join([source.tensors[k] for k in joined.sources])
        if out is None:
            absent.append(joined.target)
        elif out.shape != expected.shape or not torch.equal(_bits(out), _bits(expected.to(out.dtype))):
            differing.append(joined.target)
    for gathered in plan.gathered:  # the copies apply checked equal to what it wrote
        out = written.tensors.get(gathered.target)
        if out is not None and any(
            not torch.equal(_bits(out), _bits(source.tensors[key].to(out.dtype))) for key in gathered.sources[1:]
        ):
            differing.append(gathered.target)
    return Verification(len(plan.applied) + len(plan.made) + len(plan.joined), tuple(differing), tuple(absent))


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    flat = tensor.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8) if flat.numel() else flat


def verify(
    model: Family,
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    registry: Registry | None = None,
    processor_file: str | os.PathLike[str] | None = None,
    layouts: LayoutCache | None = None,
) -> Result[Verification, WmapError]:
    """Check a converted directory against its source: plan again with the directory's own
    ``config.json``, then compare every written tensor with the source tensor the plan maps to it
    (cast to the written dtype). Needs neither the original package nor the target model's code.
    ``processor_file``: where the family reads part of its source (MusicGen's ``--text-encoder``).
    ``layouts``: where target layouts are kept (a kept one spares building the target model)."""

    def read(spec: ModelSpec) -> Result[tuple[ModelSpec, Checkpoint], WmapError]:
        part = None if processor_file is None else Path(processor_file)
        return spec.read(checkpoint, part).map(lambda source: (spec, source))

    def planned(found: tuple[ModelSpec, Checkpoint]) -> Result[tuple[MappingPlan, Checkpoint], WmapError]:
        spec, source = found
        config = Path(out_dir) / "config.json"
        prepared = prepare(spec, source.layout, source.meta, config, lint=False, layouts=layouts)
        return prepared.bind(lambda ready: widen(ready.plan.result())).map(lambda plan: (plan, source))

    def compared(found: tuple[MappingPlan, Checkpoint]) -> Result[Verification, WmapError]:
        plan, source = found
        return widen(read_weights(out_dir)).map(lambda written: _compare(plan, source, written))

    return (
        widen(resolve(model, registry))
        .bind(partial(in_model_directory, out_dir))
        .bind(read)
        .bind(planned)
        .bind(compared)
    )
