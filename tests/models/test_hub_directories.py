"""The way back from directories transformers wrote (a user's fine-tune, a Hub download), loaded by the
originals' own code: each exported file gives the transformers model's outputs.

The directory is written by ``save_pretrained`` of a transformers model with random weights and a
small realistic config (:func:`tests.helpers.hub_directory`): no wmap-written file is involved, so the
way back is checked on what users have, not on what wmap wrote itself. The same directory missing one
tensor, or with a config of another size, is refused (exit 1) with nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import hub_directory
from wmap.conversion import convert
from wmap.plan import Accept
from wmap.way_back import export, preview_reverse

pytestmark = pytest.mark.parity
ATOL = 1e-5


def _exported(family: str, hf: Path, out: Path) -> Path:
    """Export, accepting by name exactly what the plan calls unrecoverable (DistilHuBERT's distillation heads)."""
    plan = preview_reverse(family, hf).unwrap().plan
    accept = Accept(unrecoverable=frozenset(u.key for u in plan.unrecoverable))
    assert plan.is_clean(accept), plan.problems(limit=5)
    out.parent.mkdir(parents=True, exist_ok=True)
    return export(family, hf, out, accept=accept).unwrap()


def _fairseq(path: Path, *, strict: bool = True) -> Any:
    from fairseq import checkpoint_utils
    from fairseq.data.dictionary import Dictionary

    with torch.serialization.safe_globals([Dictionary]):  # as for fairseq's own trainer checkpoints
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], strict=strict)
    return models[0].eval(), task


