"""Real checkpoint files for tests that need no original package: the bundled reference layout of a
family (the original's real names and shapes), filled with random values; and the command line as a
fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from wmap.models import get_model

SMALLER: dict[str, dict[str, Any]] = {
    "wav2vec2_mbart": {"rows": {250054: 4096}, "dtype": torch.float16},
    "speech_to_text": {"rows": {10_004: 40}},
    "wav2vec2_conformer": {"dtype": torch.float16},
    "wav2vec2_conformer_ctc": {"dtype": torch.float16},
    "wavlm": {"dtype": torch.float16},
}
"""A reference layout too big to round-trip in every CI run (mBART-50's 250k-token vocabulary, twice,
beside wav2vec2-large: 4.2 GB in float32): its vocabulary cut to 4096 rows (the size is read from
the weights), its values in float16; speech-to-text's cut to the 40 pieces of a sentencepiece model
trained here (its way back needs the tokenizer's vocabulary); the large conformers' (620M values) and
WavLM-large's (315M) values in float16 (half the bytes written and read four times). Every name and
every shape stays the original's."""


def reference_state(
    model: str, *, dtype: torch.dtype = torch.float32, rows: Mapping[int, int] | None = None, smaller: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Random tensors with the original's names and shapes, and the checkpoint metadata. ``rows``
    replaces first dimensions (``{250054: 4096}``: a vocabulary cut, where the size is read from the
    weights); ``smaller``: as :data:`SMALLER` says for the family (its ``rows`` and ``dtype``)."""
    if smaller and model in SMALLER:
        return reference_state(model, **SMALLER[model])
    layout, meta = get_model(model).unwrap().reference_layout().unwrap()
    cut = rows or {}
    shapes = {key: (cut.get(shape[0], shape[0]), *shape[1:]) if shape else () for key, shape in layout.items()}
    return {key: _random(key, shape, dtype) for key, shape in shapes.items()}, meta


def _random(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A random tensor as the original holds it: a batch norm's step count is an int64 scalar."""
    if key.endswith("num_batches_tracked"):
        return torch.randint(0, 1000, shape, dtype=torch.int64)
    return torch.randn(shape, dtype=dtype)


def reference_checkpoint(path: Path, model: str = "encodec_32khz") -> Path:
    """Write a checkpoint file as the original would (the metadata beside the state dict)."""
    state, meta = reference_state(model)
    torch.save({**meta, "model": state} if meta else state, path)
    return path


def load_pretrained_strictly(model_class: Any, directory: Path) -> Any:
    """``from_pretrained`` that fails on any missing, unexpected or mismatched key."""
    model, info = model_class.from_pretrained(directory, output_loading_info=True)
    problems = {name: keys for name, keys in info.items() if keys and name != "error_msgs"}
    assert not problems and not info.get("error_msgs"), problems
    return model.eval()


CTC_LETTERS = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONISRHLDUMCWFGYPBVKXJQZ'"]
"""A transformers CTC vocabulary as wmap and transformers' fairseq script write it (blank = pad at 0)."""


def small_hf_config(family: str) -> Any:
    """A small transformers config of ``family``'s target class, with settings the original can hold
    (the way back refuses the others): what a user's fine-tune of a Hub model has, made tiny."""
    from transformers import (
        Data2VecAudioConfig,
        HubertConfig,
        UniSpeechSatConfig,
        Wav2Vec2Config,
        WavLMConfig,
        WhisperConfig,
    )

    speech: dict[str, Any] = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (48, 48),  # unlike the encoder's width: fairseq then has post_extract_proj
        "conv_kernel": (10, 3),
        "conv_stride": (5, 2),
        "num_conv_pos_embedding_groups": 2,
        "vocab_size": len(CTC_LETTERS),
        "mask_time_prob": 0.05,
    }
    if family == "whisper":
        return WhisperConfig(
            vocab_size=51865,
            num_mel_bins=80,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_source_positions=1500,
            max_target_positions=448,
        )
    if family.startswith("data2vec_audio"):
        return Data2VecAudioConfig(**speech, num_conv_pos_embeddings=5, conv_pos_kernel_size=3, conv_bias=True)
    if family.startswith("hubert") or family == "distilhubert":  # DistilHuBERT's: no norm before the projection
        hubert: dict[str, Any] = {"num_conv_pos_embeddings": 16, "feat_extract_norm": "group", "conv_bias": False}
        return HubertConfig(**speech, **hubert, feat_proj_layer_norm=family != "distilhubert")
    if family == "wavlm":  # Large's style: layer-norm extractor, conv bias, pre-LN
        layers: dict[str, Any] = {"feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True}
        return WavLMConfig(**speech, num_conv_pos_embeddings=16, num_buckets=16, max_bucket_distance=64, **layers)
    if family == "unispeech_sat":  # Base+'s style: group-norm extractor, post-LN
        return UniSpeechSatConfig(**speech, num_conv_pos_embeddings=16, feat_extract_norm="group", conv_bias=False)
    return Wav2Vec2Config(**speech, num_conv_pos_embeddings=16, feat_extract_norm="group", conv_bias=False)


HF_CLASSES = {
    "whisper": "WhisperForConditionalGeneration",
    "wav2vec2_ctc": "Wav2Vec2ForCTC",
    "data2vec_audio_ctc": "Data2VecAudioForCTC",
    "hubert_ctc": "HubertForCTC",
    "wav2vec2": "Wav2Vec2ForPreTraining",
    "hubert": "HubertModel",
    "data2vec_audio": "Data2VecAudioModel",
    "distilhubert": "HubertModel",
    "wavlm": "WavLMModel",
    "unispeech_sat": "UniSpeechSatModel",
}


def hub_directory(
    family: str,
    directory: Path,
    *,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | None = None,
    processor: bool = True,
    **config: Any,
) -> Any:
    """A directory as a user's fine-tune is saved: a transformers model of ``family``'s target class
    with random weights, written by ``save_pretrained`` itself (default, sharded, half precision),
    with the processor files ``save_pretrained`` of its processor writes; ``config`` overrides fields of
    :func:`small_hf_config`. Returns the model."""
    import json

    import transformers
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    torch.manual_seed(0)
    settings = small_hf_config(family)
    for field, value in config.items():
        setattr(settings, field, value)
    model = getattr(transformers, HF_CLASSES[family])(settings).eval()
    with torch.no_grad():  # trained-looking values: no zero biases, no unit norms
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    model = model.to(dtype)
    model.save_pretrained(directory, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    if not processor:
        return model
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16_000, do_normalize=True)
    if family.endswith("_ctc"):
        vocab = directory / "vocab.json"
        vocab.write_text(json.dumps({token: i for i, token in enumerate(CTC_LETTERS)}))
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab), word_delimiter_token="|")
        Wav2Vec2Processor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(directory)
    elif family != "whisper":
        features.save_pretrained(directory)
    return model


