"""A converted Whisper is usable as users use it: ``pipeline(...)`` with no extra argument, ``generate`` with
a language, a task and timestamps, and CTranslate2; each gives openai-whisper's greedy tokens.

The checkpoints are openai's own ``Whisper`` with random weights, saved as openai releases them, in the
three vocabularies (English-only 51864, multilingual 51865, large-v3's 51866 with 128 mels). The
processor and generation config are derived offline from the vocabulary (:mod:`wmap.models.whisper_processor`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch

from tests.models.test_whisper import SMALL
from wmap.conversion import convert
from wmap.way_back import export

pytestmark = pytest.mark.parity

DIMS = {**SMALL, "n_text_ctx": 64}
"""test_whisper's small dims, with room for 32 generated tokens (openai decodes n_text_ctx // 2)."""
VOCABULARIES = {"english": (51864, 80), "multilingual": (51865, 80), "large-v3": (51866, 128)}


def _checkpoint(path: Path, vocabulary: str, *, first_guess_is_end: bool = False) -> tuple[Any, Path]:
    """openai's model with random weights; ``first_guess_is_end``: its decoder output is constant and
    points at end-of-text first (then at a token the suppression lists must skip), as a model does on
    silence."""
    from whisper.tokenizer import get_tokenizer

    from tests.originals import save_whisper_checkpoint, whisper_original

    size, mels = VOCABULARIES[vocabulary]
    torch.manual_seed(0)
    model = whisper_original({**DIMS, "n_vocab": size, "n_mels": mels})
    if first_guess_is_end:
        tokenizer = get_tokenizer(size >= 51865, num_languages=size - 51765 - int(size >= 51865))
        with torch.no_grad():
            direction = torch.randn(DIMS["n_text_state"])
            model.decoder.ln.weight.zero_()  # every position's output is the bias: the same logits each step
            model.decoder.ln.bias.copy_(direction)
            embedding = model.decoder.token_embedding.weight
            embedding.mul_(0.01)
            embedding[tokenizer.eot] = 3 * direction / direction.norm() ** 2 * 10  # end of text first
            embedding[tokenizer.non_speech_tokens[3]] = 2 * direction / direction.norm() ** 2 * 10  # suppressed
            embedding[tokenizer.encode(" hello")[0]] = 1 * direction / direction.norm() ** 2 * 10  # then text
    save_whisper_checkpoint(path, model, dtype=torch.float32)
    return model.eval(), path


def _audio() -> Any:
    generator = torch.Generator().manual_seed(3)
    return (0.1 * torch.randn(16_000, generator=generator)).numpy()


def _openai_tokens(model: Any, mel: torch.Tensor, **options: Any) -> list[int]:
    """openai's greedy decoding (``whisper.decode``, temperature 0), as ``transcribe`` runs it: an
    English-only model is told its language (it has no language detection)."""
    import whisper

    if not model.is_multilingual:
        options = {**options, "language": "en"}
    result = whisper.decode(model, mel[0], whisper.DecodingOptions(temperature=0.0, fp16=False, **options))
    return list(result.tokens)


@pytest.fixture(scope="module", params=list(VOCABULARIES))
def converted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any, Path]:
    where = tmp_path_factory.mktemp(request.param)
    model, path = _checkpoint(where / "model.pt", request.param)
    return request.param, model, convert("whisper", path, where / "hf").unwrap()


def test_the_pipeline_with_no_argument_gives_openais_tokens(converted: tuple[str, Any, Path]) -> None:
    """transformers' ASR pipeline decodes with 5 beams unless told otherwise (its default, "as openai's
    implementation"); openai's decoding with ``beam_size=5`` gives the same text (openai stops at
    ``n_text_ctx // 2`` tokens, the pipeline later: the pipeline's text starts with openai's)."""
    from transformers import AutoProcessor, pipeline

    _, model, out = converted
    processor = AutoProcessor.from_pretrained(out)
    mel = processor(_audio(), sampling_rate=16_000, return_tensors="pt").input_features
    theirs = processor.tokenizer.decode(_openai_tokens(model, mel, without_timestamps=True, beam_size=5))
    recognizer = pipeline("automatic-speech-recognition", model=str(out))
    text: str = recognizer({"raw": _audio(), "sampling_rate": 16_000})["text"]  # type: ignore[call-overload]
    assert text.startswith(theirs) and len(theirs.split()) > 3, (text, theirs)  # not vacuous: the model writes


