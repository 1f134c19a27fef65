"""Real fairseq trainer checkpoints (``task_state``, optimizer state, ...) convert into a model that transcribes.

The checkpoint is written by fairseq's own ``Trainer`` after a real training step
(:func:`tests.originals.data2vec_ctc_trainer_checkpoint`); fairseq's own
``load_model_ensemble_and_task`` gives the reference model and task.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from wmap.conversion import convert, preview

ATOL = 1e-5
pytestmark = pytest.mark.parity


BASE_STYLE = {"extractor_mode": "default", "layer_norm_first": False, "conv_bias": False}
LARGE_STYLE = {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True}
"""wav2vec 2.0 base (group-norm extractor, post-LN) and large / XLS-R (layer norms, conv bias, pre-LN)."""

FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "data2vec_audio_ctc": ("data2vec_audio", {}),
    "wav2vec2_ctc-base": ("wav2vec2", BASE_STYLE),
    "wav2vec2_ctc-large": ("wav2vec2", LARGE_STYLE),
    "hubert_ctc-base": ("hubert", BASE_STYLE),
    "hubert_ctc-large": ("hubert", LARGE_STYLE),
}


@pytest.fixture(scope="module")
def data2vec_trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("fairseq")
    ctc_trainer_checkpoint(data / "checkpoint_best.pt", data)
    return data / "checkpoint_best.pt"


@pytest.fixture(scope="module", params=list(FAMILIES))
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    family, encoder = FAMILIES[request.param]
    data = tmp_path_factory.mktemp("fairseq")
    path = data / "checkpoint_best.pt"
    ctc_trainer_checkpoint(path, data, family=family, **encoder)
    return request.param.split("-")[0], path


def _fairseq_reference(path: Path) -> tuple[Any, Any]:
    """fairseq's own loader. Under torch >= 2.6 it fails on fairseq's own trainer checkpoints
    (``torch.load`` refuses the pickled ``Dictionary``), so the reference side, which trusts the
    file it just wrote, allows fairseq's real class for this one call."""
    from fairseq import checkpoint_utils
    from fairseq.data.dictionary import Dictionary

    with torch.serialization.safe_globals([Dictionary]):
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], strict=True)
    return models[0].eval(), task


def _utterances() -> list[torch.Tensor]:
    """Raw audio as a user has it: not zero-mean, not unit-variance, of different lengths; tones that
    change every 40 ms (so frames differ) over a little noise."""
    generator = torch.Generator().manual_seed(7)
    out = []
    for n in (4000, 3100, 3600, 2500):
        t = torch.arange(n) / 16_000
        segments = torch.div(torch.arange(n), 640, rounding_mode="floor")
        pitch = 100 + 3000 * torch.rand(int(segments.max()) + 1, generator=generator)
        loud = 5 + 15 * torch.rand(int(segments.max()) + 1, generator=generator)
        tone = loud[segments] * torch.sin(2 * torch.pi * pitch[segments] * t)
        out.append(0.3 + tone + 0.5 * torch.randn(n, generator=generator))
    return out


def _fairseq_transcripts(model: Any, task: Any, audio: list[torch.Tensor]) -> tuple[list[str], list[torch.Tensor]]:
    """fairseq's greedy CTC decoding: the task's normalisation, argmax, repeats collapsed, the blank
    dropped, ``Dictionary.string``, letter post-processing."""
    import torch.nn.functional as F
    from fairseq.data.data_utils import post_process

    dictionary = task.target_dictionary
    blank = dictionary.index(task.blank_symbol)
    texts, logits = [], []
    with torch.no_grad():
        for wav in audio:
            source = F.layer_norm(wav, wav.shape) if task.cfg.normalize else wav
            out = model(source=source[None], padding_mask=None)
            frame_logits = model.get_logits(out)[:, 0]  # T x V
            ids = frame_logits.argmax(-1).unique_consecutive()
            texts.append(post_process(dictionary.string(ids[ids != blank]), "letter"))
            logits.append(frame_logits)
    return texts, logits


