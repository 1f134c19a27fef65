"""Apply: a plan plus tensors -> the target state dict, and strict loading into the target model.

Apply never re-decides anything the plan decided; it only checks that the
tensors it is handed are the ones the plan was made from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
from returns.result import Failure, Result, Success
from torch import nn

from wmap.errors import LoadFailed, PlanNotClean, TensorMismatch
from wmap.io import SAFETENSORS_DTYPES
from wmap.plan import NO_EXCEPTIONS, Accept, MappingPlan
from wmap.values import shape_after


def _shape(shape: tuple[int, ...]) -> str:
    return "shape " + str(list(shape))


WRITABLE: frozenset[torch.dtype] = frozenset(SAFETENSORS_DTYPES)
"""The dtypes a converted checkpoint holds (safetensors' and transformers' speech models'); fp8,
complex and the like are refused by name, not written."""


def _kind(value: torch.Tensor) -> str:
    return f"a {'sparse ' if value.layout != torch.strided else ''}{str(value.dtype).removeprefix('torch.')} tensor"


def apply_plan(
    plan: MappingPlan,
    tensors: Mapping[str, torch.Tensor],
    *,
    accept: Accept = NO_EXCEPTIONS,
    dtype: torch.dtype | None = None,
    target_dtypes: Mapping[str, torch.dtype] | None = None,
) -> Result[dict[str, torch.Tensor], PlanNotClean | TensorMismatch]:
    """Build the target state dict the plan describes.

    Refuses a plan that is not clean unless its problems are all named in
    ``accept``, and a tensor of a kind the output cannot hold (sparse, complex,
    fp8) or, given ``target_dtypes``, an integer tensor where the target holds
    floats (or the reverse), naming the key. Tensors are moved, not copied (a floating tensor is converted
    only when ``dtype`` differs); a tied target gets its own copy so the output
    can be saved as safetensors whether or not the target model ties it.
    """
    if not plan.is_clean(accept):
        return Failure(PlanNotClean(plan))
    state: dict[str, torch.Tensor] = {}
    for item in plan.applied:
        value = tensors.get(item.source)
        if value is None:
            return Failure(TensorMismatch(item.source, f"a tensor of {_shape(item.shape)}", "no such key"))
        produced = tuple(value.shape) if item.value is None else shape_after(item.value, tuple(value.shape))
        if produced != item.shape:
            return Failure(TensorMismatch(item.source, _shape(item.shape), _shape(tuple(value.shape))))
        wrong = _inadmissible(item.source, value, item.target, target_dtypes)
        if wrong is not None:
            return Failure(wrong)
        if item.value is not None:
            value = item.value.apply(value)
        value = _cast(value, dtype)
        state[item.target] = value.clone() if item.tied_to is not None else value
    for joined in plan.joined:  # the parts, each checked as an applied tensor is, joined in order
        for key in joined.sources:
            part = tensors.get(key)
            wrong = (
                TensorMismatch(key, f"part of {joined.target}", "no such key")
                if part is None
                else _inadmissible(key, part, joined.target, target_dtypes)
            )
            if wrong is not None:
                return Failure(wrong)
        value = joined.joiner.join([tensors[k] for k in joined.sources])
        if tuple(value.shape) != joined.shape:
            return Failure(TensorMismatch(joined.sources[0], _shape(joined.shape), _shape(tuple(value.shape))))
        state[joined.target] = _cast(value, dtype)
    for gathered in plan.gathered:  # copies held once: every other source must equal the written one
        mismatch = _disagreeing(gathered.sources, tensors)
        if mismatch is not None:
            return Failure(mismatch)
    floating = dtype or next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    for made in plan.made:  # from the config alone, in the dtype of the rest
        state[made.target] = made.maker.make(floating)
    return Success(state)


def _inadmissible(
    key: str, value: torch.Tensor, target: str, target_dtypes: Mapping[str, torch.dtype] | None
) -> TensorMismatch | None:
    """A tensor the output cannot hold (sparse, complex, fp8), or, given ``target_dtypes``, an integer
    one where the target holds floats (or the reverse): a :class:`TensorMismatch` naming ``key``."""
    if value.layout != torch.strided or value.dtype not in WRITABLE:
        return TensorMismatch(key, "a dense float, integer or bool tensor", _kind(value))
    want = None if target_dtypes is None else target_dtypes.get(target)
    if want is not None and want.is_floating_point != value.is_floating_point():
        expected = f"a {'floating' if want.is_floating_point else 'non-floating'} tensor for {target}"
        return TensorMismatch(key, expected, _kind(value))
    return None


def _cast(value: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """A floating tensor in ``dtype`` when one is asked for; anything else as it is."""
    if dtype is not None and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


def _disagreeing(sources: tuple[str, ...], tensors: Mapping[str, torch.Tensor]) -> TensorMismatch | None:
    """A :class:`TensorMismatch` naming the first of ``sources`` that differs from ``sources[0]``."""
    first = tensors[sources[0]]
    for key in sources[1:]:
        value = tensors.get(key)
        if value is None:
            return TensorMismatch(key, f"a tensor equal to {sources[0]}", "no such key")
        if value.shape != first.shape or value.dtype != first.dtype or not torch.equal(value, first):
            return TensorMismatch(key, f"equal to {sources[0]} (the target holds one copy)", "a different tensor")
    return None


M = TypeVar("M", bound=nn.Module)


def load_into(model: M, state: Mapping[str, torch.Tensor]) -> Result[M, LoadFailed]:
    """``load_state_dict(strict=True, assign=True)``: the tensors become the model's, no copy."""
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, ValueError, KeyError) as error:
        return Failure(LoadFailed(type(model).__name__, str(error).strip().splitlines()[0]))
    return Success(model)


def fits_layout(
    model: str, layout: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]
) -> Result[Mapping[str, torch.Tensor], LoadFailed]:
    """What a strict load into a ``model`` of this (kept) ``layout`` checks, without the model: every key
    of the layout present, none other, each of its shape; the failure names the first key that is not."""
    missing = next((key for key in layout if key not in state), None)
    unexpected = next((key for key in state if key not in layout), None)
    wrong = next((key for key in layout if key in state and tuple(state[key].shape) != tuple(layout[key])), None)
    if missing is not None:
        return Failure(LoadFailed(model, f"missing key {missing!r}"))
    if unexpected is not None:
        return Failure(LoadFailed(model, f"unexpected key {unexpected!r}"))
    if wrong is not None:
        found = tuple(state[wrong].shape)
        return Failure(LoadFailed(model, f"{wrong!r}: shape {found}, the model's is {tuple(layout[wrong])}"))
    return Success(state)
