"""hubert: a fairseq HuBERT pre-training checkpoint -> HubertModel, in parity with fairseq."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import HubertModel

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.errors import BadConfig

pytestmark = pytest.mark.parity


@pytest.mark.parametrize(
    "style",
    [
        {"extractor_mode": "default", "layer_norm_first": False},
        {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True},
        {"extractor_mode": "default", "conv_pos_batch_norm": True},
    ],
)
def test_hubert_has_parity_with_fairseq(tmp_path: Path, style: dict[str, object]) -> None:
    from tests.originals import hubert_checkpoint

    original = hubert_checkpoint(tmp_path / "hubert.pt", tmp_path, **style)
    prepared = preview("hubert", tmp_path / "hubert.pt").unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    assert {s.key for s in prepared.plan.skipped} == {"final_proj.weight", "final_proj.bias", "label_embs_concat"}
    out = convert("hubert", tmp_path / "hubert.pt", tmp_path / "hf").unwrap()  # no --config
    ported = load_pretrained_strictly(HubertModel, out)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs, _ = original.extract_features(x, padding_mask=None, mask=False)
        ours = ported(x).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert (out / "preprocessor_config.json").exists()


def test_conformer_layers_are_refused_with_the_reason(tmp_path: Path) -> None:
    from tests.originals import hubert_checkpoint

    hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    meta = torch.load(tmp_path / "hubert.pt", weights_only=False)
    meta["cfg"]["model"]["layer_type"] = "conformer"
    torch.save(meta, tmp_path / "conformer.pt")
    error = preview("hubert", tmp_path / "conformer.pt").failure()
    assert isinstance(error, BadConfig) and error.key == "layer_type" and "transformer layers only" in error.message


def test_the_way_back_writes_a_file_fairseq_loads_strictly_with_no_label_sets(tmp_path: Path) -> None:
    """HubertModel has no pre-training heads. The way back writes a file with no label sets (the task's
    ``labels: []``, the projection untied), for which fairseq builds its heads empty: the plan names them
    as made, with the reason; fairseq's loader takes the file strictly, every other tensor is the
    original's and the features are fairseq's. (It used to write an ``audio_pretraining`` task, from
    which fairseq cannot build a HuBERT at all: no label dictionaries.)"""
    from fairseq import checkpoint_utils

    from tests.originals import hubert_checkpoint
    from wmap.way_back import export, preview_reverse

    original = hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    hf = convert("hubert", tmp_path / "hubert.pt", tmp_path / "hf").unwrap()
    plan = preview_reverse("hubert", hf).unwrap().plan
    assert plan.is_clean() and not plan.unrecoverable
    made = {m.target: m for m in plan.made}
    assert set(made) == {"final_proj.weight", "final_proj.bias", "label_embs_concat"}
    assert made["label_embs_concat"].shape == (0, 32) and "no label sets" in made["label_embs_concat"].reason
    (tmp_path / "back").mkdir()
    out = export("hubert", hf, tmp_path / "back" / "checkpoint.pt").unwrap()
    saved = torch.load(tmp_path / "hubert.pt", weights_only=False)["model"]
    back = torch.load(out, weights_only=True)["model"]
    heads = {"final_proj.weight", "final_proj.bias", "label_embs_concat"}
    assert set(back) == set(saved) and all(torch.equal(back[k], saved[k]) for k in set(back) - heads)
    assert all(back[k].numel() == 0 for k in heads) and all(saved[k].numel() > 0 for k in heads)
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(out)], strict=True)
    assert type(task).__name__ == "HubertPretrainingTask" and task.dictionaries == []
    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs, _ = original.eval().extract_features(x, padding_mask=None, mask=False)
        returned, _ = models[0].eval().extract_features(x, padding_mask=None, mask=False)
    assert theirs.std() > 0.01  # not vacuous
    torch.testing.assert_close(returned, theirs, rtol=0, atol=1e-5)


def test_what_the_family_never_reads_leaves_the_preview_as_it_is(tmp_path: Path) -> None:
    """A pre-training run's settings and trainer state changed: the same preview, the same key."""
    from tests.helpers import assert_unread_leaves_the_preview
    from tests.originals import hubert_checkpoint

    hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    assert_unread_leaves_the_preview("hubert", tmp_path / "hubert.pt", tmp_path, ("cfg.model.layer_type", "conformer"))