@pytest.mark.parametrize("family", ["wav2vec2_ctc", "data2vec_audio_ctc", "hubert_ctc"])
def test_a_ctc_fine_tune_saved_by_transformers_goes_back_to_fairseq_with_its_logits(
    family: str, tmp_path: Path
) -> None:
    import fairseq.examples.data2vec.models.data2vec_audio  # noqa: F401 - registers data2vec_audio

    from tests.originals import fix_hubert_ctc_config

    model = hub_directory(family, tmp_path / "hf")
    out = _exported(family, tmp_path / "hf", tmp_path / "back" / "checkpoint.pt")
    if family == "hubert_ctc":
        fix_hubert_ctc_config()  # fairseq#4917, on the reference side only
    theirs, task = _fairseq(out)  # strict: HubertCtc's label embeddings are written empty (no label sets)
    symbols = task.target_dictionary.symbols
    assert symbols[4:] == [model.config.id2label.get(i, t) for i, t in enumerate(symbols)][4:]
    x = torch.randn(2, 4000)
    with torch.no_grad():
        expected = model(x).logits
        frames = theirs.get_logits(theirs(source=x, padding_mask=None)).transpose(0, 1)
    assert expected.std() > 0.01  # not vacuous
    torch.testing.assert_close(frames, expected, rtol=0, atol=ATOL)
    again = convert(family, out, tmp_path / "again").unwrap()
    first, second = load_file(tmp_path / "hf" / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_fine_tune_without_masking_goes_back_with_the_mask_embedding_fairseq_needs(tmp_path: Path) -> None:
    """A transformers model whose config masks nothing holds no ``masked_spec_embed``; fairseq's model
    always holds ``mask_emb``. The way back makes it (zeros, named in the plan with the reason), so
    fairseq's loader takes the file strictly, with the model's logits (it used to be exported without
    it: a file fairseq refuses, reported as success)."""
    model = hub_directory("wav2vec2_ctc", tmp_path / "hf", mask_time_prob=0.0)
    plan = preview_reverse("wav2vec2_ctc", tmp_path / "hf").unwrap().plan
    assert [m.target for m in plan.made] == ["w2v_encoder.w2v_model.mask_emb"] and "training" in plan.made[0].reason
    out = _exported("wav2vec2_ctc", tmp_path / "hf", tmp_path / "back" / "checkpoint.pt")
    theirs, _ = _fairseq(out)  # strict
    x = torch.randn(2, 4000)
    with torch.no_grad():
        frames = theirs.get_logits(theirs(source=x, padding_mask=None)).transpose(0, 1)
        torch.testing.assert_close(frames, model(x).logits, rtol=0, atol=ATOL)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_a_pretraining_model_saved_by_transformers_goes_back_to_fairseq_with_its_features(
    family: str, tmp_path: Path
) -> None:
    """fairseq's loader takes the file strictly (HuBERT's: no label sets, its heads empty)."""
    model = hub_directory(family, tmp_path / "hf")
    out = _exported(family, tmp_path / "hf", tmp_path / "back" / "checkpoint.pt")
    theirs, _ = _fairseq(out)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        expected = model.base_model(x).last_hidden_state
        features = theirs.extract_features(x, padding_mask=None, mask=False)
    returned = features["x"] if family == "wav2vec2" else features[0]  # HubertModel's: (features, padding mask)
    assert expected.std() > 0.01  # not vacuous
    torch.testing.assert_close(returned, expected, rtol=0, atol=ATOL)


def test_a_pre_trained_data2vec_audio_goes_back_to_fairseq_with_its_features(tmp_path: Path) -> None:
    """Data2VecAudioModel has neither fairseq's EMA teacher nor its regression head (``final_proj``).
    fairseq's model makes the teacher when a file is loaded and reads it from the file: the way back
    writes the encoder itself as the teacher (as pre-training starts) and makes the head as zeros (named
    in the plan), with nothing to accept. fairseq's ``load_model_ensemble_and_task`` takes the file
    strictly (it used to raise a bare ``AssertionError``), and so does its fine-tuning (``w2v_path``,
    which drops both), each with the transformers model's features."""
    import fairseq.examples.data2vec.models.data2vec_audio  # noqa: F401 - registers data2vec_audio
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2AsrConfig, Wav2VecEncoder

    from tests.test_cli import wmap

    model = hub_directory("data2vec_audio", tmp_path / "hf")
    plan = preview_reverse("data2vec_audio", tmp_path / "hf").unwrap().plan
    assert not plan.unrecoverable and sorted(m.target for m in plan.made) == ["final_proj.bias", "final_proj.weight"]
    out = tmp_path / "checkpoint.pt"
    told = wmap("export", "data2vec_audio", str(tmp_path / "hf"), str(out))
    assert told.returncode == 0 and "not written: data2vec's EMA teacher" in told.stderr, told.stderr
    theirs, _ = _fairseq(out)  # strict
    student = theirs.encoder.state_dict()
    teacher = theirs.ema.model.state_dict()
    assert teacher.keys() == student.keys() and all(torch.equal(teacher[k], student[k]) for k in student)
    assert not theirs.final_proj.weight.any() and not theirs.final_proj.bias.any()
    normalize = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["do_normalize"]
    encoder = Wav2VecEncoder(Wav2Vec2AsrConfig(w2v_path=str(out), normalize=normalize, data=str(out.parent)), None)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        expected = model(x).last_hidden_state
        loaded = theirs.extract_features(x, padding_mask=None, mask=False)["x"]
        fine_tuned = encoder.w2v_model.eval().extract_features(x, padding_mask=None, mask=False)["x"]
    assert expected.std() > 0.01  # not vacuous
    torch.testing.assert_close(loaded, expected, rtol=0, atol=ATOL)
    torch.testing.assert_close(fine_tuned, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("variant", ["default", "sharded", "float16"])
def test_whisper_saved_by_transformers_goes_back_to_openai_with_its_logits(variant: str, tmp_path: Path) -> None:
    import whisper

    variants: dict[str, dict[str, Any]] = {"sharded": {"max_shard_size": "1MB"}, "float16": {"dtype": torch.float16}}
    options = variants.get(variant, {})
    model = hub_directory("whisper", tmp_path / "hf", **options).float()
    assert not any("proj_out" in k for k in _keys(tmp_path / "hf"))  # save_pretrained leaves the tied copy out
    out = _exported("whisper", tmp_path / "hf", tmp_path / "back.pt")
    theirs = whisper.load_model(str(out), device="cpu").float()
    mel = torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions)
    tokens = torch.tensor([[50258, 50259, 50359, 50363, 440, 1203, 2121, 13]])
    with torch.no_grad():
        expected = model(input_features=mel, decoder_input_ids=tokens).logits
        returned = theirs.decoder(tokens, theirs.encoder(mel))
    torch.testing.assert_close(returned, expected, rtol=0, atol=ATOL)


def _keys(directory: Path) -> set[str]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        return set(json.loads(index.read_text())["weight_map"])
    return set(load_file(directory / "model.safetensors"))


def test_encodec_saved_by_transformers_goes_back_to_the_encodec_package(tmp_path: Path) -> None:
    from transformers import EncodecConfig, EncodecModel

    from tests.originals import encodec_original

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig()).eval()  # the 24 kHz model's config, as transformers defines it
    model.save_pretrained(tmp_path / "hf")
    out = _exported("encodec_24khz", tmp_path / "hf", tmp_path / "back.pt")
    theirs = encodec_original("encodec_24khz")
    theirs.load_state_dict(torch.load(out, weights_only=True), strict=True)
    theirs.set_target_bandwidth(max(model.config.target_bandwidths))
    x = torch.randn(1, 1, 24_000)
    with torch.no_grad():
        frames = theirs.encode(x)
        encoded = model.encode(x, bandwidth=max(model.config.target_bandwidths))
        assert torch.equal(encoded.audio_codes[0], frames[0][0])
        decoded = model.decode(encoded.audio_codes, encoded.audio_scales)[0]
        torch.testing.assert_close(
            decoded[..., : x.shape[-1]], theirs.decode(frames)[..., : x.shape[-1]], rtol=0, atol=ATOL
        )