def test_a_trainer_checkpoint_converts_and_transcribes_as_fairseq_does(
    trained: tuple[str, Path], tmp_path: Path
) -> None:
    from transformers import AutoModelForCTC, AutoProcessor

    name, trained_path = trained
    meta = torch.load(trained_path, weights_only=False, map_location="cpu")  # our own file, read as fairseq would
    assert {"task_state", "last_optimizer_state", "optimizer_history", "extra_state"} <= meta.keys()
    assert "autoregressive" not in meta["cfg"]["model"]  # as real files are (fairseq#4916)
    plan = preview(name, trained_path).unwrap()
    assert plan.plan.is_clean(), plan.plan.problems(limit=5)

    out = convert(name, trained_path, tmp_path / "hf").unwrap()  # no --config, no --dict
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForCTC.from_pretrained(out).eval()
    assert (model.config.hidden_dropout, model.config.attention_dropout, model.config.layerdrop) == (0.05, 0.02, 0.07)
    assert (model.config.activation_dropout, model.config.feat_proj_dropout, model.config.final_dropout) == (
        0.03,
        0.04,
        0.06,
    )

    reference, task = _fairseq_reference(trained_path)
    audio = _utterances()
    expected, fairseq_logits = _fairseq_transcripts(reference, task, audio)
    ours, logits = _transcribe(processor, model, audio)
    assert ours == expected
    assert len(set(expected)) == len(expected) and all(len(text) > 5 for text in expected)  # not vacuous
    for mine, theirs in zip(logits, fairseq_logits, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=ATOL)


def _transcribe(processor: Any, model: Any, audio: list[torch.Tensor]) -> tuple[list[str], list[torch.Tensor]]:
    """As a user transcribes a file: processor, model, greedy ``batch_decode``. One utterance at a
    time, as fairseq's reference runs (batched, transformers' padded frames are not blanked)."""
    texts, logits = [], []
    with torch.no_grad():
        for wav in audio:
            inputs = processor(wav.numpy(), sampling_rate=16_000, return_tensors="pt")
            out = model(**inputs).logits
            texts += processor.batch_decode(out.argmax(-1))
            logits.append(out[0])
    return texts, logits


def test_the_transcript_comparison_can_fail(data2vec_trained: Path, tmp_path: Path) -> None:
    """Negative control: the raw audio, unnormalised, gives other transcripts than fairseq's."""
    from transformers import AutoModelForCTC, AutoProcessor

    out = convert("data2vec_audio_ctc", data2vec_trained, tmp_path / "hf").unwrap()
    processor = AutoProcessor.from_pretrained(out)
    model = AutoModelForCTC.from_pretrained(out).eval()
    reference, task = _fairseq_reference(data2vec_trained)
    audio = _utterances()
    expected, _ = _fairseq_transcripts(reference, task, audio)
    processor.feature_extractor.do_normalize = False
    ours, _ = _transcribe(processor, model, audio)
    assert all(mine != theirs for mine, theirs in zip(ours, expected, strict=True))


def test_the_output_holds_no_optimizer_state(data2vec_trained: Path, tmp_path: Path) -> None:
    out = convert("data2vec_audio_ctc", data2vec_trained, tmp_path / "hf").unwrap()
    meta = torch.load(data2vec_trained, weights_only=False, map_location="cpu")
    model_bytes = sum(t.numel() * t.element_size() for t in meta["model"].values())
    optimizer_bytes = sum(
        t.numel() * t.element_size()
        for s in meta["last_optimizer_state"]["state"].values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )
    assert optimizer_bytes > model_bytes / 4  # Adam's two moments of the parameters that were data2vec_trained
    with safe_open(out / "model.safetensors", framework="pt") as handle:
        keys = list(handle.keys())
    assert len(keys) == len(meta["model"]) and not any("exp_avg" in k or k.startswith("state") for k in keys)
    assert os.path.getsize(out / "model.safetensors") < model_bytes + 2**16


