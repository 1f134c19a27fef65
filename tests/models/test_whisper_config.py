"""whisper's ``dims`` table both ways, without openai's code: what transformers' Whisper cannot hold is
refused naming the field, and ``values_back`` gives openai's dims again."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import WhisperConfig

from wmap.config_fields import translate, values_back
from wmap.models.whisper import DIMENSIONS_FROM, DIMS, config_from_checkpoint

DIMS_OF_TINY = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}


def test_dims_give_the_config_of_openais_tiny_and_come_back_the_same() -> None:
    config = config_from_checkpoint({"dims": DIMS_OF_TINY}, {}).unwrap().config
    assert isinstance(config, WhisperConfig)
    assert (config.d_model, config.encoder_ffn_dim, config.decoder_ffn_dim) == (384, 1536, 1536)
    assert (config.decoder_start_token_id, config.eos_token_id, config.vocab_size) == (50258, 50257, 51865)
    assert values_back(DIMS.fields, config) == DIMS_OF_TINY
    assert translate(DIMENSIONS_FROM, config.to_dict(), report_unknown=False).unwrap()  # openai holds it


@pytest.mark.parametrize(
    ("changed", "field", "said"),
    [
        ({"n_text_state": 512}, "n_text_state", "one d_model"),
        ({"n_audio_head": 5}, "n_audio_head", "a divisor of n_audio_state (384)"),
        ({"n_text_head": 7}, "n_text_head", "a divisor of n_audio_state (384)"),
        ({"n_vocab": 50000}, "n_vocab", "special-token ids"),
    ],
)
def test_dims_whisper_cannot_hold_are_refused_naming_the_field(changed: dict[str, Any], field: str, said: str) -> None:
    error = config_from_checkpoint({"dims": {**DIMS_OF_TINY, **changed}}, {}).failure()
    assert (error.source, error.key) == ("openai-whisper dims", field) and said in error.message


def test_no_dims_is_refused_naming_where_they_were_looked_for() -> None:
    error = config_from_checkpoint({"model_state_dict": {}}, {}).failure()
    assert error.key == "section" and "dims" in error.source and "--config" in error.message


def test_a_transformers_whisper_openai_cannot_hold_is_refused_on_the_way_back() -> None:
    config = config_from_checkpoint({"dims": DIMS_OF_TINY}, {}).unwrap().config
    wider = translate(DIMENSIONS_FROM, {**config.to_dict(), "decoder_ffn_dim": 2048}, report_unknown=False).failure()
    assert wider.key == "decoder_ffn_dim" and "1536" in wider.message and "four times the width" in wider.message
