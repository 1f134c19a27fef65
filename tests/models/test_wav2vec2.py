"""wav2vec2: a fairseq wav2vec 2.0 pre-training checkpoint -> Wav2Vec2ForPreTraining, in parity with fairseq."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2ForPreTraining

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.errors import BadConfig

pytestmark = pytest.mark.parity


@pytest.mark.parametrize(
    "style",
    [
        {"extractor_mode": "default", "layer_norm_first": False},
        {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True, "latent_dim": 6},
    ],
)
def test_wav2vec2_pretraining_has_parity_with_fairseq(tmp_path: Path, style: dict[str, object]) -> None:
    """The encoder's features, the projection of its output (``final_proj`` -> ``project_hid``) and the
    quantized targets (``quantizer`` + ``project_q``, argmax codevectors in eval) as fairseq computes them."""
    from tests.originals import wav2vec2_pretraining_checkpoint

    original = wav2vec2_pretraining_checkpoint(tmp_path / "w2v.pt", tmp_path, **style)
    prepared = preview("wav2vec2", tmp_path / "w2v.pt").unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    assert not prepared.plan.skipped
    out = convert("wav2vec2", tmp_path / "w2v.pt", tmp_path / "hf").unwrap()  # no --config
    ported = load_pretrained_strictly(Wav2Vec2ForPreTraining, out)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs = original.extract_features(x, padding_mask=None, mask=False)["x"]
        features = original.layer_norm(original.feature_extractor(x).transpose(1, 2))
        their_targets = original.project_q(original.quantizer(features, produce_targets=False)["x"])
        encoded = ported.wav2vec2(x)
        ours = encoded.last_hidden_state
        our_targets = ported.project_q(ported.quantizer(encoded.extract_features)[0])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(ported.project_hid(ours), original.final_proj(theirs), rtol=0, atol=1e-5)
    torch.testing.assert_close(our_targets, their_targets, rtol=0, atol=1e-5)
    assert their_targets.abs().sum() > 0


def test_a_quantizer_the_target_cannot_hold_is_refused(tmp_path: Path) -> None:
    from tests.originals import wav2vec2_pretraining_checkpoint

    wav2vec2_pretraining_checkpoint(tmp_path / "w2v.pt", tmp_path)
    meta = torch.load(tmp_path / "w2v.pt", weights_only=False)
    for field, value in (("quantizer_depth", 2), ("quantize_input", True), ("pos_conv_depth", 3)):
        odd = {**meta, "cfg": {**meta["cfg"], "model": {**meta["cfg"]["model"], field: value}}}
        torch.save(odd, tmp_path / "odd.pt")
        error = preview("wav2vec2", tmp_path / "odd.pt").failure()
        assert isinstance(error, BadConfig) and error.key == field, error


def test_the_way_back_loads_in_fairseq_strictly_with_the_same_outputs(tmp_path: Path) -> None:
    from fairseq import checkpoint_utils

    from tests.originals import wav2vec2_pretraining_checkpoint
    from wmap.way_back import export

    original = wav2vec2_pretraining_checkpoint(tmp_path / "w2v.pt", tmp_path, extractor_mode="layer_norm")
    hf = convert("wav2vec2", tmp_path / "w2v.pt", tmp_path / "hf").unwrap()
    (tmp_path / "back").mkdir()
    out = export("wav2vec2", hf, tmp_path / "back" / "checkpoint.pt").unwrap()
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)], strict=True)
    back = models[0].eval()
    saved = torch.load(tmp_path / "w2v.pt", weights_only=False)["model"]
    exported = torch.load(out, weights_only=True)["model"]
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], v) for k, v in saved.items())
    x = torch.randn(2, 4000)
    with torch.no_grad():
        expected = original.extract_features(x, padding_mask=None, mask=False)["x"]
        returned = back.extract_features(x, padding_mask=None, mask=False)["x"]
        features = back.layer_norm(back.feature_extractor(x).transpose(1, 2))
        targets = back.project_q(back.quantizer(features, produce_targets=False)["x"])
        their_features = original.layer_norm(original.feature_extractor(x).transpose(1, 2))
        their_targets = original.project_q(original.quantizer(their_features, produce_targets=False)["x"])
    torch.testing.assert_close(returned, expected, rtol=0, atol=0)
    torch.testing.assert_close(targets, their_targets, rtol=0, atol=0)


def test_the_mask_embedding_follows_whether_the_target_masks(tmp_path: Path) -> None:
    """transformers' wav2vec2-family models hold ``masked_spec_embed`` only when SpecAugment is on: with
    a config that masks nothing, fairseq's ``mask_emb`` is skipped with the reason and the plan is clean
    (it was an unknown target); the way back names it unrecoverable."""
    import json

    from tests.helpers import reference_state

    state, meta = reference_state("wav2vec2_ctc")
    torch.save({**meta, "model": state}, tmp_path / "ctc.pt")
    config = preview("wav2vec2_ctc", tmp_path / "ctc.pt").unwrap().config.to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, "mask_time_prob": 0.0, "mask_feature_prob": 0.0}))
    plan = preview("wav2vec2_ctc", tmp_path / "ctc.pt", tmp_path / "config.json").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=3)
    (skipped,) = [s for s in plan.skipped if s.key.endswith("mask_emb")]
    assert "masks nothing" in skipped.reason
    assert any(
        a.source.endswith("mask_emb") for a in preview("wav2vec2_ctc", tmp_path / "ctc.pt").unwrap().plan.applied
    )


def test_what_the_family_never_reads_leaves_the_preview_as_it_is(tmp_path: Path) -> None:
    """A pre-training run's settings and trainer state changed: the same preview, the same key."""
    from tests.helpers import assert_unread_leaves_the_preview
    from tests.originals import wav2vec2_pretraining_checkpoint

    wav2vec2_pretraining_checkpoint(tmp_path / "w2v.pt", tmp_path)
    assert_unread_leaves_the_preview("wav2vec2", tmp_path / "w2v.pt", tmp_path, ("cfg.model.quantize_input", True))
