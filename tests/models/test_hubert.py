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


def test_the_way_back_names_what_hubert_model_lacks_and_refuses_without_acceptance(tmp_path: Path) -> None:
    from tests.originals import hubert_checkpoint
    from wmap.plan import Accept
    from wmap.way_back import export, preview_reverse

    hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    hf = convert("hubert", tmp_path / "hubert.pt", tmp_path / "hf").unwrap()
    plan = preview_reverse("hubert", hf).unwrap().plan
    gone = {u.key: u.reason for u in plan.unrecoverable}
    assert set(gone) == {"label_embs_concat", "final_proj"}, gone
    assert "label embeddings" in gone["label_embs_concat"]
    refused = export("hubert", hf, tmp_path / "back.pt").failure()
    assert "unrecoverable label_embs_concat" in refused.message and not (tmp_path / "back.pt").exists()
    out = export("hubert", hf, tmp_path / "back.pt", accept=Accept(unrecoverable=frozenset(gone))).unwrap()
    saved = torch.load(tmp_path / "hubert.pt", weights_only=False)["model"]
    back = torch.load(out, weights_only=True)["model"]
    kept = {k for k in saved if k.split(".")[0] not in gone}
    assert set(back) == kept and all(torch.equal(back[k], saved[k]) for k in back)


def test_what_the_family_never_reads_leaves_the_preview_as_it_is(tmp_path: Path) -> None:
    """A pre-training run's settings and trainer state changed: the same preview, the same key."""
    from tests.helpers import assert_unread_leaves_the_preview
    from tests.originals import hubert_checkpoint

    hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    assert_unread_leaves_the_preview("hubert", tmp_path / "hubert.pt", tmp_path, ("cfg.model.layer_type", "conformer"))