def test_distilhubert_saved_by_transformers_goes_back_to_s3prl(tmp_path: Path) -> None:
    from s3prl.upstream.distiller.builder import PretrainedDistiller

    model = hub_directory("distilhubert", tmp_path / "hf")
    out = _exported("distilhubert", tmp_path / "hf", tmp_path / "back.ckpt")
    options = {"ckpt_file": str(out), "load_pretrain": "True", "no_grad": "True", "permute_input": "False"}
    theirs = PretrainedDistiller(options).model  # load_state_dict(strict=True) inside
    captured: list[torch.Tensor] = []
    hook = theirs.encoder.register_forward_hook(lambda module, args, output: captured.append(output[0]))
    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs(x, torch.ones_like(x, dtype=torch.bool), no_pred=True)
        expected = model(x).last_hidden_state
    hook.remove()
    torch.testing.assert_close(captured[0], expected, rtol=0, atol=ATOL)


def test_a_speech_translation_model_saved_by_transformers_goes_back_to_xm_transformer(tmp_path: Path) -> None:
    """A ``SpeechEncoderDecoderModel`` (wav2vec2 + adaptor + mBART decoder) of an xm_transformer config,
    its weights replaced and saved by ``save_pretrained`` (which leaves the tied ``lm_head`` out):
    fairseq's ``build_model`` on the exported cfg loads the file strictly and gives its logits."""
    import argparse

    from fairseq import checkpoint_utils, models
    from transformers import SpeechEncoderDecoderModel

    from tests.originals import save_xm_checkpoint, wav2vec2_config, xm_transformer_original

    original, args = xm_transformer_original(wav2vec2_config(), tmp_path)
    converted = convert("wav2vec2_mbart", save_xm_checkpoint(tmp_path / "xm.pt", args, original), tmp_path / "c")
    model = SpeechEncoderDecoderModel.from_pretrained(converted.unwrap()).eval()
    with torch.no_grad():  # a fine-tune: other values than the original's
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "hf")
    for kept in converted.unwrap().iterdir():  # its processor files, as a fine-tune ships them
        if not (tmp_path / "hf" / kept.name).exists():
            (tmp_path / "hf" / kept.name).write_bytes(kept.read_bytes())
    assert "decoder.lm_head.weight" not in _keys(tmp_path / "hf")
    out = _exported("wav2vec2_mbart", tmp_path / "hf", tmp_path / "back" / "checkpoint.pt")
    saved = checkpoint_utils.load_checkpoint_to_cpu(str(out))
    task = argparse.Namespace(target_dictionary=original.decoder.dictionary, source_dictionary=None, multitask_tasks={})
    theirs = models.build_model(saved["cfg"].model, task)
    theirs.load_state_dict(saved["model"], strict=True, model_cfg=saved["cfg"].model)
    x = torch.randn(2, 4000)
    ids = torch.tensor([[2, 5, 7, 9, 11, 13], [2, 6, 8, 10, 12, 14]])
    with torch.no_grad():
        encoded = theirs.eval().encoder(src_tokens=x, src_lengths=torch.tensor([4000, 4000]))
        returned = theirs.decoder(ids, encoder_out=encoded)[0]
        expected = model(input_values=x, decoder_input_ids=ids).logits
    torch.testing.assert_close(returned, expected, rtol=0, atol=ATOL)


