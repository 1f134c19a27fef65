"""The processor files of a converted ``wav2vec2_mbart`` directory: the wav2vec2 feature extractor
(16 kHz, with attention mask), the seed's generation settings, and the ``MBart50Tokenizer`` where the
user gives its sentencepiece model (``--tokenizer``, the seed's ``dict_path``)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import GenerationConfig, PretrainedConfig

from wmap.errors import BadConfig
from wmap.fairseq.processor import FeatureExtractorSettings
from wmap.io import staged_copy
from wmap.models.base import Writer, writing

MBART50_EN_XX = 250004
"""The seed's ``forced_bos_token_id`` (``en_XX`` in mBART-50's vocabulary)."""


GENERATION = {
    "decoder_start_token_id": 2,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "forced_eos_token_id": 2,
}
"""The seed's generation settings (transformers 5 keeps them out of the model config)."""


def generation_config(config: PretrainedConfig) -> GenerationConfig:
    """:data:`GENERATION`, with ``forced_bos_token_id`` mBART-50's ``en_XX`` where the vocabulary has it."""
    english = MBART50_EN_XX if int(getattr(config.decoder, "vocab_size", 0)) > MBART50_EN_XX else None
    return GenerationConfig(**GENERATION, forced_bos_token_id=english)


FEATURES_16KHZ = FeatureExtractorSettings(16_000, do_normalize=True, return_attention_mask=True)


def extras(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
    """The wav2vec2 feature extractor (16 kHz, with attention mask), the generation config, and the
    MBart50Tokenizer where the user gave its sentencepiece model (``--tokenizer``, the seed's ``dict_path``)."""
    tokenizer = Success(writing()) if file is None else load_tokenizer(file)
    generation = generation_config(config).save_pretrained
    return tokenizer.map(partial(writing, FEATURES_16KHZ.write, generation))


def load_tokenizer(path: Path) -> Result[Writer, BadConfig]:
    """``MBart50Tokenizer`` from a sentencepiece model, checked before writing."""
    where = str(path)
    if not path.is_file():
        return Failure(BadConfig(where, "--tokenizer", "an existing sentencepiece model file", "no such file"))
    try:
        from transformers import MBart50Tokenizer

        # transformers 5 converts a sentencepiece model found under its conventional name in a directory.
        with staged_copy(path, "sentencepiece.bpe.model") as staging:
            tokenizer = MBart50Tokenizer.from_pretrained(staging)
    except ImportError as error:
        return Failure(
            BadConfig(where, "--tokenizer", "sentencepiece installed (pip install 'wmap[tokenizer]')", str(error))
        )
    except Exception as error:
        return Failure(BadConfig(where, "--tokenizer", "a sentencepiece model file", " ".join(str(error).split())))
    if (tokenizer.pad_token_id, tokenizer.eos_token_id) != (1, 2):
        found = f"pad/eos = {tokenizer.pad_token_id}/{tokenizer.eos_token_id}"
        return Failure(BadConfig(where, "--tokenizer", "fairseq's pad/eos ids 1/2 (as the config has)", found))

    return Success(tokenizer.save_pretrained)
