"""Target layouts kept on disk: the names, shapes and kinds of a transformers model's state dict (and what
writing its directory needs beside the weights), so that a preview or a conversion of a checkpoint of a
kind already seen does not import transformers' modelling code.

A layout is a pure function of the model class, its config and the versions of transformers and torch
(the model is built on the ``meta`` device: no weights, no random values); the key is a digest of them.
Importing a model class costs seconds (transformers' modelling stack: ``modeling_utils`` pulls in
``torch.distributed.tensor``, the quantizers, the losses), the layout itself milliseconds. Only the
command line keeps layouts (``wmap preview`` and ``wmap convert``, unless ``--no-cache``); any problem with the folder
means a layout is built, never that a command fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from wmap.preview_cache import package_versions
from wmap.target import TargetLayout

if TYPE_CHECKING:
    from transformers import PretrainedConfig

PACKAGES = ("transformers", "torch")
MAX_ENTRIES = 256


@attrs.frozen
class LayoutCache:
    """Layouts kept as JSON files in ``folder``, by :meth:`key`."""

    folder: Path

    def key(self, model_class: str, config: PretrainedConfig) -> str:
        """The digest of what the layout depends on: the class, its config in full, the versions."""
        text = "\0".join((model_class, config.to_json_string(use_diff=False), ",".join(package_versions(PACKAGES))))
        return hashlib.sha256(text.encode()).hexdigest()

    def load(self, key: str) -> TargetLayout | None:
        """The layout kept under ``key``, if there is a sound one."""
        try:
            data = json.loads((self.folder / f"{key}.json").read_text())
            layout = {str(name): tuple(int(n) for n in shape) for name, shape in data["layout"].items()}
            kinds = {str(name): str(kind) for name, kind in data["kinds"].items()}
            tied = {str(target): str(source) for target, source in data["tied"].items()}
            generation = data["generation"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        sound = kinds.keys() == layout.keys() and tied.keys() <= layout.keys() and isinstance(generation, str | None)
        return TargetLayout(layout, kinds, tied, generation) if sound else None

    def store(self, key: str, found: TargetLayout) -> None:
        """Keep ``found`` under ``key`` (written whole, then moved in), and remove the oldest beyond
        :data:`MAX_ENTRIES`."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.folder, suffix=".tmp", delete=False) as file:
                json.dump(attrs.asdict(found), file)
            os.replace(file.name, self.folder / f"{key}.json")
            kept = sorted(self.folder.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
            for old in kept[:-MAX_ENTRIES]:
                old.unlink(missing_ok=True)
        except OSError:
            return
