"""wmap: typed, composable transforms that map checkpoint keys between naming layouts.

Plan first (names and shapes only), then apply. Errors are values.
"""

from wmap.apply import apply_plan, load_into
from wmap.convert import Prepared, convert, prepare, preview
from wmap.errors import WmapError
from wmap.io import Checkpoint, read_checkpoint, read_layout, write_directory_atomically
from wmap.keys import Pattern, pattern
from wmap.layout import build_on_meta, layout_of
from wmap.models import ModelSpec, get_model, register, registered
from wmap.pipeline import first_match, optional, scoped, seq, when
from wmap.plan import Accept, MappingPlan, make_plan
from wmap.render import print_plan
from wmap.transforms import (
    BATCH_NORM,
    PARAMS,
    WEIGHT_NORM,
    Layout,
    Leaves,
    Transform,
    lstm_leaves,
    refuse,
    rename,
    route_weight_norm,
    skip,
    tie,
)

__all__ = [
    "BATCH_NORM",
    "PARAMS",
    "WEIGHT_NORM",
    "Accept",
    "Checkpoint",
    "Layout",
    "Leaves",
    "MappingPlan",
    "ModelSpec",
    "Pattern",
    "Prepared",
    "Transform",
    "WmapError",
    "apply_plan",
    "build_on_meta",
    "convert",
    "first_match",
    "get_model",
    "layout_of",
    "load_into",
    "lstm_leaves",
    "make_plan",
    "optional",
    "pattern",
    "prepare",
    "preview",
    "print_plan",
    "read_checkpoint",
    "read_layout",
    "refuse",
    "register",
    "registered",
    "rename",
    "route_weight_norm",
    "scoped",
    "seq",
    "skip",
    "tie",
    "when",
    "write_directory_atomically",
]