PROBE = """
import atexit, json, sys
from wmap.cli import run
watched = ("torch", "transformers", "transformers.modeling_utils")
atexit.register(lambda: print(json.dumps([name for name in watched if name in sys.modules]), file=sys.stderr))
run()
"""
"""The command as ``python -m wmap`` runs it (:func:`wmap.cli.run`), telling from an exit handler which
modules it imported: the handler's line is there only if ``run`` ran the exit handlers."""


def wmap_imports(*args: str, cache: Path) -> tuple[int, str, set[str]]:
    """``wmap ARGS`` as a fresh process with its cache in ``cache``: its exit code, its output, and
    which of torch, transformers and transformers' modelling code it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "WMAP_CACHE_DIR": str(cache), "COLUMNS": "200"},
    )
    return done.returncode, done.stdout, set(json.loads(done.stderr.strip().splitlines()[-1]))


def wmap_process(*args: str, cache: Path) -> tuple[int, str, bool]:
    """:func:`wmap_imports`, saying whether the modelling code was imported."""
    code, out, imported = wmap_imports(*args, cache=cache)
    return code, out, "transformers.modeling_utils" in imported


def _other_value(value: Any) -> Any:
    """Another value of the same shape: each number, string, flag and ``None`` changed, containers kept."""
    if isinstance(value, dict):  # an OrderedDict stays one
        return type(value)((key, _other_value(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return type(value)(_other_value(item) for item in value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 3 + 1
    if isinstance(value, str):
        return f"{value}-other"
    return "other" if value is None else value


def with_unread_changed(saved: Mapping[str, Any], unread: tuple[str, ...]) -> dict[str, Any]:
    """``saved`` (a checkpoint as loaded) with every value at the dotted paths ``unread`` changed,
    where the path exists: what another run of the same model, or another step, may differ in."""
    out = dict(saved)
    for path in unread:
        *parents, last = path.split(".")
        section: Any = out
        for name in parents:
            if not isinstance(section.get(name), dict):
                break
            section[name] = dict(section[name])
            section = section[name]
        else:
            if last in section:
                section[last] = _other_value(section[last])
    return out


def with_value(saved: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``saved`` with ``value`` at the dotted ``path`` (its sections copied, not changed)."""
    head, *rest = path.split(".")
    return {**saved, head: with_value(saved[head], ".".join(rest), value) if rest else value}


