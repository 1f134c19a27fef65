"""What a target model's directory is written from besides its config and weights, as a value: its
layout, its tensors' kinds, its tied keys and its generation config. Built off a model
(:func:`wmap.layout.target_layout_of`), kept on disk (:mod:`wmap.target_layouts`), written from
(:mod:`wmap.io.writing`); torch-free, so that each of those can import it without the others."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

GENERATION_FILE = "generation_config.json"
"""The file a generating model's ``save_pretrained`` writes its generation config to."""


@attrs.frozen
class TargetLayout:
    """A target model's state-dict names and shapes (in its order), each tensor's kind, and what its
    ``save_pretrained`` writes beside the weights that the config alone does not say: the tied keys
    (target -> source, left out of the weights) and its ``generation_config.json`` (``None``: the
    model does not generate)."""

    layout: Mapping[str, tuple[int, ...]]
    kinds: Mapping[str, str]
    tied: Mapping[str, str] = attrs.field(factory=dict)
    generation: str | None = None
