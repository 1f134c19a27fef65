"""wav2vec2_conformer[_ctc]: fairseq's wav2vec 2.0 Conformer (rel_pos and rope) -> Wav2Vec2Conformer*, in
parity with fairseq, and back into files fairseq loads.

fairseq 0.12.3 cannot build or run its own conformer (fairseq#5174, fairseq#5386): the reference side
runs inside :func:`tests.originals.conformer_fix`, which makes the two methods accept and ignore the
extra keyword while fairseq runs. wmap never imports fairseq.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.errors import BadConfig, TensorMismatch

pytestmark = pytest.mark.parity

ATOL = 1e-5
VARIANTS = {
    "rel_pos": {"pos_enc_type": "rel_pos"},
    "rope": {"pos_enc_type": "rope"},
    "rope-equal-widths": {"pos_enc_type": "rope", "conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 2"},
}
"""Relative and rotary positions; and equal conv and encoder widths, where fairseq has no
``post_extract_proj`` (transformers#28174: the projection is made the identity)."""


@pytest.fixture(scope="module", params=list(VARIANTS))
def pretrained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Any]:
    from tests.originals import CONFORMER, conformer_fix, wav2vec2_pretraining_checkpoint

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("conformer")
    with conformer_fix():
        original = wav2vec2_pretraining_checkpoint(data / "c.pt", data, **CONFORMER, **VARIANTS[request.param])
    return request.param, data / "c.pt", original


def _features(model: Any, x: torch.Tensor) -> torch.Tensor:
    from tests.originals import conformer_fix

    with conformer_fix(), torch.no_grad():
        features: torch.Tensor = model.extract_features(x, padding_mask=None, mask=False)["x"]
    return features


def test_pretraining_has_parity_with_fairseq(pretrained: tuple[str, Path, Any], tmp_path: Path) -> None:
    """The encoder's output, its projection (``final_proj``) and the quantized targets as fairseq's."""
    from transformers import Wav2Vec2ConformerForPreTraining

    name, path, original = pretrained
    plan = preview("wav2vec2_conformer", path).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    if name.startswith("rope"):
        (gathered,) = plan.gathered
        assert gathered.target.endswith("encoder.embed_positions.inv_freq") and len(gathered.sources) == 2
    assert bool(plan.made) == name.endswith("equal-widths")
    out = convert("wav2vec2_conformer", path, tmp_path / "hf").unwrap()  # no --config
    ported = load_pretrained_strictly(Wav2Vec2ConformerForPreTraining, out)
    assert ported.config.position_embeddings_type == {"rel_pos": "relative", "rope": "rotary"}[name.split("-")[0]]
    x = torch.randn(2, 4000)
    theirs = _features(original, x)
    with torch.no_grad():
        encoded = ported.wav2vec2_conformer(x)
        features = original.layer_norm(original.feature_extractor(x).transpose(1, 2))
        their_targets = original.project_q(original.quantizer(features, produce_targets=False)["x"])
        our_targets = ported.project_q(ported.quantizer(encoded.extract_features)[0])
    torch.testing.assert_close(encoded.last_hidden_state, theirs, rtol=0, atol=ATOL)
    torch.testing.assert_close(
        ported.project_hid(encoded.last_hidden_state), original.final_proj(theirs), rtol=0, atol=ATOL
    )
    torch.testing.assert_close(our_targets, their_targets, rtol=0, atol=ATOL)


