"""The processor files of a converted model: what ``AutoProcessor.from_pretrained(out_dir)`` reads.

CTC families get a ``Wav2Vec2Processor``: a ``Wav2Vec2CTCTokenizer`` whose
vocabulary is the checkpoint's own fairseq target dictionary (from
``task_state``, or a ``dict.*.txt`` the user names) and a
``Wav2Vec2FeatureExtractor`` whose settings come from the fine-tuning task's
config. Headless families get the feature extractor alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.config_fields import ConfigTable, Translated, boolean, get, integer, translate
from wmap.errors import BadConfig
from wmap.fairseq.config import fairseq_model_config, fairseq_task_config
from wmap.fairseq.dictionary import Dictionary, DictionaryError, find_in_task_state, parse_dict_file
from wmap.io import read_small_text, save_processor
from wmap.models.base import Writer

WORD_DELIMITER = "|"
"""fairseq's letter dictionaries mark word boundaries with ``|``."""


def ctc_vocabulary(dictionary: Dictionary) -> dict[str, int]:
    """The tokenizer's vocabulary: fairseq's indices, with the blank renamed as transformers expects.

    fairseq's CTC blank is ``<s>`` at index 0 (``audio_finetuning``'s ``blank_symbol``);
    transformers' CTC blank is the pad token. As transformers' own wav2vec2 conversion
    does, index 0 becomes the pad word and index 1 (fairseq's pad, never a label) the bos word.
    """
    vocab = dictionary.indices
    vocab[dictionary.pad_word] = 0
    vocab[dictionary.bos_word] = 1
    return vocab


@attrs.frozen
class FeatureExtractorSettings:
    """What the task fed the model: the sampling rate, per-utterance normalisation, and whether the
    model takes an attention mask (layer-norm extractors do; group-norm ones see zero padding)."""

    sampling_rate: int
    do_normalize: bool
    return_attention_mask: bool

    def write(self, out_dir: Path) -> None:
        self.extractor().save_pretrained(out_dir)

    def extractor(self) -> Any:
        from transformers import Wav2Vec2FeatureExtractor

        return Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=self.sampling_rate,
            padding_value=0.0,
            do_normalize=self.do_normalize,
            return_attention_mask=self.return_attention_mask,
        )


TASK = ConfigTable(
    "fairseq cfg.task",
    (
        Translated("sample_rate", integer(1, 1_000_000), "sampling_rate", 16_000),
        Translated("normalize", boolean, "do_normalize", False),
    ),
)
"""The task fields the feature extractor needs, as ``Wav2Vec2FeatureExtractor`` names them (a task config
holds many others: not reported); read back from the feature extractor's file on the way back."""


def feature_extractor_settings(
    config: PretrainedConfig, meta: Mapping[str, Any]
) -> Result[FeatureExtractorSettings, BadConfig]:
    """From fairseq's ``cfg.task`` (``sample_rate``, ``normalize``; the model's ``normalize`` where the task
    has none) and the target config's extractor mode."""
    task = fairseq_task_config(meta)
    normalize = get(task, "normalize", None)
    section = {
        "sample_rate": get(task, "sample_rate", 16_000),
        "normalize": get(fairseq_model_config(meta), "normalize", False) if normalize is None else normalize,
    }
    layer_norm = getattr(config, "feat_extract_norm", "layer") == "layer"
    return translate(TASK, section, report_unknown=False).map(
        lambda read: FeatureExtractorSettings(read.values["sample_rate"], read.values["normalize"], layer_norm)
    )


def _dictionary(meta: Mapping[str, Any], file: Path | None) -> Result[Dictionary, BadConfig]:
    if file is not None:
        where = str(file)
        return read_small_text(file, "--dict", "a fairseq dictionary file (dict.ltr.txt)").bind(
            partial(_parsed, where=where)
        )
    found = find_in_task_state(meta)
    if found is None:
        return Failure(
            BadConfig(
                "checkpoint",
                "task_state.target_dictionary",
                "the fine-tuning task's target dictionary; pass --dict dict.ltr.txt (the file fine-tuning used), "
                "or --no-processor to convert the weights alone",
                "missing",
            )
        )
    return Success(found)


def _parsed(text: str, where: str) -> Result[Dictionary, BadConfig]:
    try:
        return Success(parse_dict_file(text, where))
    except DictionaryError as error:
        return Failure(BadConfig(where, "--dict", "a fairseq dictionary ('<symbol> <count>' per line)", str(error)))


def ctc_processor(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
    """A ``Wav2Vec2Processor`` writer, checked before anything is written: the dictionary must have
    exactly one entry per output of the CTC head."""
    vocab_size = int(getattr(config, "vocab_size", 0))

    where = str(file) if file is not None else "task_state.target_dictionary"

    def fits(dictionary: Dictionary) -> Result[Dictionary, BadConfig]:
        if len(dictionary.symbols) != vocab_size:
            expected = f"{vocab_size} symbols, one per output of the CTC head"
            return Failure(BadConfig(where, "symbols", expected, f"{len(dictionary.symbols)} symbols"))
        repeated = repeated_symbol(dictionary)
        if repeated is not None:
            expected = "distinct symbols (a tokenizer's vocabulary gives each output its own token)"
            return Failure(BadConfig(where, "symbols", expected, f"{repeated!r} more than once (#fairseq:overwrite)"))
        return Success(dictionary)

    return Result.do(
        _writer(dictionary, extractor)
        for dictionary in _dictionary(meta, file).bind(fits)
        for extractor in feature_extractor_settings(config, meta)
    )


def repeated_symbol(dictionary: Dictionary) -> str | None:
    """A symbol that names two outputs, other than the blank swap (``<s>``/``<pad>`` at 0 and 1)."""
    seen: set[str] = set()
    for symbol in dictionary.symbols:
        if symbol in seen:
            return symbol
        seen.add(symbol)
    return None


def _writer(dictionary: Dictionary, extractor: FeatureExtractorSettings) -> Writer:
    vocab = ctc_vocabulary(dictionary)

    def write(out_dir: Path) -> None:
        from transformers import Wav2Vec2CTCTokenizer

        vocab_file = out_dir / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token=dictionary.unk_word,
            pad_token=dictionary.pad_word,
            bos_token=dictionary.bos_word,
            eos_token=dictionary.eos_word,
            word_delimiter_token=WORD_DELIMITER,
            do_lower_case=False,
        )
        save_processor("Wav2Vec2Processor", extractor.extractor(), tokenizer, out_dir)

    return write


def feature_extractor_writer(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """The feature extractor alone (headless models: the original script saved only that)."""
    return feature_extractor_settings(config, meta).map(lambda settings: settings.write)
