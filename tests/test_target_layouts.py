"""wmap.target_layouts: a preview of another checkpoint of a kind already seen takes the target's layout
from the kept one, without importing transformers' modelling code, and plans the same."""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import EncodecConfig

from tests.helpers import reference_checkpoint, wmap_process
from wmap.conversion import model_of, preview, target_of
from wmap.models import get_model
from wmap.target_layouts import LayoutCache


def _preview_process(*args: str, cache: Path) -> tuple[int, str, bool]:
    return wmap_process("preview", *args, cache=cache)


def test_another_checkpoint_of_a_kind_seen_before_is_planned_without_the_modelling_code(tmp_path: Path) -> None:
    first = reference_checkpoint(tmp_path / "first.pt", "encodec_32khz")
    other = tmp_path / "other.pt"  # another file: the kept preview is not its
    shutil.copyfile(first, other)
    cache = tmp_path / "cache"
    cold = _preview_process("encodec_32khz", str(first), cache=cache)
    warm = _preview_process("encodec_32khz", str(other), cache=cache)
    assert cold[2] and not warm[2]  # the control: the first one built the model
    assert (warm[0], warm[1].replace(str(other), str(first))) == cold[:2] and cold[0] == 0
    assert len(list((cache / "layouts").glob("*.json"))) == 1
    fresh = _preview_process("encodec_32khz", str(other), "--no-cache", cache=tmp_path / "unused")
    assert fresh[2] and fresh[:2] == warm[:2] and not (tmp_path / "unused").exists()


def test_a_kept_layout_is_the_built_one_and_is_kept_per_config(tmp_path: Path) -> None:
    spec = get_model("encodec_24khz").unwrap()
    cache = LayoutCache(tmp_path)
    built, model = target_of(spec, EncodecConfig()).unwrap()
    stored, none = target_of(spec, EncodecConfig(), cache).unwrap()
    kept, spared = target_of(spec, EncodecConfig(), cache).unwrap()
    assert model is not None and none is not None and spared is None  # built, built and kept, then kept
    assert kept == stored == built and list(kept.layout) == list(built.layout)  # the order too
    assert kept.kinds["quantizer.layers.0.codebook.embed"] == "float32"
    deeper, _ = target_of(spec, EncodecConfig(num_lstm_layers=3), cache).unwrap()
    assert deeper.layout != built.layout and len(list(tmp_path.glob("*.json"))) == 2
    for entry in tmp_path.glob("*.json"):
        entry.write_text('{"layout": {"a": [1]}, "kinds": {}}')  # unsound: built again
    again, rebuilt = target_of(spec, EncodecConfig(), cache).unwrap()
    assert rebuilt is not None and again == built


def test_a_preview_from_a_kept_layout_holds_no_model_and_one_is_built_when_needed(tmp_path: Path) -> None:
    checkpoint = reference_checkpoint(tmp_path / "e.pt", "encodec_32khz")
    cache = LayoutCache(tmp_path / "layouts")
    assert preview("encodec_32khz", checkpoint, layouts=cache).unwrap().target is not None
    prepared = preview("encodec_32khz", checkpoint, layouts=cache).unwrap()
    assert prepared.target is None and prepared.plan.is_clean()
    model = model_of(prepared).unwrap()
    assert type(model).__name__ == "EncodecModel" and str(next(model.parameters()).device) == "meta"