def test_a_hubert_without_the_feature_norm_is_refused_by_fairseq_families(tmp_path: Path) -> None:
    """DistilHuBERT's Hub config has no layer norm before the projection; fairseq's HuBERT always has
    one. Exported as fairseq HuBERT it would load with a norm it never had; it is refused, naming the
    field. As s3prl's distiller it goes back."""
    from wmap.errors import Disagrees

    hub_directory("distilhubert", tmp_path / "hf")
    refused = preview_reverse("hubert", tmp_path / "hf").failure()
    assert isinstance(refused, Disagrees) and refused.key == "feat_proj_layer_norm"
    assert (
        preview_reverse("distilhubert", tmp_path / "hf")
        .unwrap()
        .plan.is_clean(Accept(unrecoverable=frozenset({"output_layer"})))
    )


@pytest.mark.parametrize("damage", ["missing tensor", "config of another size"])
def test_a_damaged_directory_is_refused_with_exit_1_and_nothing_written(damage: str, tmp_path: Path) -> None:
    """The negative control of the tests above: the same kind of directory, one tensor gone or its
    config describing another model, does not export."""
    from tests.test_cli import wmap

    hub_directory("wav2vec2_ctc", tmp_path / "hf")
    if damage == "missing tensor":
        state = load_file(tmp_path / "hf" / "model.safetensors")
        state.pop(next(k for k in state if k.endswith("layers.0.attention.q_proj.bias")))
        save_file(state, tmp_path / "hf" / "model.safetensors", {"format": "pt"})
    else:
        config = json.loads((tmp_path / "hf" / "config.json").read_text())
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 12}))
    (tmp_path / "out").mkdir()
    shown = wmap("preview", "--reverse", "wav2vec2_ctc", str(tmp_path / "hf"))
    result = wmap("export", "wav2vec2_ctc", str(tmp_path / "hf"), str(tmp_path / "out" / "checkpoint.pt"))
    assert shown.returncode == 1 and result.returncode == 1, result.stderr
    assert "missing" in shown.stdout
    assert list((tmp_path / "out").iterdir()) == []


