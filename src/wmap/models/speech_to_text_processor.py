"""The processor files of a converted ``speech_to_text`` directory: ``Speech2TextFeatureExtractor`` (as
many mel bins as the model's input channels, 16 kHz, utterance CMVN), and, given the sentencepiece
model (``--tokenizer``), ``Speech2TextTokenizer`` from it and the fairseq dictionary that fairseq's data
preparation writes beside it (``spm_unigram10000.model`` and ``spm_unigram10000.txt``): the two as a
``Speech2TextProcessor``, which ``AutoProcessor`` loads."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.errors import BadConfig
from wmap.fairseq.dictionary import Dictionary
from wmap.fairseq.processor import parsed_dictionary
from wmap.io import read_small_text, save_processor
from wmap.models.base import Writer, writing

GENERATION: dict[str, Any] = {
    "decoder_start_token_id": 2,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "suppress_tokens": [1],
    "min_new_tokens": 1,
    "num_beams": 5,
    "max_length": 201,
    "early_stopping": True,
}
"""How fairseq's ``SequenceGenerator`` decodes with its defaults (from ``</s>``, never the pad token, at
least one token before ``</s>``, 5 beams, at most 200 tokens: ``max_len_b``, after the ``</s>`` the
decoder starts from, which ``max_length`` counts): ``generate()`` and ``pipeline(...)`` as fairseq's
recipes run it (tested: the same best transcript and score as fairseq's beam 5; the n-best below it
may differ, as transformers keeps the best ended hypotheses where fairseq stops adding at 5)."""

SAMPLING_RATE = 16_000
DICTIONARY_BESIDE = (
    "fairseq's target dictionary beside the sentencepiece model (its name, .txt), as its data preparation writes it"
)


def feature_extractor(config: PretrainedConfig) -> Any:
    """``Speech2TextFeatureExtractor`` for the model's input channels (fairseq's recipes: utterance CMVN)."""
    from transformers import Speech2TextFeatureExtractor

    bins = int(config.input_feat_per_channel)
    return Speech2TextFeatureExtractor(feature_size=bins, num_mel_bins=bins, sampling_rate=SAMPLING_RATE)


def generation(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
    """The generation config (:data:`GENERATION`): written with ``--no-processor`` too."""
    from transformers import GenerationConfig

    return Success(GenerationConfig(**GENERATION).save_pretrained)


def processor(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
    """The generation config and the feature extractor, or with ``--tokenizer`` the ``Speech2TextProcessor``;
    the tokenizer is checked (the dictionary has one symbol per output, the sentencepiece model loads)
    before anything is written."""
    return Result.do(
        writing(written, settings)
        for written in _processor(config, file)
        for settings in generation(config, meta, file)
    )


def _processor(config: PretrainedConfig, file: Path | None) -> Result[Writer, BadConfig]:
    extractor = feature_extractor(config)
    if file is None:
        return Success(extractor.save_pretrained)
    if not file.is_file():
        return Failure(BadConfig(str(file), "--tokenizer", "an existing sentencepiece model file", "no such file"))
    where = str(file.with_suffix(".txt"))
    return (
        read_small_text(file.with_suffix(".txt"), "--tokenizer", DICTIONARY_BESIDE)
        .bind(partial(parsed_dictionary, where=where, option="--tokenizer", expected=DICTIONARY_BESIDE))
        .bind(partial(_sized, where=where, size=int(config.vocab_size)))
        .bind(partial(_tokenizer, file))
        .map(partial(_writer, extractor))
    )


def _sized(dictionary: Dictionary, where: str, size: int) -> Result[Dictionary, BadConfig]:
    if len(dictionary.symbols) != size:
        found = f"{len(dictionary.symbols)} symbols with fairseq's four"
        return Failure(BadConfig(where, "symbols", f"{size}, one per row of the decoder's embedding", found))
    return Success(dictionary)


def _tokenizer(model: Path, dictionary: Dictionary) -> Result[Any, BadConfig]:
    """``Speech2TextTokenizer`` of the vocabulary (fairseq's indices) and the sentencepiece model."""
    where = str(model)
    try:
        from transformers import Speech2TextTokenizer

        with tempfile.TemporaryDirectory() as staging:
            vocab = Path(staging) / "vocab.json"
            vocab.write_text(json.dumps(dictionary.indices, ensure_ascii=False), encoding="utf-8")
            return Success(Speech2TextTokenizer(str(vocab), str(model)))
    except ImportError as error:
        expected = "sentencepiece installed (pip install 'wmap[tokenizer]')"
        return Failure(BadConfig(where, "--tokenizer", expected, str(error)))
    except Exception as error:
        return Failure(BadConfig(where, "--tokenizer", "a sentencepiece model file", " ".join(str(error).split())))


def _writer(extractor: Any, tokenizer: Any) -> Writer:
    return partial(save_processor, "Speech2TextProcessor", extractor, tokenizer)
