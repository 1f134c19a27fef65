"""The processor files of a converted ``speech_to_text`` directory: ``Speech2TextFeatureExtractor`` (as
many mel bins as the model's input channels, 16 kHz, utterance CMVN), and, given the sentencepiece
model (``--tokenizer``), ``Speech2TextTokenizer`` from it and the fairseq dictionary that fairseq's data
preparation writes beside it (``spm_unigram10000.model`` and ``spm_unigram10000.txt``): the two as a
``Speech2TextProcessor``, which ``AutoProcessor`` loads. The task's data config beside them
(``config.yaml``) says how fairseq normalised the features: read by :data:`S2T_DATA`, both ways."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.config_fields import (
    Checked,
    Composite,
    ConfigTable,
    Ignored,
    Joint,
    Translated,
    Translation,
    boolean,
    get,
    integer,
    translate,
)
from wmap.errors import BadConfig
from wmap.fairseq.config import TRAINING_ONLY, fairseq_task_config
from wmap.fairseq.dictionary import Dictionary
from wmap.fairseq.processor import parsed_dictionary
from wmap.io import read_small_text, save_processor
from wmap.models.base import Writer, writing
from wmap.yaml_text import read_yaml

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


UTTERANCE_CMVN = "utterance_cmvn"


def inference_transforms(value: object) -> Result[Any, str]:
    """The feature transforms fairseq's data config applies at inference (``_eval``, else ``*``: the
    split's own name is not known here), by name; Speech2TextFeatureExtractor has utterance CMVN only."""
    if value is None:
        return Success(())
    names = value.get("_eval", value.get("*", [])) if isinstance(value, Mapping) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return Failure("a mapping of splits ('_eval', '*') to lists of transform names")
    other = [name for name in names if name != UTTERANCE_CMVN]
    if other:
        return Failure(f"at inference only {UTTERANCE_CMVN} (Speech2TextFeatureExtractor's CMVN), not {other}")
    return Success(tuple(names))


def cepstral_normalisation(values: Mapping[str, Any]) -> dict[str, bool]:
    """Whether the features are normalised per utterance (either key may list the transform)."""
    return {"do_ceptral_normalize": UTTERANCE_CMVN in (*values["transforms"], *values["feature_transforms"])}


def cepstral_normalisation_back(settings: Any) -> dict[str, Any]:
    return {"transforms": {"*": [UTTERANCE_CMVN]} if settings.do_ceptral_normalize else {}}


def cmvn_settings(value: object) -> Result[Any, str]:
    """``utterance_cmvn``'s settings: ``norm_means`` and ``norm_vars``, booleans (fairseq's default true)."""
    found = {} if value is None else value
    settings = {name: get(found, name, True) for name in ("norm_means", "norm_vars")}
    if not isinstance(found, Mapping) or not all(isinstance(flag, bool) for flag in settings.values()):
        return Failure("a mapping with norm_means and norm_vars true or false")
    return Success(settings)


def cmvn_kwargs(settings: Mapping[str, bool]) -> dict[str, bool]:
    return {"normalize_means": settings["norm_means"], "normalize_vars": settings["norm_vars"]}


def cmvn_back(settings: Any) -> dict[str, bool]:
    return {"norm_means": bool(settings.normalize_means), "norm_vars": bool(settings.normalize_vars)}


def bins(count: int) -> dict[str, int]:
    return {"feature_size": count, "num_mel_bins": count}


def bins_back(settings: Any) -> int:
    return int(settings.num_mel_bins)


S2T_DATA = ConfigTable(
    "config.yaml",
    (
        Composite("input_feat_per_channel", integer(1, 4096), bins, bins_back, 80),
        Checked("input_channels", (1,), "Speech2TextFeatureExtractor gives one channel", 1, integer(1, 64)),
        Translated("transforms", inference_transforms, None, None),
        Joint("feature_transforms", inference_transforms, cepstral_normalisation, cepstral_normalisation_back, None),
        Composite(UTTERANCE_CMVN, cmvn_settings, cmvn_kwargs, cmvn_back, None),
        Checked("use_audio_input", (False,), "s2t_transformer takes filter banks, not the waveform", False, boolean),
        Ignored("global_cmvn", "the statistics of global CMVN, which a transform (checked) would name"),
        Ignored("vocab_filename", "the dictionary: read beside the sentencepiece model (its name, .txt)"),
        Ignored("bpe_tokenizer", "the sentencepiece model: --tokenizer"),
        Ignored("prepend_tgt_lang_tag", "a target language tag: give generate() its id (forced_bos_token_id)"),
        Ignored("specaugment", TRAINING_ONLY + " (SpecAugment)"),
        Ignored("sampling_alpha", TRAINING_ONLY + " (how languages are sampled)"),
        Ignored("shuffle", TRAINING_ONLY),
        Ignored("audio_root", "where the training audio was"),
    ),
)
"""fairseq's speech-to-text data config (``config.yaml``) <-> ``Speech2TextFeatureExtractor``'s settings:
the filter banks' size, and the normalisation fairseq applies at inference (utterance CMVN, its means
and variances, or none; global CMVN and other transforms are refused, naming the field). Read forward
from the ``config.yaml`` beside the sentencepiece model, and back to write it."""


def feature_extractor(config: PretrainedConfig, settings: Mapping[str, Any] | None = None) -> Any:
    """``Speech2TextFeatureExtractor`` for the model's input channels: with the data config's ``settings``
    (:data:`S2T_DATA`), else utterance CMVN, as fairseq's recipes write it."""
    from transformers import Speech2TextFeatureExtractor

    count = int(config.input_feat_per_channel)
    kwargs = {**bins(count), **(settings or {})}
    return Speech2TextFeatureExtractor(sampling_rate=SAMPLING_RATE, **kwargs)


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
        for written in _processor(config, meta, file)
        for settings in generation(config, meta, file)
    )