def _fine_tuned_by_transformers(family: str, original_file: Path, tmp_path: Path, shard: str | None) -> Any:
    """A user's fine-tune of a session-7 family as transformers saves it: converted once, loaded with
    ``from_pretrained``, its weights changed (nothing wmap made or gathered: those stay as made), and
    written by ``save_pretrained`` itself (default or sharded), processor files copied."""
    import shutil

    import transformers

    first = convert(family, original_file, tmp_path / "first").unwrap()
    model = (
        transformers.AutoModel.from_pretrained(first)
        if family != "wav2vec2_conformer_ctc"
        else (transformers.Wav2Vec2ConformerForCTC.from_pretrained(first))
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "feature_projection.projection" not in name and "masked_spec_embed" not in name:
                parameter.add_(0.01 * torch.randn_like(parameter))
    model.eval().save_pretrained(tmp_path / "hf", **({"max_shard_size": shard} if shard else {}))
    for extra in first.iterdir():
        if extra.suffix == ".json" and extra.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy(extra, tmp_path / "hf" / extra.name)
    return model


@pytest.mark.parametrize("shard", [None, "20KB"])
@pytest.mark.parametrize("family", ["dac", "encodec_audiocraft", "data2vec2_audio", "wav2vec2_conformer_ctc"])
def test_a_fine_tune_of_a_new_family_saved_by_transformers_goes_back_with_its_outputs(
    family: str, shard: str | None, tmp_path: Path
) -> None:
    """DAC, audiocraft's EnCodec, data2vec 2.0 and the conformer: a directory ``save_pretrained`` wrote
    (default and sharded) exports, loads in the original's own loader, and gives the transformers
    model's outputs (codes equal; audio, features or logits within 1e-5)."""
    from tests import originals

    torch.manual_seed(0)
    x = torch.randn(1, 1, 1600) * 0.3
    if family == "dac":
        originals.dac_checkpoint(tmp_path / "orig.pth")
        model = _fine_tuned_by_transformers(family, tmp_path / "orig.pth", tmp_path, shard)
        back = originals.import_dac().load(str(_exported(family, tmp_path / "hf", tmp_path / "back.pth"))).eval()
        with torch.no_grad():
            z, codes, *_ = back.encode(x)
            encoded = model.encode(x)
            ours = model.decode(encoded.quantized_representation).audio_values
            torch.testing.assert_close(back.decode(z).reshape(ours.shape), ours, rtol=0, atol=ATOL)
        assert torch.equal(codes, encoded.audio_codes)
    elif family == "encodec_audiocraft":
        originals.audiocraft_encodec_file(tmp_path / "compression_state_dict.bin")
        model = _fine_tuned_by_transformers(family, tmp_path / "compression_state_dict.bin", tmp_path, shard)
        out = _exported(family, tmp_path / "hf", tmp_path / "back" / "compression_state_dict.bin")
        back = originals.import_audiocraft().models.loaders.load_compression_model(out)
        with torch.no_grad():
            codes, scale = back.encode(x)
            encoded = model.encode(x)
            ours = model.decode(encoded.audio_codes, encoded.audio_scales).audio_values
            torch.testing.assert_close(back.decode(codes, scale), ours, rtol=0, atol=ATOL)
        assert torch.equal(codes, encoded.audio_codes[0])
    elif family == "data2vec2_audio":
        originals.data2vec2_checkpoint(tmp_path / "orig.pt", tmp_path)
        model = _fine_tuned_by_transformers(family, tmp_path / "orig.pt", tmp_path, shard)
        back, _ = _fairseq(_exported(family, tmp_path / "hf", tmp_path / "back" / "checkpoint.pt"))
        with torch.no_grad():
            theirs = back(x[0], features_only=True, mask=False)["x"]
            torch.testing.assert_close(theirs, model(x[0]).last_hidden_state, rtol=0, atol=ATOL)
    else:
        with originals.conformer_fix():
            originals.ctc_trainer_checkpoint(
                tmp_path / "orig.pt", tmp_path, family="wav2vec2", pos_enc_type="rope", **originals.CONFORMER
            )
        model = _fine_tuned_by_transformers(family, tmp_path / "orig.pt", tmp_path, shard)
        out = _exported(family, tmp_path / "hf", tmp_path / "back" / "checkpoint.pt")
        with originals.conformer_fix(), torch.no_grad():
            back, _ = _fairseq(out)
            theirs = back(source=x[0], padding_mask=None)["encoder_out"][:, 0]
        torch.testing.assert_close(theirs, model(x[0]).logits[0], rtol=0, atol=ATOL)
