"""Whisper's processor and generation settings, derived offline from the checkpoint's vocabulary and dims.

openai's checkpoints hold no tokenizer: ``whisper.tokenizer`` builds one from a tiktoken BPE file
(``gpt2.tiktoken`` for English-only models, ``multilingual.tiktoken`` otherwise) plus special tokens
laid out by the vocabulary's size. This module does the same, as transformers' ``WhisperTokenizer``:
the BPE file comes from the installed openai-whisper package (read as a file; the package is not
imported) or from a file or directory the user names (``--tokenizer``). The generation config gets
the settings openai's decoding uses for that vocabulary (end of text, begin/suppressed tokens, the
language and task ids, timestamps), every value derived from the vocabulary and the dims: nothing is
looked up on the Hub, and nothing is guessed from transformers' English-only defaults.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.errors import BadConfig
from wmap.io import read_small_text, regular_file_problem, save_processor
from wmap.models.base import Writer

TIMESTAMPS = 1501
"""``<|0.00|>`` .. ``<|30.00|>`` in steps of 0.02 s."""
CONTROL = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>")
"""openai's control tokens after the languages, in their order."""
NON_SPEECH_SYMBOLS = (
    *'"#()*+/:;<=>@[\\]^_`{|}~「」『』',
    *("<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))"),
    *("[[", "]]", "{{", "}}", "♪♪", "♪♪♪"),
)
"""openai's ``Tokenizer.non_speech_tokens``: symbols suppressed at every step (and ``♩♪♫♬♭♮♯``)."""
MUSIC = "♩♪♫♬♭♮♯"
SAMPLING_RATE, HOP_LENGTH = 16_000, 160
"""openai's audio: 16 kHz, a mel frame every 160 samples."""


@attrs.frozen
class Vocabulary:
    """What a Whisper vocabulary size says, as openai's ``whisper.tokenizer`` lays it out: the BPE
    file, how many language tokens follow start-of-transcript, and every special id."""

    size: int

    @property
    def multilingual(self) -> bool:
        return self.size >= 51865

    @property
    def bpe_file(self) -> str:
        return "multilingual.tiktoken" if self.multilingual else "gpt2.tiktoken"

    @property
    def end_of_text(self) -> int:
        """The first special id: the BPE file's size (50257 multilingual, 50256 GPT-2)."""
        return 50257 if self.multilingual else 50256

    @property
    def languages(self) -> int:
        """99 for the English-only and multilingual vocabularies, 100 for large-v3's (Cantonese)."""
        return self.size - self.end_of_text - 2 - len(CONTROL) - TIMESTAMPS

    @property
    def start_of_transcript(self) -> int:
        return self.end_of_text + 1

    def control(self, token: str) -> int:
        return self.start_of_transcript + 1 + self.languages + CONTROL.index(token)

    def language_ids(self) -> dict[str, int]:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES  # openai's order

        return {
            f"<|{code}|>": self.start_of_transcript + 1 + i for i, code in enumerate(list(LANGUAGES)[: self.languages])
        }


def vocabulary(size: int) -> Result[Vocabulary, BadConfig]:
    """The layout of a vocabulary of ``size`` tokens, if it is one of openai's."""
    found = Vocabulary(size)
    if size in (51864, 51865, 51866):
        return Success(found)
    expected = "51864, 51865 or 51866 (openai's vocabularies); or convert with --no-processor"
    return Failure(BadConfig("whisper", "vocab_size", expected, str(size)))


def installed_bpe_file(name: str) -> Path | None:
    """openai-whisper's own ``assets/NAME`` if the package is installed (found, not imported)."""
    try:
        spec = importlib.util.find_spec("whisper")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "assets" / name
    return path if path.is_file() else None


def bpe_source(vocab: Vocabulary, file: Path | None) -> Result[Path, BadConfig]:
    """The BPE file: the user's (a file, or a directory holding ``gpt2.tiktoken``/``multilingual.tiktoken``),
    else the installed openai-whisper's; refused, naming the flag, when there is neither."""
    if file is not None:
        path = file / vocab.bpe_file if file.is_dir() else file
        problem = regular_file_problem(path)
        if problem is None:
            return Success(path)
        return Failure(BadConfig(str(path), "--tokenizer", f"openai's {vocab.bpe_file}", problem))
    found = installed_bpe_file(vocab.bpe_file)
    if found is not None:
        return Success(found)
    expected = (
        f"openai's {vocab.bpe_file}: install openai-whisper, or pass --tokenizer FILE (or the directory holding "
        "it); --no-processor writes the weights alone"
    )
    return Failure(BadConfig("whisper tokenizer", "--tokenizer", expected, "not found"))