DATA_CONFIG = "config.yaml"
"""The task's data config, beside the sentencepiece model (a file's ``cfg.task.config_yaml`` names it)."""


def _processor(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
    if file is None:
        return Success(feature_extractor(config).save_pretrained)
    if not file.is_file():
        return Failure(BadConfig(str(file), "--tokenizer", "an existing sentencepiece model file", "no such file"))
    named = Path(str(get(fairseq_task_config(meta), "config_yaml", DATA_CONFIG))).name  # beside it, by name only
    return Result.do(
        _writer(feature_extractor(config, settings), tokenizer)
        for settings in data_settings(config, file.parent / named)
        for tokenizer in _tokenizer_beside(config, file)
    )


def _tokenizer_beside(config: PretrainedConfig, file: Path) -> Result[Any, BadConfig]:
    """The sentencepiece model's tokenizer, with the dictionary beside it (its name, ``.txt``)."""
    where = str(file.with_suffix(".txt"))
    return (
        read_small_text(file.with_suffix(".txt"), "--tokenizer", DICTIONARY_BESIDE)
        .bind(partial(parsed_dictionary, where=where, option="--tokenizer", expected=DICTIONARY_BESIDE))
        .bind(partial(_sized, where=where, size=int(config.vocab_size)))
        .bind(partial(_tokenizer, file))
    )


def data_settings(config: PretrainedConfig, path: Path) -> Result[dict[str, Any], BadConfig]:
    """The feature extractor's settings from the data config at ``path`` (:data:`S2T_DATA`), its
    filter banks checked against the model's; none where there is no such file (utterance CMVN)."""
    if not path.is_file():
        return Success({})
    expected = "fairseq's speech-to-text data config (YAML)"
    return (
        read_small_text(path, "--tokenizer", expected)
        .bind(partial(_parsed, where=str(path)))
        .bind(partial(translate, S2T_DATA))
        .bind(partial(_fits, config=config, where=str(path)))
    )


def _parsed(text: str, where: str) -> Result[Any, BadConfig]:
    found = read_yaml(text, DATA_CONFIG, where)
    if isinstance(found, BadConfig):
        return Failure(found)
    if not isinstance(found, Mapping):  # fairseq's S2TDataConfig reads a mapping: an empty file is none
        expected = "fairseq's speech-to-text data config (a YAML mapping)"
        return Failure(BadConfig(where, DATA_CONFIG, expected, "empty" if found is None else type(found).__name__))
    return Success(found)


def _fits(read: Translation, config: PretrainedConfig, where: str) -> Result[dict[str, Any], BadConfig]:
    count, bins_of_model = read.kwargs["num_mel_bins"], int(config.input_feat_per_channel)
    if count == bins_of_model:
        return Success(dict(read.kwargs))
    expected = f"{bins_of_model} (the model's input_feat_per_channel)"
    return Failure(BadConfig(where, "input_feat_per_channel", expected, str(count)))


def _sized(dictionary: Dictionary, where: str, size: int) -> Result[Dictionary, BadConfig]:
    if len(dictionary.symbols) != size:
        found = f"{len(dictionary.symbols)} symbols with fairseq's four"
        return Failure(BadConfig(where, "symbols", f"{size}, one per row of the decoder's embedding", found))
    return Success(dictionary)


def language_codes(dictionary: Dictionary) -> str | None:
    """``lang_codes`` for ``Speech2TextTokenizer`` where the dictionary holds the target language tags of a
    set it knows (``<lang:de>``, MuST-C's: a multilingual model's, fairseq's ``prepend_tgt_lang_tag``), so
    that ``tokenizer.lang_code_to_id`` gives the ``forced_bos_token_id`` to translate into; else none."""
    from transformers.models.speech_to_text.tokenization_speech_to_text import LANGUAGES

    for name, languages in LANGUAGES.items():
        if all(f"<lang:{language}>" in dictionary.indices for language in languages):
            return name
    return None


def _tokenizer(model: Path, dictionary: Dictionary) -> Result[Any, BadConfig]:
    """``Speech2TextTokenizer`` of the vocabulary (fairseq's indices) and the sentencepiece model, with the
    language codes the dictionary's tags name (:func:`language_codes`), each at the dictionary's index."""
    where = str(model)
    try:
        from transformers import Speech2TextTokenizer

        with tempfile.TemporaryDirectory() as staging:
            vocab = Path(staging) / "vocab.json"
            vocab.write_text(json.dumps(dictionary.indices, ensure_ascii=False), encoding="utf-8")
            tokenizer = Speech2TextTokenizer(str(vocab), str(model), lang_codes=language_codes(dictionary))
    except ImportError as error:
        expected = "sentencepiece installed (pip install 'wmap[tokenizer]')"
        return Failure(BadConfig(where, "--tokenizer", expected, str(error)))
    except Exception as error:
        return Failure(BadConfig(where, "--tokenizer", "a sentencepiece model file", " ".join(str(error).split())))
    tags = {f"<lang:{code}>": index for code, index in tokenizer.lang_code_to_id.items()}
    wrong = next((tag for tag, index in tags.items() if dictionary.indices[tag] != index), None)
    if wrong is not None:  # transformers takes a tag's id from the sentencepiece model, fairseq from its dictionary
        expected = f"{wrong} at the dictionary's index {dictionary.indices[wrong]} (the language tag generate() forces)"
        return Failure(BadConfig(where, "--tokenizer", expected, f"index {tags[wrong]}"))
    return Success(tokenizer)


def _writer(extractor: Any, tokenizer: Any) -> Writer:
    return partial(save_processor, "Speech2TextProcessor", extractor, tokenizer)