class Payload:
    """Unpickling this would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def test_a_code_running_object_in_task_state_is_refused(data2vec_trained: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    meta = torch.load(data2vec_trained, weights_only=False, map_location="cpu")
    meta["task_state"]["evil"] = Payload(marker)
    evil = tmp_path / "evil.pt"
    torch.save(meta, evil)
    out = tmp_path / "hf"
    result = subprocess.run(
        [sys.executable, "-m", "wmap", "convert", "data2vec_audio_ctc", str(evil), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "posix.system" in result.stderr or "os.system" in result.stderr
    assert "weights_only" not in result.stderr
    assert not marker.exists() and not out.exists()
    assert not any(p.name.startswith(".hf.wmap-") for p in tmp_path.iterdir())


def test_without_a_dictionary_convert_asks_for_dict(data2vec_trained: Path, tmp_path: Path) -> None:
    from tests.originals import write_letter_dictionary

    meta = torch.load(data2vec_trained, weights_only=False, map_location="cpu")
    meta["task_state"] = {}
    bare = tmp_path / "bare.pt"
    torch.save(meta, bare)
    error = convert("data2vec_audio_ctc", bare, tmp_path / "hf").failure()
    assert "--dict" in error.message and not (tmp_path / "hf").exists()
    wrong = tmp_path / "dict.small.txt"
    wrong.write_text("A 1\nB 1\n")
    error = convert("data2vec_audio_ctc", bare, tmp_path / "hf", processor_file=wrong).failure()
    assert "32 symbols" in error.message and "6 symbols" in error.message
    out = convert("data2vec_audio_ctc", bare, tmp_path / "hf", processor_file=write_letter_dictionary(tmp_path))
    assert (out.unwrap() / "vocab.json").exists()


@pytest.mark.parametrize("style", ["data2vec_audio_ctc", "wav2vec2_ctc-base", "wav2vec2_ctc-large"])
def test_the_way_back_loads_in_fairseq_strictly_and_gives_back_every_tensor(
    style: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """original -> convert -> export: every tensor back as it was, a file fairseq's own
    ``load_model_ensemble_and_task(strict=True)`` loads as it is, the same logits as the original; the
    dictionary travels in ``task_state`` as fairseq's trainer keeps it, so the file alone, moved to
    another folder (the export folder and its ``dict.ltr.txt`` gone), still loads in fairseq and
    converts back with wmap with no ``--dict``: the same safetensors and vocabulary."""
    import shutil

    from safetensors.torch import load_file

    from tests.originals import ctc_trainer_checkpoint
    from wmap.way_back import export, preview_reverse

    torch.manual_seed(0)
    family, encoder = FAMILIES[style]
    name = style.split("-")[0]
    data = tmp_path_factory.mktemp("fairseq")
    ctc_trainer_checkpoint(data / "checkpoint_best.pt", data, family=family, **encoder)
    hf = convert(name, data / "checkpoint_best.pt", tmp_path / "hf").unwrap()
    reverse = preview_reverse(name, hf).unwrap().plan
    assert reverse.is_clean(), reverse.problems(limit=5)

    out = tmp_path / "exported" / "checkpoint.pt"
    out.parent.mkdir()
    export(name, hf, out).unwrap()
    symbols = [line.split()[0] for line in (out.parent / "dict.ltr.txt").read_text().splitlines()]
    assert symbols == [line.split()[0] for line in (data / "dict.ltr.txt").read_text().splitlines()]
    moved = tmp_path / "elsewhere" / "checkpoint.pt"
    moved.parent.mkdir()
    shutil.move(out, moved)
    shutil.rmtree(out.parent)
    saved = torch.load(data / "checkpoint_best.pt", weights_only=False)
    original = saved["model"]
    exported = torch.load(moved, weights_only=False)  # the test trusts the file it just wrote
    _encoder_settings_agree(saved["cfg"]["model"], exported["cfg"]["model"])
    assert exported["model"].keys() == original.keys()
    assert all(
        exported["model"][k].dtype == v.dtype and torch.equal(exported["model"][k], v) for k, v in original.items()
    )
    theirs_dictionary = vars(saved["task_state"]["target_dictionary"])
    ours = vars(exported["task_state"]["target_dictionary"])
    assert ours.keys() == theirs_dictionary.keys()  # every field fairseq's Dictionary has; counts are not kept
    assert {k: v for k, v in ours.items() if k != "count"} == {
        k: v for k, v in theirs_dictionary.items() if k != "count"
    }

    theirs, task = _fairseq_reference(data / "checkpoint_best.pt")
    models, back_task = _fairseq_reference(moved)
    assert back_task.target_dictionary.symbols == task.target_dictionary.symbols
    audio = _utterances()
    expected, expected_logits = _fairseq_transcripts(theirs, task, audio)
    returned, returned_logits = _fairseq_transcripts(models, back_task, audio)
    assert returned == expected
    for mine, original_logits in zip(returned_logits, expected_logits, strict=True):
        torch.testing.assert_close(mine, original_logits, rtol=0, atol=1e-6)

    again = convert(name, moved, tmp_path / "again").unwrap()  # no --dict: the file carries it
    first, second = load_file(hf / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert (again / "vocab.json").read_text() == (hf / "vocab.json").read_text()


def test_an_older_file_with_fused_attention_converts_without_fairseq(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Older fairseq files keep q/k/v fused in ``in_proj_weight``/``in_proj_bias``; fairseq's loader
    splits them. wmap's upgrade chain does the same: the converted tensors equal those of the current
    file, and the model transcribes as fairseq's loader of the older file does."""
    from safetensors.torch import load_file

    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("fairseq")
    ctc_trainer_checkpoint(data / "current.pt", data, family="wav2vec2", **FAMILIES["wav2vec2_ctc-base"][1])
    saved = torch.load(data / "current.pt", weights_only=False)
    state = saved["model"]
    fused = 0
    for key in [k for k in state if k.endswith("self_attn.q_proj.weight")]:
        head = key.removesuffix("q_proj.weight")
        for leaf in ("weight", "bias"):
            parts = [state.pop(f"{head}{p}.{leaf}") for p in ("q_proj", "k_proj", "v_proj")]
            state[f"{head}in_proj_{leaf}"] = torch.cat(parts)
        fused += 1
    assert fused == 2
    torch.save(saved, data / "older.pt")

    plan = preview("wav2vec2_ctc", data / "older.pt").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    older = convert("wav2vec2_ctc", data / "older.pt", tmp_path / "older").unwrap()
    current = convert("wav2vec2_ctc", data / "current.pt", tmp_path / "current").unwrap()
    first, second = load_file(older / "model.safetensors"), load_file(current / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    reference, task = _fairseq_reference(data / "older.pt")  # fairseq upgrades the file as it loads it
    from transformers import AutoModelForCTC, AutoProcessor

    expected, _ = _fairseq_transcripts(reference, task, _utterances())
    ours, _ = _transcribe(
        AutoProcessor.from_pretrained(older), AutoModelForCTC.from_pretrained(older).eval(), _utterances()
    )
    assert ours == expected


def test_hubert_ctc_goes_back_with_no_label_sets_and_loads_strictly(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """HubertCtc keeps HuBERT's label embeddings, which CTC never reads and HubertForCTC lacks. The way
    back writes the encoder's pre-training task with no label sets, for which fairseq builds them
    empty: the plan names them as made, every other tensor is written as it was, and fairseq (with
    fairseq#4917's fix, reference side) loads the file strictly and transcribes as the original does.
    (It used to leave them out, refused until accepted, for a file fairseq loads only non-strictly.)"""
    from fairseq import checkpoint_utils

    from tests.originals import ctc_trainer_checkpoint
    from wmap.way_back import export, preview_reverse

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("fairseq")
    ctc_trainer_checkpoint(data / "checkpoint_best.pt", data, family="hubert", **FAMILIES["hubert_ctc-base"][1])
    hf = convert("hubert_ctc", data / "checkpoint_best.pt", tmp_path / "hf").unwrap()
    labels = "w2v_encoder.w2v_model.label_embs_concat"
    plan = preview_reverse("hubert_ctc", hf).unwrap().plan
    assert plan.is_clean() and not plan.unrecoverable
    assert [m.target for m in plan.made] == [labels] and "no label sets" in plan.made[0].reason
    out = tmp_path / "exported" / "checkpoint.pt"
    out.parent.mkdir()
    export("hubert_ctc", hf, out).unwrap()

    saved = torch.load(data / "checkpoint_best.pt", weights_only=False)
    original = saved["model"]
    written = torch.load(out, weights_only=False)  # the test trusts the file it just wrote
    _encoder_settings_agree(saved["cfg"]["model"], written["cfg"]["model"])
    assert written["cfg"]["model"]["w2v_args"]["task"]["labels"] == []
    exported = written["model"]
    assert exported.keys() == original.keys() and exported[labels].numel() == 0 < original[labels].numel()
    assert all(exported[k].dtype == v.dtype and torch.equal(v, original[k]) for k, v in exported.items() if k != labels)

    theirs, task = _fairseq_reference(data / "checkpoint_best.pt")
    from fairseq.data.dictionary import Dictionary

    with torch.serialization.safe_globals([Dictionary]):  # as for fairseq's own trainer files
        models, _, back_task = checkpoint_utils.load_model_ensemble_and_task([str(out)], strict=True)
    mine = models[0].eval()
    audio = _utterances()
    expected, expected_logits = _fairseq_transcripts(theirs, task, audio)
    returned, returned_logits = _fairseq_transcripts(mine, back_task, audio)
    assert returned == expected
    for ours, original_logits in zip(returned_logits, expected_logits, strict=True):
        torch.testing.assert_close(ours, original_logits, rtol=0, atol=1e-6)


def _encoder_settings_agree(original: Any, exported: Any) -> None:
    """Every encoder field the forward table translates comes back with the original's value (the
    trained settings differ from every default, so a field lost on either way shows), and so do the
    conv spec and the fine-tuning wrapper's own fields."""
    from wmap.fairseq.export import TRANSLATED_BACK

    theirs, ours = original["w2v_args"]["model"], exported["w2v_args"]["model"]
    compared = [f for f in TRANSLATED_BACK.values() if f in theirs]
    assert len(compared) >= 16
    assert {f: ours.get(f) for f in compared} == {f: theirs[f] for f in compared}
    assert eval(ours["conv_feature_layers"]) == eval(theirs["conv_feature_layers"])  # our own test file
    for field in ("final_dropout", "normalize"):
        assert exported[field] == original[field], field


EQUAL_WIDTHS: dict[str, Any] = {"conv_feature_layers": "[(32, 10, 5)] + [(32, 3, 2)] * 2"}
"""The conv extractor as wide as the encoder (32): fairseq then builds no ``post_extract_proj``."""


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])  # data2vec-audio always has post_extract_proj
def test_equal_widths_convert_with_an_identity_projection_and_go_back(
    family: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """transformers#28174: fairseq omits ``post_extract_proj`` where the widths are equal and
    transformers always projects. The plan makes the projection the identity (named, with the
    reason); transcripts and logits equal fairseq's; the negative control, a random projection as the
    official script leaves, is caught. Back, the identity is dropped and fairseq loads the file
    strictly; a trained projection is refused, naming it."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCTC, AutoProcessor

    from tests.originals import ctc_trainer_checkpoint
    from wmap.errors import TensorMismatch
    from wmap.verification import verify
    from wmap.way_back import export

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("fairseq")
    path = data / "checkpoint_best.pt"
    ctc_trainer_checkpoint(path, data, family=family, **EQUAL_WIDTHS)
    assert not any("post_extract_proj" in k for k in torch.load(path, weights_only=False)["model"])
    name = f"{family}_ctc"
    plan = preview(name, path).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert sorted(m.target.rsplit(".", 1)[1] for m in plan.made) == ["bias", "weight"]
    out = convert(name, path, tmp_path / "hf").unwrap()
    assert verify(name, path, out).unwrap().ok

    reference, task = _fairseq_reference(path)
    audio = _utterances()
    expected, fairseq_logits = _fairseq_transcripts(reference, task, audio)
    processor, model = AutoProcessor.from_pretrained(out), AutoModelForCTC.from_pretrained(out).eval()
    ours, logits = _transcribe(processor, model, audio)
    assert ours == expected
    for mine, theirs in zip(logits, fairseq_logits, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=ATOL)
    projection = model.base_model.feature_projection.projection
    with torch.no_grad():  # the negative control: what the official script leaves (a random Linear)
        projection.weight.copy_(torch.randn_like(projection.weight))
    _, garbage = _transcribe(processor, model, audio)
    assert not torch.allclose(garbage[0], fairseq_logits[0], atol=ATOL)

    if family == "hubert":
        return  # fairseq 0.12 builds no HubertCtc without fairseq#4917's fix; the drop is the same code
    (tmp_path / "back").mkdir()
    back = export(name, out, tmp_path / "back" / "checkpoint.pt").unwrap()
    theirs_back, back_task = _fairseq_reference(back)  # strict=True
    returned, _ = _fairseq_transcripts(theirs_back, back_task, audio)
    assert returned == expected
    weights = load_file(out / "model.safetensors")
    key = next(k for k in weights if k.endswith("feature_projection.projection.weight"))
    weights[key] = weights[key] + 0.01  # a fine-tune that trained the projection
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    refused = export(name, out, tmp_path / "back" / "other.pt").failure()
    assert isinstance(refused, TensorMismatch) and refused.key == key and not (tmp_path / "back" / "other.pt").exists()


def named_args(path: Path) -> tuple[str, ...]:
    return ("preview", "data2vec_audio_ctc", str(path), "--no-cache")


def test_a_preview_of_the_next_step_saved_in_place_is_shown_again_without_torch(tmp_path: Path) -> None:
    """fairseq's trainer saves ``checkpoint_last.pt`` again at every interval: the next step (other
    weights, optimizer state and loop state; the same model and configs) is the same preview, kept."""
    import shutil

    from tests.helpers import wmap_imports
    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    # no LayerDrop: every parameter has Adam's state from the first step on, as in a run past its first updates
    ctc_trainer_checkpoint(tmp_path / "step1.pt", tmp_path, then=tmp_path / "step2.pt", encoder_layerdrop=0.0)
    (tmp_path / "other").mkdir()
    ctc_trainer_checkpoint(tmp_path / "other.pt", tmp_path / "other", normalize=False)  # another config
    last, cache = tmp_path / "checkpoint_last.pt", tmp_path / "cache"
    runs = {}
    for saved in ("step1", "step2", "other"):
        shutil.copyfile(tmp_path / f"{saved}.pt", last)
        runs[saved] = wmap_imports("preview", "data2vec_audio_ctc", str(last), cache=cache)
    fresh = wmap_imports("preview", "data2vec_audio_ctc", str(last), "--no-cache", cache=cache)
    assert runs["step1"][0] == 0 and "torch" in runs["step1"][2]
    assert runs["step2"][:2] == runs["step1"][:2] and runs["step2"][2] == set()  # shown again: no torch
    assert "torch" in runs["other"][2] and fresh[:2] == runs["other"][:2]  # the control: planned again
    shutil.copyfile(tmp_path / "step2.pt", last)
    assert wmap_imports("preview", "data2vec_audio_ctc", str(last), "--no-cache", cache=cache)[:2] == runs["step1"][:2]
    named = wmap_imports("preview", "data2vec_audio_ctc", str(tmp_path / "step2.pt"), cache=cache)  # as saved
    assert named[2] == set() and named[:2] == wmap_imports(*named_args(tmp_path / "step2.pt"), cache=cache)[:2]


def test_what_the_family_never_reads_leaves_the_preview_and_its_key_as_they_are(
    trained: tuple[str, Path], tmp_path: Path
) -> None:
    """Training settings, the tasks' data and the trainer's state changed: the same preview, the same
    key; the control changes a field the CTC wrapper reads."""
    from tests.helpers import assert_unread_leaves_the_preview

    assert_unread_leaves_the_preview(*trained, tmp_path, ("cfg.model.blank_weight", 1.0))


def test_a_preview_of_another_run_of_a_sweep_is_shown_again_without_torch(tmp_path: Path) -> None:
    """Another fine-tune of the same pre-trained model on the same data at another learning rate (its
    training settings and weights differ): the preview of the first run is shown again for it,
    naming it, and is what planning it gives."""
    from tests.helpers import wmap_imports
    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    runs = [tmp_path / "lr_1e-4.pt", tmp_path / "lr_3e-5.pt"]
    for run, lr in zip(runs, (1e-4, 3e-5), strict=True):
        ctc_trainer_checkpoint(run, tmp_path, lr=lr, encoder_layerdrop=0.0)
    cache = tmp_path / "cache"
    first = wmap_imports("preview", "data2vec_audio_ctc", str(runs[0]), cache=cache)
    again = wmap_imports("preview", "data2vec_audio_ctc", str(runs[1]), cache=cache)
    planned = wmap_imports(*named_args(runs[1]), cache=cache)
    assert first[0] == 0 and "torch" in first[2] and "torch" in planned[2]
    assert again[2] == set() and again[:2] == planned[:2] and "lr_3e-5" in again[1]


@pytest.mark.parametrize("shown_as", [(), ("--json",)], ids=["text", "json"])
def test_a_preview_of_another_fine_tune_elsewhere_is_shown_again_with_its_own_paths(
    shown_as: tuple[str, ...], tmp_path: Path
) -> None:
    """Another fine-tune of the same model, in its own folder with its own data and from a pre-trained
    file found elsewhere, at another rate: the first one's preview is shown again for it, with the
    paths it names (among the ignored fields) read from it, as planning it shows them."""
    import shutil
    import tempfile

    from tests.helpers import wmap_imports
    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    short = Path(tempfile.mkdtemp(prefix="wmap-"))  # paths short enough to be shown whole
    try:
        runs = [short / "run-a", short / "run-b"]
        for folder, lr in zip(runs, (1e-4, 3e-5), strict=True):
            folder.mkdir()
            ctc_trainer_checkpoint(folder / "checkpoint_best.pt", folder, lr=lr, encoder_layerdrop=0.0)
        cache, files = tmp_path / "cache", [str(folder / "checkpoint_best.pt") for folder in runs]
        first = wmap_imports("preview", "data2vec_audio_ctc", files[0], *shown_as, cache=cache)
        again = wmap_imports("preview", "data2vec_audio_ctc", files[1], *shown_as, cache=cache)
        planned = wmap_imports("preview", "data2vec_audio_ctc", files[1], *shown_as, "--no-cache", cache=cache)
    finally:
        shutil.rmtree(short)
    assert first[0] == 0 and "torch" in first[2] and "torch" in planned[2]
    assert again[2] == set() and again[:2] == planned[:2]
    assert "run-a" in first[1] and "run-a" not in again[1]  # the control: the first run's paths are not shown
    assert again[1].count("run-b") >= 2  # its data, its pre-trained file (and as text, its own name)