def read_ranks(text: str, where: str, expected_size: int) -> Result[dict[bytes, int], BadConfig]:
    """A tiktoken BPE file (``base64-token rank`` per line), ranks 0..n-1 each once, n as the vocabulary says."""
    ranks: dict[bytes, int] = {}
    expected = f"a tiktoken BPE file of {expected_size} ranks (openai's)"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        token, _, rank = line.partition(" ")
        try:
            ranks[base64.b64decode(token)] = int(rank)  # openai's multilingual file holds "=": the empty token
        except (ValueError, binascii.Error):
            return Failure(BadConfig(f"{where}:{number}", "--tokenizer", expected, repr(line[:40])))
    if sorted(ranks.values()) != list(range(expected_size)):
        return Failure(BadConfig(where, "--tokenizer", expected, f"{len(ranks)} tokens"))
    return Success(ranks)


def _merged(ranks: Mapping[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """``token`` split by byte-level BPE with the merges ranked below ``max_rank`` (tiktoken's issue #60)."""
    parts = [bytes([b]) for b in token]
    while True:
        best: tuple[int, int] | None = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            return parts
        i = best[1]
        parts = [*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]]


def vocab_and_merges(ranks: Mapping[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The byte-level vocabulary and merges of a tiktoken BPE, as transformers' BPE tokenizer takes them."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_encoder = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(byte_encoder[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            pair = _merged(ranks, token, rank)
            if len(pair) == 2:
                merges.append((text(pair[0]), text(pair[1])))
    return vocab, merges


def build_tokenizer(vocab: Vocabulary, ranks: Mapping[bytes, int]) -> Any:
    """transformers' ``WhisperTokenizer`` with openai's special tokens at openai's ids."""
    from transformers import WhisperTokenizer

    bpe_vocab, merges = vocab_and_merges(ranks)
    tokenizer = WhisperTokenizer(vocab=bpe_vocab, merges=merges)
    specials = ["<|endoftext|>", "<|startoftranscript|>", *vocab.language_ids(), *CONTROL]
    tokenizer.add_tokens(specials, special_tokens=True)
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)], special_tokens=False)
    tokenizer.set_prefix_tokens()  # now that <|startoftranscript|> exists: the prefix a loaded tokenizer has
    return tokenizer


def non_speech_tokens(tokenizer: Any) -> list[int]:
    """openai's ``Tokenizer.non_speech_tokens``, computed with the same BPE."""

    def encode(text: str) -> list[int]:
        ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
        return ids

    found = {encode(" -")[0], encode(" '")[0]}
    for symbol in (*NON_SPEECH_SYMBOLS, *MUSIC):
        for ids in (encode(symbol), encode(" " + symbol)):
            if len(ids) == 1 or symbol in MUSIC:
                found.add(ids[0])
    return sorted(found)


BLANK = 220
"""The id of a lone space (``Ġ``) in both of openai's BPE files: GPT-2's byte-level vocabulary."""