def test_the_way_back_loads_in_fairseq_strictly_and_round_trips(
    pretrained: tuple[str, Path, Any], tmp_path: Path
) -> None:
    """original -> convert -> export: fairseq loads it strictly (under the reference-side fix), every
    tensor equal to the original's, the same outputs; converted again, the directory is byte-identical."""
    from fairseq import checkpoint_utils

    from tests.originals import conformer_fix
    from wmap.way_back import export

    _, path, original = pretrained
    hf = convert("wav2vec2_conformer", path, tmp_path / "hf").unwrap()
    (tmp_path / "back").mkdir()
    out = export("wav2vec2_conformer", hf, tmp_path / "back" / "checkpoint.pt").unwrap()
    with conformer_fix():
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)], strict=True)
    saved = torch.load(path, weights_only=False)["model"]
    exported = torch.load(out, weights_only=True)["model"]
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], v) for k, v in saved.items())
    x = torch.randn(2, 4000)
    torch.testing.assert_close(_features(models[0].eval(), x), _features(original, x), rtol=0, atol=0)
    again = convert("wav2vec2_conformer", out, tmp_path / "again").unwrap()
    assert (again / "model.safetensors").read_bytes() == (hf / "model.safetensors").read_bytes()


def test_a_rotary_copy_that_differs_is_named(pretrained: tuple[str, Path, Any], tmp_path: Path) -> None:
    """The per-layer ``inv_freq`` copies are checked equal when applied: one changed is an error
    naming it and the one it differs from (the control: unchanged, the conversion succeeds above)."""
    name, path, _ = pretrained
    if not name.startswith("rope"):
        pytest.skip("relative positions have no per-layer copies")
    meta = torch.load(path, weights_only=False)
    meta["model"]["encoder.layers.1.self_attn.rotary_emb.inv_freq"] *= 1.5
    torch.save(meta, tmp_path / "odd.pt")
    error = convert("wav2vec2_conformer", tmp_path / "odd.pt", tmp_path / "hf").failure()
    assert isinstance(error, TensorMismatch) and error.key == "encoder.layers.1.self_attn.rotary_emb.inv_freq"
    assert "encoder.layers.0.self_attn.rotary_emb.inv_freq" in error.expected
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("layer_norm_first", False), ("pos_enc_type", "abs"), ("attn_type", ""), ("layer_type", "transformer")],
)
def test_what_transformers_conformer_cannot_represent_is_refused(
    pretrained: tuple[str, Path, Any], tmp_path: Path, field: str, value: object
) -> None:
    _, path, _ = pretrained
    meta = torch.load(path, weights_only=False)
    meta["cfg"]["model"][field] = value
    torch.save(meta, tmp_path / "odd.pt")
    error = preview("wav2vec2_conformer", tmp_path / "odd.pt").failure()
    assert isinstance(error, BadConfig) and error.key == field, error


def test_the_wav2vec2_family_names_the_conformer_family(pretrained: tuple[str, Path, Any]) -> None:
    error = preview("wav2vec2", pretrained[1]).failure()
    assert isinstance(error, BadConfig) and error.key == "layer_type" and "wav2vec2_conformer" in error.expected


