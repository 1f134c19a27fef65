"""wmap: typed, composable transforms that map checkpoint keys between naming layouts.

Plan first (names and shapes only), then apply. Errors are values.

Names are imported when first used (PEP 562), so ``import wmap`` and the
``wmap`` command start without torch or transformers until a name that needs
them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "wmap.apply": ("apply_plan", "load_into"),
    "wmap.conversion": ("Prepared", "convert", "prepare", "preview"),
    "wmap.way_back": ("PreparedReverse", "export", "preview_reverse"),
    "wmap.verification": ("Verification", "verify"),
    "wmap.errors": (
        "BadConfig",
        "LoadFailed",
        "NotInvertible",
        "OutputRefused",
        "PlanNotClean",
        "TensorMismatch",
        "UnknownModel",
        "UnreadableCheckpoint",
        "UnsafePickle",
        "WmapError",
        "WrongFamily",
    ),
    "wmap.io": ("Checkpoint", "Source", "read_checkpoint", "read_layout", "read_source", "write_directory_atomically"),
    "wmap.keys": ("Pattern", "PatternError", "pattern"),
    "wmap.layout": ("build_on_meta", "layout_of"),
    "wmap.models.base": ("Exporter", "ExportSource", "ModelSpec", "TranslatedConfig"),
    "wmap.registry": ("Registry", "default_registry", "get_model", "registered"),
    "wmap.pipeline": ("first_match", "optional", "scoped", "seq", "when"),
    "wmap.plan": ("Accept", "MappingPlan"),
    "wmap.planner": ("make_plan", "reverse_plan"),
    "wmap.render": ("print_plan",),
    "wmap.transforms": (
        "BATCH_NORM",
        "EXACT",
        "NO_MATCH",
        "PARAMS",
        "WEIGHT_NORM",
        "Layout",
        "Leaves",
        "Mapped",
        "Outcome",
        "Refused",
        "Skipped",
        "Target",
        "Transform",
        "gather",
        "lstm_leaves",
        "refuse",
        "rename",
        "route_weight_norm",
        "skip",
        "tie",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "Accept",
    "apply_plan",
    "BadConfig",
    "BATCH_NORM",
    "build_on_meta",
    "Checkpoint",
    "convert",
    "default_registry",
    "EXACT",
    "export",
    "Exporter",
    "ExportSource",
    "first_match",
    "get_model",
    "Layout",
    "layout_of",
    "Leaves",
    "load_into",
    "LoadFailed",
    "lstm_leaves",
    "make_plan",
    "Mapped",
    "MappingPlan",
    "ModelSpec",
    "NO_MATCH",
    "NotInvertible",
    "optional",
    "Outcome",
    "OutputRefused",
    "PARAMS",
    "Pattern",
    "pattern",
    "PatternError",
    "PlanNotClean",
    "prepare",
    "Prepared",
    "PreparedReverse",
    "preview",
    "gather",
    "preview_reverse",
    "print_plan",
    "read_checkpoint",
    "read_layout",
    "read_source",
    "refuse",
    "Refused",
    "registered",
    "Registry",
    "rename",
    "reverse_plan",
    "route_weight_norm",
    "scoped",
    "seq",
    "skip",
    "Skipped",
    "Source",
    "Target",
    "TensorMismatch",
    "tie",
    "Transform",
    "TranslatedConfig",
    "UnknownModel",
    "UnreadableCheckpoint",
    "UnsafePickle",
    "Verification",
    "verify",
    "WEIGHT_NORM",
    "when",
    "WmapError",
    "write_directory_atomically",
    "WrongFamily",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'wmap' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from wmap.apply import apply_plan, load_into
    from wmap.conversion import Prepared, convert, prepare, preview
    from wmap.errors import (
        BadConfig,
        LoadFailed,
        NotInvertible,
        OutputRefused,
        PlanNotClean,
        TensorMismatch,
        UnknownModel,
        UnreadableCheckpoint,
        UnsafePickle,
        WmapError,
        WrongFamily,
    )
    from wmap.io import Checkpoint, Source, read_checkpoint, read_layout, read_source, write_directory_atomically
    from wmap.keys import Pattern, PatternError, pattern
    from wmap.layout import build_on_meta, layout_of
    from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig
    from wmap.pipeline import first_match, optional, scoped, seq, when
    from wmap.plan import Accept, MappingPlan
    from wmap.planner import make_plan, reverse_plan
    from wmap.registry import Registry, default_registry, get_model, registered
    from wmap.render import print_plan
    from wmap.transforms import (
        BATCH_NORM,
        EXACT,
        NO_MATCH,
        PARAMS,
        WEIGHT_NORM,
        Layout,
        Leaves,
        Mapped,
        Outcome,
        Refused,
        Skipped,
        Target,
        Transform,
        gather,
        lstm_leaves,
        refuse,
        rename,
        route_weight_norm,
        skip,
        tie,
    )
    from wmap.verification import Verification, verify
    from wmap.way_back import PreparedReverse, export, preview_reverse
