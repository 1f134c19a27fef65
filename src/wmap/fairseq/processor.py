"""The processor files of a converted model: what ``AutoProcessor.from_pretrained(out_dir)`` reads.

CTC families get a ``Wav2Vec2Processor``: a ``Wav2Vec2CTCTokenizer`` whose
vocabulary is the checkpoint's own fairseq target dictionary (from
``task_state``, or a ``dict.*.txt`` the user names) and a
``Wav2Vec2FeatureExtractor`` whose settings come from the fine-tuning task's
config. Headless families get the feature extractor alone.

The way back (``wmap export``) reads the same files back: ``vocab.json`` to fairseq's target
dictionary (the blank swap undone), the feature extractor's settings to the task's ``normalize`` and
``sample_rate`` (:data:`TASK` inverted).
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

from wmap.config_fields import ConfigTable, Translated, boolean, get, integer, inverse, translate
from wmap.errors import BadConfig, Disagrees
from wmap.fairseq.config import fairseq_model_config, fairseq_task_config
from wmap.fairseq.dictionary import SPECIALS, Dictionary, DictionaryError, find_in_task_state, parse_dict_file
from wmap.io import parse_json, read_small_text, save_processor
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
            partial(parsed_dictionary, where=where)
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


DICT_FILE = "a fairseq dictionary ('<symbol> <count>' per line)"


def parsed_dictionary(
    text: str, where: str, option: str = "--dict", expected: str = DICT_FILE
) -> Result[Dictionary, BadConfig]:
    """A fairseq ``dict.*.txt`` the user gave by ``option`` (:func:`parse_dict_file`); a malformed one
    is a :class:`BadConfig` naming the file (``where``), the option and what was ``expected``."""
    try:
        return Success(parse_dict_file(text, where))
    except DictionaryError as error:
        return Failure(BadConfig(where, option, expected, str(error)))


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


# --- the way back: the directory's processor files -> fairseq's dictionary and task settings ----------

Features = tuple[bool, int]
"""The feature extractor's settings as fairseq's audio tasks take them: (normalise, sample rate)."""

VOCAB = "vocab.json"
FEATURES = "processor_config.json|preprocessor_config.json"
"""The feature extractor's settings: nested in transformers v5's processor file, or on their own."""


BLANK_SWAPPED = (SPECIALS[1], SPECIALS[0], *SPECIALS[2:])
"""The specials' order in a CTC vocabulary the forward direction wrote: fairseq's blank ``<s>`` and
``<pad>`` swapped (transformers' blank is the pad token)."""


def vocabulary_dictionary(
    vocab_json: str, size: int, first: tuple[str, ...] = BLANK_SWAPPED
) -> Result[Dictionary, BadConfig]:
    """fairseq's target dictionary from the tokenizer's vocabulary: ids 0 to 3 the specials in the order
    ``first`` (a CTC vocabulary's, by default: index 0 back to ``<s>``, fairseq's blank; a seq2seq
    tokenizer's are fairseq's own, :data:`~wmap.fairseq.dictionary.SPECIALS`), then the labels in index
    order. ``size``: the model's outputs (``config.vocab_size``), which the vocabulary must name one for
    one; a label fairseq's ``dict.*.txt`` cannot hold (empty, a line break, a space before its count) is refused."""
    try:
        vocab = parse_json(vocab_json)
        by_index = {int(i): str(token) for token, i in vocab.items()}
    except (ValueError, TypeError, AttributeError, OverflowError) as error:  # int(1e999): OverflowError
        return Failure(BadConfig(VOCAB, "vocab", "a token -> id mapping", f"{type(error).__name__}"))
    expected = dict(enumerate(first))
    if {i: by_index.get(i) for i in expected} != expected or sorted(by_index) != list(range(len(by_index))):
        found = str([by_index.get(i) for i in range(4)])
        return Failure(BadConfig(VOCAB, "vocab", f"ids 0-3 {' '.join(first)} then the labels, no gaps", found))
    if len(vocab) != len(by_index) or len(by_index) != size:
        expected_size = f"{size} distinct tokens with distinct ids (config.json's vocab_size: the model's outputs)"
        return Failure(Disagrees(VOCAB, "vocab", expected_size, f"{len(vocab)} tokens with {len(by_index)} ids"))
    bad = next((t for t in by_index.values() if not t or t != t.strip() or len(t.splitlines()) != 1), None)
    if bad is not None:
        expected_token = "labels a dict.ltr.txt line can hold (no line break, no surrounding space, not empty)"
        return Failure(Disagrees(VOCAB, "vocab", expected_token, repr(bad)[:40]))
    return Success(Dictionary((*SPECIALS, *(by_index[i] for i in range(4, len(by_index))))))


def _settings(text: str, where: str) -> Result[Features, BadConfig]:
    """``do_normalize`` and ``sampling_rate`` of a feature extractor's file (nested in v5's processor
    file): fairseq's task table (:data:`TASK`) read back."""
    table = ConfigTable(where, inverse(TASK.fields))
    settings = extractor_settings(text, where, "a Wav2Vec2FeatureExtractor config (JSON)")
    read = settings.bind(partial(translate, table, report_unknown=False))
    return read.map(lambda found: (found.kwargs["normalize"], found.kwargs["sample_rate"]))


def extractor_settings(text: str, where: str, expected: str) -> Result[Any, BadConfig]:
    """A feature extractor's settings from its file: ``preprocessor_config.json``'s own, or nested in
    transformers v5's ``processor_config.json``; text that is not JSON is a :class:`BadConfig` naming
    the file (``where``) and what was ``expected``."""
    try:
        features = parse_json(text)
    except ValueError as error:
        return Failure(BadConfig(where, "feature_extractor", expected, str(error)))
    return Success(get(features, "feature_extractor", features))


def feature_settings(files: Mapping[str, str]) -> Result[Features, BadConfig]:
    """The feature extractor's normalisation and sampling rate, from ``processor_config.json`` or
    ``preprocessor_config.json``; where a directory holds both (a v4 directory re-saved by v5), they
    must agree: which one a loader reads is then no question."""
    held = [name for name in FEATURES.split("|") if name in files]
    read = [_settings(files[name], name) for name in held] or [_settings(files[FEATURES], FEATURES)]
    failed = next((r for r in read if isinstance(r, Failure)), None)
    if failed is not None:
        return failed
    found = [r.unwrap() for r in read]
    if any(other != found[0] for other in found[1:]):
        expected = f"the settings of {held[0]} (do_normalize, sampling_rate = {found[0]})"
        return Failure(Disagrees(held[1], "do_normalize, sampling_rate", expected, str(found[1])))
    return Success(found[0])