@pytest.fixture(scope="module", params=["rel_pos", "rope", "rel_pos-equal-widths"])
def fine_tuned(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.originals import CONFORMER, conformer_fix, ctc_trainer_checkpoint

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("conformer_ctc")
    kind, _, widths = request.param.partition("-")
    encoder = {**CONFORMER, "pos_enc_type": kind, "extractor_mode": "layer_norm"}
    if widths:  # fairseq builds no post_extract_proj: the projection is made the identity
        encoder["conv_feature_layers"] = VARIANTS["rope-equal-widths"]["conv_feature_layers"]
    with conformer_fix():
        ctc_trainer_checkpoint(data / "checkpoint_best.pt", data, family="wav2vec2", **encoder)
    return data / "checkpoint_best.pt", data


def test_a_fine_tuned_conformer_transcribes_as_fairseq_does(fine_tuned: tuple[Path, Any], tmp_path: Path) -> None:
    """A trainer-written CTC checkpoint: through ``AutoProcessor`` and the model, the transcripts are
    fairseq's greedy decoding's, the logits within 1e-5."""
    from transformers import AutoModelForCTC, AutoProcessor

    from tests.models.test_fairseq_trainer_checkpoints import (
        _fairseq_reference,
        _fairseq_transcripts,
        _transcribe,
        _utterances,
    )
    from tests.originals import conformer_fix

    path, _ = fine_tuned
    plan = preview("wav2vec2_conformer_ctc", path).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    out = convert("wav2vec2_conformer_ctc", path, tmp_path / "hf").unwrap()
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForCTC.from_pretrained(out).eval()
    assert type(model).__name__ == "Wav2Vec2ConformerForCTC"
    audio = _utterances()
    with conformer_fix():
        reference, task = _fairseq_reference(path)
        expected, their_logits = _fairseq_transcripts(reference, task, audio)
    ours, logits = _transcribe(processor, model, audio)
    assert ours == expected and len(set(expected)) > 1  # not vacuous: the utterances decode differently
    for mine, theirs in zip(logits, their_logits, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=ATOL)


def test_a_fine_tuned_conformer_goes_back_to_fairseq(fine_tuned: tuple[Path, Any], tmp_path: Path) -> None:
    from tests.models.test_fairseq_trainer_checkpoints import _fairseq_reference
    from tests.originals import conformer_fix
    from wmap.way_back import export

    path, _ = fine_tuned
    hf = convert("wav2vec2_conformer_ctc", path, tmp_path / "hf").unwrap()
    (tmp_path / "back").mkdir()
    out = export("wav2vec2_conformer_ctc", hf, tmp_path / "back" / "checkpoint.pt").unwrap()
    with conformer_fix():
        back, _ = _fairseq_reference(out)
        reference, _ = _fairseq_reference(path)
        x = torch.randn(1, 4000)
        with torch.no_grad():
            expected = reference(source=x, padding_mask=None)["encoder_out"]
            returned = back(source=x, padding_mask=None)["encoder_out"]
    assert type(back.w2v_encoder.w2v_model.encoder).__name__ == "ConformerEncoder"
    torch.testing.assert_close(returned, expected, rtol=0, atol=0)
    again = convert("wav2vec2_conformer_ctc", out, tmp_path / "again").unwrap()
    assert (again / "model.safetensors").read_bytes() == (hf / "model.safetensors").read_bytes()


def test_a_file_without_a_quantizer_converts_to_the_headless_model(tmp_path: Path) -> None:
    """``quantize_targets: false``: no quantizer to hold, so the headless ``Wav2Vec2ConformerModel``,
    named in the config; what the file still holds of the objective (``project_q``, ``final_proj``) is
    skipped with the reason, and the way back names it unrecoverable."""
    from transformers import Wav2Vec2ConformerModel

    from tests.originals import CONFORMER, conformer_fix, wav2vec2_pretraining_checkpoint
    from wmap.way_back import preview_reverse

    torch.manual_seed(0)
    with conformer_fix():
        original = wav2vec2_pretraining_checkpoint(
            tmp_path / "c.pt", tmp_path, **CONFORMER, pos_enc_type="rope", quantize_targets=False
        )
    plan = preview("wav2vec2_conformer", tmp_path / "c.pt").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert {s.key.split(".")[0] for s in plan.skipped} == {"project_q", "final_proj"}
    out = convert("wav2vec2_conformer", tmp_path / "c.pt", tmp_path / "hf").unwrap()
    ported = load_pretrained_strictly(Wav2Vec2ConformerModel, out)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        ours = ported(x).last_hidden_state
    torch.testing.assert_close(ours, _features(original, x), rtol=0, atol=ATOL)
    back = preview_reverse("wav2vec2_conformer", out).unwrap().plan
    assert {u.key.split(".")[0] for u in back.unrecoverable} >= {"project_q", "final_proj"}


def test_what_the_family_never_reads_leaves_the_preview_as_it_is(
    pretrained: tuple[str, Path, Any], tmp_path: Path
) -> None:
    """A pre-training run's settings and trainer state changed: the same preview, the same key."""
    from tests.helpers import assert_unread_leaves_the_preview

    assert_unread_leaves_the_preview("wav2vec2_conformer", pretrained[1], tmp_path, ("cfg.model.pos_enc_type", "abs"))