def test_word_timestamps_align_with_the_heads_openai_uses_for_a_file(
    converted: tuple[str, Any, Path], tmp_path: Path
) -> None:
    """``return_timestamps="word"`` needs the generation config's ``alignment_heads`` (without them the
    pipeline raises). They are the heads openai-whisper aligns with for a model it loads from a file,
    ``whisper.load_model(path)``: every head of the decoder's second half. The pipeline then gives the
    transcript's words their times, in order, within the audio."""
    import json
    import shutil

    import whisper
    from transformers import GenerationConfig, pipeline

    _, _, out = converted
    openai = whisper.load_model(str(out.parent / "model.pt"), device="cpu")
    heads = sorted(map(list, openai.alignment_heads.to_dense().nonzero().tolist()))
    assert GenerationConfig.from_pretrained(out).to_dict()["alignment_heads"] == heads and heads
    recognizer = pipeline("automatic-speech-recognition", model=str(out))
    result = cast(dict[str, Any], recognizer({"raw": _audio(), "sampling_rate": 16_000}, return_timestamps="word"))
    words: list[dict[str, Any]] = result["chunks"]
    times = [time for word in words for time in word["timestamp"] if time is not None]
    assert "".join(word["text"] for word in words) == result["text"] and words
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= 30
    without = Path(shutil.copytree(out, tmp_path / "without"))  # the control: what the converter used to write
    settings = json.loads((without / "generation_config.json").read_text())
    del settings["alignment_heads"]
    (without / "generation_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="alignment_heads"):
        pipeline("automatic-speech-recognition", model=str(without))(
            {"raw": _audio(), "sampling_rate": 16_000}, return_timestamps="word"
        )


def test_generate_gives_openais_greedy_tokens(converted: tuple[str, Any, Path]) -> None:
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    vocabulary, model, out = converted
    processor = AutoProcessor.from_pretrained(out)
    ours = WhisperForConditionalGeneration.from_pretrained(out).eval()
    mel = processor(_audio(), sampling_rate=16_000, return_tensors="pt").input_features
    theirs = _openai_tokens(model, mel, without_timestamps=True)
    with torch.no_grad():  # no language: detected, as openai detects it, then transcribed
        generated = ours.generate(mel, return_dict_in_generate=True).sequences[0].tolist()
    assert generated[_prompt_length(vocabulary, timestamps=False) :][: len(theirs)] == theirs and len(theirs) > 3


def _prompt_length(vocabulary: str, *, timestamps: bool) -> int:
    """start of transcript, (language, task,) no-timestamps unless timestamps are asked for."""
    return (1 if vocabulary == "english" else 3) + (0 if timestamps else 1)


def test_generate_with_language_task_and_timestamps_gives_openais_greedy_tokens(
    converted: tuple[str, Any, Path],
) -> None:
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    vocabulary, model, out = converted
    processor = AutoProcessor.from_pretrained(out)
    ours = WhisperForConditionalGeneration.from_pretrained(out).eval()
    mel = processor(_audio(), sampling_rate=16_000, return_tensors="pt").input_features
    options: dict[str, Any] = {} if vocabulary == "english" else {"language": "fr", "task": "translate"}
    theirs = _openai_tokens(model, mel, without_timestamps=False, **options)
    with torch.no_grad():
        generated = ours.generate(mel, return_timestamps=True, return_dict_in_generate=True, **options)
    # transformers' generate cuts at the last complete segment (a timestamp), as openai's transcribe does
    # with decode's tokens; openai's decode alone goes on to n_text_ctx // 2 tokens
    returned = generated["sequences"][0].tolist()  # with timestamps: the generated tokens, no prompt
    begin = processor.tokenizer.convert_tokens_to_ids("<|0.00|>")
    assert returned == theirs[: len(returned)] and returned[-1] >= begin
    assert returned[0] >= begin and any(t < begin for t in returned)  # a timestamp first, then text


@pytest.mark.parametrize("vocabulary", ["multilingual", "large-v3"])
def test_a_model_that_first_guesses_end_of_text_still_transcribes(vocabulary: str, tmp_path: Path) -> None:
    """openai suppresses end-of-text (and a blank) at the first step; so does the derived generation
    config. The negative control: transformers' default generation config (English-only ids) lets the
    multilingual end-of-text through, and the transcript is empty."""
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    model, path = _checkpoint(tmp_path / "model.pt", vocabulary, first_guess_is_end=True)
    out = convert("whisper", path, tmp_path / "hf").unwrap()
    processor = AutoProcessor.from_pretrained(out)
    mel = processor(_audio(), sampling_rate=16_000, return_tensors="pt").input_features
    theirs = _openai_tokens(model, mel, without_timestamps=True, language="en")
    ours = WhisperForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        derived = ours.generate(mel, language="en", task="transcribe")
    text = processor.tokenizer.decode(derived[0], skip_special_tokens=True)
    assert theirs and text.strip() == processor.tokenizer.decode(theirs).strip() != ""
    with torch.no_grad():  # transformers' English-only default: 50256 is not this vocabulary's end of text
        plain = ours.generate(
            mel, language="en", task="transcribe", begin_suppress_tokens=[220, 50256], suppress_tokens=[]
        )
    assert processor.tokenizer.decode(plain[0], skip_special_tokens=True).strip() == ""  # the empty transcript


def test_ctranslate2_gives_openais_greedy_tokens(converted: tuple[str, Any, Path], tmp_path: Path) -> None:
    import subprocess
    import sys

    import ctranslate2
    from transformers import AutoProcessor

    vocabulary, model, out = converted
    converter = Path(sys.executable).parent / "ct2-transformers-converter"
    done = subprocess.run(
        [str(converter), "--model", str(out), "--output_dir", str(tmp_path / "ct2")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    processor = AutoProcessor.from_pretrained(out)
    mel = processor(_audio(), sampling_rate=16_000, return_tensors="pt").input_features
    theirs = _openai_tokens(
        model, mel, without_timestamps=True, **({} if vocabulary == "english" else {"language": "en"})
    )
    prompt = (
        ["<|startoftranscript|>"]
        + ([] if vocabulary == "english" else ["<|en|>", "<|transcribe|>"])
        + ["<|notimestamps|>"]
    )
    whisper = ctranslate2.models.Whisper(str(tmp_path / "ct2"), device="cpu")
    features = ctranslate2.StorageView.from_array(mel.numpy())
    result = whisper.generate(features, [prompt], beam_size=1, max_length=DIMS["n_text_ctx"])
    returned = result[0].sequences_ids[0]
    assert returned[: len(theirs)] == theirs and len(theirs) > 3


@pytest.mark.parametrize("variant", ["default", "sharded", "float16", "pytorch_model.bin"])
def test_a_hub_style_directory_goes_back_and_comes_again_unchanged(variant: str, tmp_path: Path) -> None:
    """A directory as transformers saves a fine-tune (the model, its processor and generation config
    re-saved by ``save_pretrained``): export gives openai's loader the model's logits; convert of the
    export gives back the same tensors, processor files and generation settings, and stores the tied
    ``proj_out`` once."""
    import json

    import whisper
    from safetensors.torch import load_file
    from transformers import AutoProcessor, WhisperForConditionalGeneration

    _, path = _checkpoint(tmp_path / "model.pt", "multilingual")
    first = convert("whisper", path, tmp_path / "first").unwrap()
    model = WhisperForConditionalGeneration.from_pretrained(first).eval()
    with torch.no_grad():  # a fine-tune
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    hub = tmp_path / "hub"
    options: dict[str, Any] = {"sharded": {"max_shard_size": "1MB"}}.get(variant, {})
    (model.half() if variant == "float16" else model).save_pretrained(hub, **options)
    AutoProcessor.from_pretrained(first).save_pretrained(hub)
    if variant == "pytorch_model.bin":
        state = load_file(hub / "model.safetensors")
        (hub / "model.safetensors").unlink()
        torch.save(state, hub / "pytorch_model.bin")
    back = export("whisper", hub, tmp_path / "back.pt").unwrap()
    theirs = whisper.load_model(str(back), device="cpu").float()
    mel = torch.randn(1, DIMS["n_mels"], 2 * DIMS["n_audio_ctx"])
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 440, 1203]])
    with torch.no_grad():
        expected = model.float()(input_features=mel, decoder_input_ids=tokens).logits
        torch.testing.assert_close(theirs.decoder(tokens, theirs.encoder(mel)), expected, rtol=0, atol=1e-5)

    again = convert("whisper", back, tmp_path / "again").unwrap()
    ours = WhisperForConditionalGeneration.from_pretrained(again).state_dict()
    saved = model.state_dict()
    assert ours.keys() == saved.keys() and all(torch.equal(ours[k], saved[k]) for k in saved)
    with_version = ("transformers_version", "is_local", "local_files_only")  # what transformers adds on re-saving
    for name in ("generation_config.json", "processor_config.json", "tokenizer_config.json", "tokenizer.json"):
        mine, hubs = (json.loads((d / name).read_text()) for d in (again, hub))
        assert {k: v for k, v in mine.items() if k not in with_version} == {
            k: v for k, v in hubs.items() if k not in with_version
        }, name
    assert "proj_out.weight" not in load_file(again / "model.safetensors")