def assert_unread_leaves_the_preview(name: str, path: Path, folder: Path, read: tuple[str, Any]) -> None:
    """Every value at the family's unread paths in the checkpoint ``path`` changed (:func:`with_unread_changed`):
    the preview (planned, not kept) is the same text and the kept preview's key the same; ``read`` (a
    dotted path the family reads and another value there, the control) changes both. With the values
    at its displayed paths changed too, the kept preview is shown for the file as planning it shows it,
    as text and as JSON. Files are written under ``folder``."""
    import os

    from tests.test_cli import wmap
    from wmap.preview_cache import key
    from wmap.registry import SHIPPED, entry

    def printed(*args: str) -> str:
        return wmap(*args).stdout

    family = entry(name)
    unread, by_shape = family.unread, (*family.unread, *family.displayed)
    shipped = [shipped_family.name for shipped_family in SHIPPED]
    saved = torch.load(path, weights_only=False)  # the test's own file, with its originals' classes
    changed = with_unread_changed(saved, unread)
    assert changed != saved  # the file has some of them
    runs = {
        "run-1": saved,
        "run-2": changed,
        "run-3": with_value(saved, *read),
        "run-4": with_unread_changed(saved, by_shape),
    }
    texts, keys = [], []
    for run, content in runs.items():
        (folder / run).mkdir()
        torch.save(content, folder / run / "checkpoint.pt")
        file = str(folder / run / "checkpoint.pt")
        found = key(name, file, None, {}, shipped, family.unread, family.displayed)
        keys.append(None if found is None else found.digest)
        texts.append(printed("preview", name, file, "--no-cache", "--json").replace(run, "RUN"))
    assert keys[0] is not None and keys[0] == keys[1] == keys[3] != keys[2]
    assert texts[0] == texts[1] != texts[2]
    cache = Path(os.environ["WMAP_CACHE_DIR"])
    for shown_as in ((), ("--json",)):
        printed("preview", name, str(folder / "run-1" / "checkpoint.pt"), *shown_as)  # kept
        kept = {entry.name: entry.stat().st_mtime_ns for entry in cache.glob("*.json")}
        again = printed("preview", name, str(folder / "run-4" / "checkpoint.pt"), *shown_as)
        assert {entry.name: entry.stat().st_mtime_ns for entry in cache.glob("*.json")} == kept  # shown again
        assert again == printed("preview", name, str(folder / "run-4" / "checkpoint.pt"), *shown_as, "--no-cache")


def fairseq_sentencepiece(directory: Path, pieces: int = 40, special: tuple[str, ...] = ()) -> tuple[Path, list[str]]:
    """A unigram sentencepiece model as fairseq's speech-to-text ``gen_vocab`` trains it (``<s>``,
    ``<pad>``, ``</s>``, ``<unk>`` at 0 to 3; ``special``: its user-defined symbols, as a multilingual
    recipe's target language tags), and its pieces after those: the dictionary fairseq writes beside it
    (``spm.txt``, written here too)."""
    import sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(f"speech to text sentence number {i} for a tiny test" for i in range(200)))
    ids = {"bos_id": 0, "pad_id": 1, "eos_id": 2, "unk_id": 3}
    prefix = directory / "spm"
    user = {"user_defined_symbols": ",".join(special)} if special else {}
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=pieces, model_type="unigram", **ids, **user
    )
    model = sentencepiece.SentencePieceProcessor(model_file=str(prefix.with_suffix(".model")))
    symbols = [model.id_to_piece(i) for i in range(4, model.get_piece_size())]
    prefix.with_suffix(".txt").write_text("".join(f"{symbol} 1\n" for symbol in symbols))
    return prefix.with_suffix(".model"), symbols