def alignment_heads(layers: int, heads: int) -> list[list[int]]:
    """The cross-attention heads word timestamps align with, as openai-whisper has them for a model it
    loads from a file: every head of the decoder's second half (its default; the tuned sets it keeps
    are chosen by a released model's name, which a file does not carry)."""
    return [[layer, head] for layer in range(layers // 2, layers) for head in range(heads)]


def generation_settings(
    vocab: Vocabulary, text_context: int, audio_context: int, tokenizer: Any | None, decoder: tuple[int, int]
) -> dict[str, Any]:
    """The generation config openai's decoding implies for this vocabulary and these dims (what the
    official transformers checkpoints carry; the alignment heads openai's for a file, ``decoder``: its
    layers and heads). The first timestamp may be at most 1 s (openai's ``max_initial_timestamp``), in
    steps of 30 s / ``audio_context``. Without the ``tokenizer`` (``--no-processor``) openai's non-speech
    tokens cannot be computed: only the special ids are suppressed; every other setting is the same."""
    end = vocab.end_of_text
    suppressed = [
        *(non_speech_tokens(tokenizer) if tokenizer is not None else ()),
        vocab.start_of_transcript,
        vocab.control("<|startoflm|>"),
        vocab.control("<|startofprev|>"),
        vocab.control("<|nospeech|>"),
    ]
    settings: dict[str, Any] = {
        "bos_token_id": end,
        "eos_token_id": end,
        "pad_token_id": end,
        "decoder_start_token_id": vocab.start_of_transcript,
        "begin_suppress_tokens": [BLANK, end],
        "suppress_tokens": sorted(set(suppressed)),
        "max_length": text_context,
        "max_initial_timestamp_index": round(1.0 / (30 / audio_context)),  # 50 for openai's 1500 positions
        "no_timestamps_token_id": vocab.control("<|notimestamps|>"),
        "prev_sot_token_id": vocab.control("<|startofprev|>"),
        "is_multilingual": vocab.multilingual,
        "return_timestamps": False,
        "alignment_heads": alignment_heads(*decoder),
    }
    if vocab.multilingual:
        settings["lang_to_id"] = vocab.language_ids()
        settings["task_to_id"] = {
            "translate": vocab.control("<|translate|>"),
            "transcribe": vocab.control("<|transcribe|>"),
        }
        # the language (None: detected) then transcribe, as openai decodes by default; without it a detected
        # language is followed by no task token at all (transformers' generate)
        settings["forced_decoder_ids"] = [[1, None], [2, vocab.control("<|transcribe|>")]]
    return settings


@attrs.frozen
class Prepared:
    """What is written beside a converted Whisper: checked and read before anything is written."""

    vocab: Vocabulary
    ranks: Mapping[bytes, int]
    mels: int
    text_context: int
    audio_context: int
    """Encoder positions: two mel frames (10 ms each) per position, so 1500 -> openai's 30 s chunks."""
    decoder: tuple[int, int]
    """The decoder's layers and attention heads (:func:`alignment_heads`)."""

    def write(self, out_dir: Path) -> None:
        from transformers import WhisperFeatureExtractor

        tokenizer = build_tokenizer(self.vocab, self.ranks)
        seconds = self.audio_context * 2 * HOP_LENGTH // SAMPLING_RATE
        features = WhisperFeatureExtractor(feature_size=self.mels, chunk_length=seconds)
        save_processor("WhisperProcessor", features, tokenizer, out_dir)
        save_generation_config(
            generation_settings(self.vocab, self.text_context, self.audio_context, tokenizer, self.decoder), out_dir
        )


def _dims(config: PretrainedConfig) -> tuple[int, int, int, tuple[int, int]]:
    decoder = (int(config.decoder_layers), int(config.decoder_attention_heads))
    return int(config.num_mel_bins), int(config.max_target_positions), int(config.max_source_positions), decoder


def whisper_processor(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """A ``WhisperProcessor`` and generation config for ``config``'s vocabulary and mel count."""
    return vocabulary(int(config.vocab_size)).bind(partial(prepared, config=config, file=file)).map(_writer)


def prepared(vocab: Vocabulary, config: PretrainedConfig, file: Path | None) -> Result[Prepared, BadConfig]:
    """The BPE ranks of ``vocab`` read from ``file`` (or openai-whisper's own), with ``config``'s dims."""
    return Result.do(
        Prepared(vocab, ranks, *_dims(config))
        for path in bpe_source(vocab, file)
        for text in read_small_text(path, "--tokenizer", f"openai's {vocab.bpe_file}")
        for ranks in read_ranks(text, str(path), vocab.end_of_text)
    )


def _writer(prepared: Prepared) -> Writer:
    return prepared.write


def whisper_generation_config(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """With ``--no-processor``: no tokenizer or feature extractor, but the generation config still
    derived from the vocabulary and dims (transformers' own default is English-only's), the non-speech
    tokens aside (they need the BPE)."""
    _, text, audio, decoder = _dims(config)
    return vocabulary(int(config.vocab_size)).map(
        lambda vocab: partial(save_generation_config, generation_settings(vocab, text, audio, None, decoder))
    )


def save_generation_config(settings: Mapping[str, Any], out_dir: Path) -> None:
    """``GenerationConfig(**settings)`` written into ``out_dir``."""
    from transformers import GenerationConfig

    GenerationConfig(**settings).save_pretrained(out_dir)