def test_export_then_convert_keeps_the_processor_and_generation_settings(tmp_path: Path) -> None:
    """A directory wmap wrote (processor, generation config, proj_out stored once) goes back to openai
    and converts again to the same files."""
    import json

    _, path = _checkpoint(tmp_path / "model.pt", "multilingual")
    hf = convert("whisper", path, tmp_path / "hf").unwrap()
    back = export("whisper", hf, tmp_path / "back.pt").unwrap()
    again = convert("whisper", back, tmp_path / "again").unwrap()
    for name in ("generation_config.json", "processor_config.json", "tokenizer_config.json", "tokenizer.json"):
        assert json.loads((hf / name).read_text()) == json.loads((again / name).read_text()), name
    from safetensors import safe_open

    with safe_open(hf / "model.safetensors", framework="pt") as stored:
        assert "proj_out.weight" not in stored.keys()  # noqa: SIM118 - the tied copy is stored once, as transformers does


def test_without_openai_whisper_the_tokenizer_file_is_asked_for_by_name(tmp_path: Path) -> None:
    """openai-whisper made unimportable: the conversion refuses naming ``--tokenizer`` (and
    ``--no-processor``), and converts with either; a file of another vocabulary is refused."""
    import json
    import subprocess
    import sys

    from wmap.models.whisper_processor import installed_bpe_file

    _, path = _checkpoint(tmp_path / "model.pt", "multilingual")
    assets = installed_bpe_file("multilingual.tiktoken")
    assert assets is not None

    def run(*extra: str, out: Path = tmp_path / "hf") -> subprocess.CompletedProcess[str]:
        code = (
            "import sys; sys.modules['whisper'] = None; from wmap.cli import main; "
            f"sys.exit(main(['convert', 'whisper', {str(path)!r}, {str(out)!r}, *{list(extra)!r}]))"
        )
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)

    refused = run()
    assert refused.returncode == 2 and "--tokenizer" in refused.stderr and "--no-processor" in refused.stderr
    weights_only = tmp_path / "weights-only"  # weights, config, generation config
    assert run("--no-processor", out=weights_only).returncode == 0
    assert not (weights_only / "tokenizer.json").exists() and not (weights_only / "preprocessor_config.json").exists()
    generation = json.loads((weights_only / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 50257 and generation["begin_suppress_tokens"] == [220, 50257]
    assert generation["lang_to_id"]["<|en|>"] == 50259 and 50362 in generation["suppress_tokens"]
    assert run("--tokenizer", str(assets.parent), out=tmp_path / "given").returncode == 0  # the directory holding it
    other = run(
        "--tokenizer", str(assets.parent / "gpt2.tiktoken"), out=tmp_path / "other"
    )  # English-only BPE for a multilingual model
    assert other.returncode == 2 and "50257 ranks" in other.stderr
