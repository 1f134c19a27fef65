"""wmap.io.writing, and a conversion or export from a kept target layout: what is written without the
model or the processor class is byte for byte what is written with them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import split_torch_state_dict_into_shards
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import reference_checkpoint, wmap_process
from wmap.apply import fits_layout
from wmap.conversion import convert, preview
from wmap.io import save_pretrained_streaming, save_processor, shard_split
from wmap.models.base import class_name
from wmap.registry import SHIPPED
from wmap.target_layouts import LayoutCache


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _ctc(directory: Path) -> tuple[Any, Any, Any]:
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    vocab = directory / "vocab.json"
    vocab.write_text(json.dumps({"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "é": 5, "a": 6}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab), word_delimiter_token="|", do_lower_case=False)
    features = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=8000, return_attention_mask=True)
    return Wav2Vec2Processor, features, tokenizer


def _whisper(directory: Path) -> tuple[Any, Any, Any]:
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    (directory / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}))
    (directory / "merges.txt").write_text("#version: 0.2\na b\n")
    tokenizer = WhisperTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    return WhisperProcessor, WhisperFeatureExtractor(feature_size=128, chunk_length=20), tokenizer


def _musicgen(directory: Path) -> tuple[Any, Any, Any]:
    from tokenizers import Tokenizer, models
    from transformers import EncodecFeatureExtractor, MusicgenProcessor, T5Tokenizer

    unigram = Tokenizer(models.Unigram([("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("a", -1.0)], unk_id=2))
    tokenizer = T5Tokenizer(tokenizer_object=unigram, eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    return MusicgenProcessor, EncodecFeatureExtractor(feature_size=2, sampling_rate=48000), tokenizer


@pytest.mark.parametrize("parts", [_ctc, _whisper, _musicgen], ids=["wav2vec2", "whisper", "musicgen"])
def test_save_processor_writes_what_the_processor_class_writes(
    parts: Callable[[Path], tuple[Any, Any, Any]], tmp_path: Path
) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for directory in (ours, theirs):
        directory.mkdir()
    processor_class, features, tokenizer = parts(ours)
    save_processor(processor_class.__name__, features, tokenizer, ours)
    _, features, tokenizer = parts(theirs)
    processor_class(feature_extractor=features, tokenizer=tokenizer).save_pretrained(theirs)
    written = _files(ours)
    assert written == _files(theirs) and "processor_config.json" in written
    assert json.loads(written["tokenizer_config.json"])["processor_class"] == processor_class.__name__


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 64), min_size=0, max_size=12),
    st.integers(0, 4),
    st.sampled_from([48, 200, 1000, "1KB"]),
)
def test_shard_split_is_huggingface_hubs(sizes: list[int], shared: int, limit: int | str) -> None:
    state = {f"t{i}": torch.zeros(n) for i, n in enumerate(sizes)}
    for i in range(min(shared, len(sizes))):  # views of one storage: one shard holds them
        state[f"view{i}"] = state[f"t{i}"][:1]
    ours, theirs = shard_split(state, limit), split_torch_state_dict_into_shards(state, max_shard_size=limit)
    assert ours.filename_to_tensors == theirs.filename_to_tensors and ours.metadata == theirs.metadata
    assert ours.tensor_to_filename == theirs.tensor_to_filename and ours.is_sharded == theirs.is_sharded


CONFIG_CHANGED_BY_BUILDING = {"wav2vec2_mbart"}
"""Families whose model sets a field of the config it is built from (``SpeechEncoderDecoderModel``:
``tie_word_embeddings``): their layout is not kept, and the model is built every time."""


@pytest.mark.parametrize("name", [family.name for family in SHIPPED])
def test_a_directory_written_from_a_kept_layout_has_the_models_own_configs(name: str, tmp_path: Path) -> None:
    """transformers' ``save_pretrained`` of the model (on ``meta``: its config files alone) against the
    files written from the layout kept of it and a config no model was built from."""
    cache = LayoutCache(tmp_path / "layouts")
    built = preview(name, layouts=cache).unwrap()
    assert built.target is not None
    built.target.save_pretrained(tmp_path / "theirs", state_dict={})
    kept = preview(name, layouts=cache).unwrap()
    assert (kept.target is None) == (name not in CONFIG_CHANGED_BY_BUILDING)
    assert len(list(cache.folder.glob("*.json"))) == (name not in CONFIG_CHANGED_BY_BUILDING)
    assert kept.target_layout == built.target_layout
    ours = tmp_path / "ours"
    ours.mkdir()
    architecture = class_name(kept.spec.built_class(kept.config))
    save_pretrained_streaming(kept.config, architecture, kept.target_layout, {}, ours)
    assert {k: v for k, v in _files(ours).items() if k.endswith(".json")} == _files(tmp_path / "theirs")
    assert (built.target_layout.generation is not None) == (ours / "generation_config.json").exists()


def test_fits_layout_names_the_key_a_strict_load_would_refuse() -> None:
    layout = {"a": (2,), "b": (3,)}
    good = {"a": torch.zeros(2), "b": torch.zeros(3)}
    assert fits_layout("M", layout, good).unwrap() is good
    assert "missing key 'b'" in str(fits_layout("M", layout, {"a": torch.zeros(2)}).failure())
    assert "unexpected key 'c'" in str(fits_layout("M", layout, {**good, "c": torch.zeros(1)}).failure())
    wrong = str(fits_layout("M", layout, {**good, "b": torch.zeros(4)}).failure())
    assert "'b'" in wrong and "(4,)" in wrong and "(3,)" in wrong and "M" in wrong


RUNS = ("cold", "kept", "no-cache")
BUILT_TWICE = {"cold": (0, True), "kept": (0, False), "no-cache": (0, True)}
"""Exit codes and whether the modelling code was imported: the first run builds the target and keeps its
layout, the second takes it, the third (``--no-cache``, the control) builds it again."""


def _three_runs(arguments: Callable[[str], tuple[str, ...]], cache: Path) -> dict[str, tuple[int, str, bool]]:
    """``wmap`` with ``arguments(run)`` for each of :data:`RUNS` in turn, as fresh processes."""
    return {
        run: wmap_process(*arguments(run), *(("--no-cache",) if run == "no-cache" else ()), cache=cache) for run in RUNS
    }


def _codes(runs: dict[str, tuple[int, str, bool]]) -> dict[str, tuple[int, bool]]:
    return {run: (code, modelling) for run, (code, _, modelling) in runs.items()}


@pytest.mark.parametrize(
    ("family", "written"),
    [
        ("wav2vec2_ctc", {"model.safetensors", "processor_config.json", "vocab.json"}),
        ("whisper", {"model.safetensors", "generation_config.json", "processor_config.json", "tokenizer.json"}),
    ],
)
def test_a_conversion_of_a_kind_seen_writes_the_same_directory_without_the_modelling_code(
    family: str, written: set[str], tmp_path: Path
) -> None:
    """Whisper: tied ``proj_out`` left out, a generation config, its processor (the tokenizer from the
    installed openai-whisper's files); the CTC family: its processor from ``--dict``."""
    from tests.originals import write_letter_dictionary

    checkpoint = reference_checkpoint(tmp_path / "original.pt", family)
    files = ("--dict", str(write_letter_dictionary(tmp_path))) if family.endswith("_ctc") else ()
    cache = tmp_path / "cache"
    runs = _three_runs(lambda run: ("convert", family, str(checkpoint), str(tmp_path / run), *files), cache)
    assert _codes(runs) == BUILT_TWICE
    assert len(list((cache / "layouts").glob("*.json"))) == 1
    assert _files(tmp_path / "kept") == _files(tmp_path / "cold") == _files(tmp_path / "no-cache")
    assert written <= set(_files(tmp_path / "kept"))


def test_an_export_and_a_verification_of_a_kind_seen_need_no_modelling_code(tmp_path: Path) -> None:
    checkpoint = reference_checkpoint(tmp_path / "e.pt", "encodec_32khz")
    hf = tmp_path / "hf"
    convert("encodec_32khz", checkpoint, hf).unwrap()
    cache = tmp_path / "cache"
    exported = _three_runs(lambda run: ("export", "encodec_32khz", str(hf), str(tmp_path / f"{run}.pt")), cache)
    assert _codes(exported) == BUILT_TWICE
    written = {run: (tmp_path / f"{run}.pt").read_bytes() for run in RUNS}
    assert written["kept"] == written["cold"] == written["no-cache"]
    verified = _three_runs(lambda run: ("verify", "encodec_32khz", str(checkpoint), str(hf)), cache)
    # the layout the exports kept serves: the same config.json describes the same model
    assert _codes(verified) == {**BUILT_TWICE, "cold": (0, False)}
    assert len(list((cache / "layouts").glob("*.json"))) == 1
    assert len({output for _, output, _ in verified.values()}) == 1 and "verified: all 116" in verified["kept"][1]
