"""Layouts (key -> shape) of target models, built on the ``meta`` device: no memory, no random init."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from wmap.target import GENERATION_FILE, TargetLayout
from wmap.transforms import Layout

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Kinds = Mapping[str, str]
"""key -> kind (:mod:`wmap.kinds`): what the plan knows of a tensor besides its shape."""

M = TypeVar("M", bound=nn.Module)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Build a module with every parameter and buffer on the ``meta`` device."""
    with torch.device("meta"):
        return factory()


def layout_of(module: nn.Module) -> Layout:
    """The module's state-dict layout: every persistent key with its shape."""
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def tensors_layout(tensors: Mapping[str, torch.Tensor]) -> Layout:
    """The layout of a plain state dict."""
    return {key: tuple(value.shape) for key, value in tensors.items()}


def kind_of(tensor: torch.Tensor) -> str:
    """The tensor's kind for the plan (:mod:`wmap.kinds`): its dtype name, ``sparse``/``quantized`` prefixed."""
    name = str(tensor.dtype).removeprefix("torch.")
    if tensor.layout != torch.strided:
        return f"{str(tensor.layout).removeprefix('torch.').split('_')[0]} {name}"
    return f"quantized {name}" if tensor.is_quantized else name


def kinds_of(tensors: Mapping[str, torch.Tensor]) -> Kinds:
    """Every tensor's kind."""
    return {key: kind_of(value) for key, value in tensors.items()}


def target_layout_of(model: PreTrainedModel) -> TargetLayout:
    """Everything a directory of ``model`` is written from besides its config and weights (and what a
    plan checks against): its layout, kinds, tied keys and generation config file, read off the model."""
    tied = dict(model.get_expanded_tied_weights_keys(all_submodels=True))  # target -> source, as the config ties them
    return TargetLayout(layout_of(model), kinds_of(model.state_dict()), tied, _generation_file(model))


def _generation_file(model: PreTrainedModel) -> str | None:
    """The ``generation_config.json`` its ``save_pretrained`` writes (by its own code), if it generates."""
    if not model.can_generate() or model.generation_config is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        model.generation_config.save_pretrained(folder)
        return (Path(folder) / GENERATION_FILE).read_text(encoding="utf-8")
