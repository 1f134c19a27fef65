"""Layouts (key -> shape) of target models, built on the ``meta`` device: no memory, no random init."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

from wmap.transforms import Layout

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
