"""Real checkpoint files for tests that need no original package: the bundled reference layout of a
family (the original's real names and shapes), filled with random values."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wmap.models import get_model


def reference_state(
    model: str, *, dtype: torch.dtype = torch.float32, rows: Mapping[int, int] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Random tensors with the original's names and shapes, and the checkpoint metadata. ``rows``
    replaces first dimensions (``{250054: 4096}``: a vocabulary cut, where the size is read from the
    weights)."""
    layout, meta = get_model(model).unwrap().reference_layout().unwrap()
    cut = rows or {}
    shapes = {key: (cut.get(shape[0], shape[0]), *shape[1:]) if shape else () for key, shape in layout.items()}
    return {key: torch.randn(shape, dtype=dtype) for key, shape in shapes.items()}, meta


def reference_checkpoint(path: Path, model: str = "encodec_32khz") -> Path:
    """Write a checkpoint file as the original would (the metadata beside the state dict)."""
    state, meta = reference_state(model)
    torch.save({**meta, "model": state} if meta else state, path)
    return path


def load_pretrained_strictly(model_class: Any, directory: Path) -> Any:
    """``from_pretrained`` that fails on any missing, unexpected or mismatched key."""
    model, info = model_class.from_pretrained(directory, output_loading_info=True)
    problems = {name: keys for name, keys in info.items() if keys and name != "error_msgs"}
    assert not problems and not info.get("error_msgs"), problems
    return model.eval()
