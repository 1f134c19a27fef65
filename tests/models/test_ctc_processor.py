"""The CTC processor: fairseq's blank becomes transformers' pad token; settings from the task."""

from __future__ import annotations

from pathlib import Path

from transformers import Data2VecAudioConfig

from wmap.fairseq.dictionary import parse_dict_file
from wmap.fairseq.processor import ctc_processor, ctc_vocabulary, feature_extractor_settings


def test_the_blank_is_renamed_to_the_pad_token() -> None:
    vocab = ctc_vocabulary(parse_dict_file("| 3\nA 2\n", "d"))
    assert vocab == {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "A": 5}


def test_feature_extractor_settings_come_from_the_task() -> None:
    meta = {"cfg": {"task": {"sample_rate": 8000, "normalize": True}, "model": {}}}
    settings = feature_extractor_settings(Data2VecAudioConfig(), meta).unwrap()
    assert (settings.sampling_rate, settings.do_normalize, settings.return_attention_mask) == (8000, True, True)
    bad = {"cfg": {"task": {"sample_rate": "fast"}}}
    assert feature_extractor_settings(Data2VecAudioConfig(), bad).failure().key == "sample_rate"


def test_a_vocabulary_that_does_not_fit_the_head_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "dict.ltr.txt"
    file.write_text("| 3\nA 2\n")
    config = Data2VecAudioConfig(vocab_size=32)
    error = ctc_processor(config, {}, file).failure()
    assert "32 symbols" in error.message and "6 symbols" in error.message
    assert ctc_processor(Data2VecAudioConfig(vocab_size=6), {}, file).unwrap() is not None
    assert "--dict" in ctc_processor(config, {}, None).failure().message
