"""whisper: openai-whisper <-> WhisperForConditionalGeneration, in parity with openai's own code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import WhisperForConditionalGeneration

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.errors import BadConfig
from wmap.way_back import export, preview_reverse

pytestmark = pytest.mark.parity

SMALL = {
    "n_mels": 80,
    "n_audio_ctx": 50,
    "n_audio_state": 64,
    "n_audio_head": 4,
    "n_audio_layer": 2,
    "n_vocab": 51865,
    "n_text_ctx": 24,
    "n_text_state": 64,
    "n_text_head": 4,
    "n_text_layer": 2,
}
TOKENS = torch.tensor([[50258, 50259, 50359, 50363, 440, 1203, 2121, 13]])
"""start of transcript, English, transcribe, no timestamps, then text."""


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float16 openai checkpoint, as openai releases them."""
    from tests.originals import save_whisper_checkpoint, whisper_original

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("whisper") / "small.pt"
    return save_whisper_checkpoint(path, whisper_original(SMALL))


def openai_outputs(model: Any, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        audio = model.encoder(mel)
        return audio, model.decoder(TOKENS, audio)


def test_openai_to_transformers_has_parity_and_keeps_float16(released: Path, tmp_path: Path) -> None:
    import whisper

    prepared = preview("whisper", released).unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    out = convert("whisper", released, tmp_path / "hf").unwrap()  # no --config
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float16}
    ours = load_pretrained_strictly(WhisperForConditionalGeneration, out).float()
    theirs = whisper.load_model(str(released), device="cpu").float()
    mel = torch.randn(1, SMALL["n_mels"], 2 * SMALL["n_audio_ctx"])
    audio, logits = openai_outputs(theirs, mel)
    with torch.no_grad():
        encoded = ours.model.encoder(mel).last_hidden_state
        our_logits = ours(input_features=mel, decoder_input_ids=TOKENS).logits
    torch.testing.assert_close(encoded, audio, rtol=0, atol=1e-5)
    torch.testing.assert_close(our_logits, logits, rtol=0, atol=1e-5)
    assert logits.std() > 0.1  # not vacuous
    assert (out / "generation_config.json").exists()


def test_the_way_back_loads_in_whisper_and_gives_back_every_tensor(released: Path, tmp_path: Path) -> None:
    import whisper

    hf = convert("whisper", released, tmp_path / "hf").unwrap()
    reverse = preview_reverse("whisper", hf).unwrap().plan
    assert reverse.is_clean(), reverse.problems(limit=5)
    assert not reverse.skipped  # tied: written once, as save_pretrained writes it (openai holds it once too)
    assert "proj_out.weight" not in load_file(hf / "model.safetensors")
    back = export("whisper", hf, tmp_path / "back.pt").unwrap()
    original = torch.load(released, weights_only=True)
    exported = torch.load(back, weights_only=True)
    assert exported["dims"] == original["dims"]
    assert exported["model_state_dict"].keys() == original["model_state_dict"].keys()
    for key, tensor in original["model_state_dict"].items():
        mine = exported["model_state_dict"][key]
        assert mine.dtype == tensor.dtype and torch.equal(mine, tensor), key
    mel = torch.randn(1, SMALL["n_mels"], 2 * SMALL["n_audio_ctx"])
    expected = openai_outputs(whisper.load_model(str(released), device="cpu").float(), mel)
    returned = openai_outputs(whisper.load_model(str(back), device="cpu").float(), mel)
    for mine, theirs in zip(returned, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)

    again = convert("whisper", back, tmp_path / "again").unwrap()  # HF -> export -> convert
    first, second = load_file(hf / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(first[k].dtype == second[k].dtype and torch.equal(first[k], second[k]) for k in first)


def test_an_untied_fine_tune_is_refused_on_the_way_back(released: Path, tmp_path: Path) -> None:
    import json

    hf = convert("whisper", released, tmp_path / "hf").unwrap()
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    error = preview_reverse("whisper", hf).failure()
    assert isinstance(error, BadConfig) and error.key == "tie_word_embeddings" and "token embedding" in error.message


def test_a_tied_copy_that_differs_is_refused(released: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    hf = convert("whisper", released, tmp_path / "hf").unwrap()
    tensors = load_file(hf / "model.safetensors")
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"] + 1  # a copy that differs
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})
    error = export("whisper", hf, tmp_path / "back.pt").failure()
    assert "proj_out.weight" in error.message and "untied" in error.message
    assert not (tmp_path / "back.pt").exists()
