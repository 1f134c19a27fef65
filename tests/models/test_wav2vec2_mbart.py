"""wav2vec2 + adaptor + mBART decoder from fairseq's xm_transformer: parity per adaptor variant,
embedding-to-linear tying, and refusal of variants transformers cannot represent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GenerationConfig, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.verification import verify

ATOL = 1e-5
pytestmark = pytest.mark.parity


def _build(tmp_path: Path, *, legacy_args: bool = False, **overrides: Any) -> tuple[Any, Path]:
    from tests.originals import save_xm_checkpoint, wav2vec2_config, xm_transformer_original

    model, args = xm_transformer_original(wav2vec2_config(), tmp_path, **overrides)
    return model, save_xm_checkpoint(tmp_path / "xm.pt", args, model, legacy_args=legacy_args)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"share_decoder_input_output_embed": False},
        {"adaptor_n_layers": 0},
        {"adaptor_n_layers": 3, "adaptor_stride": 2, "legacy_args": True},
    ],
    ids=["tied-adaptor", "untied-output-projection", "no-adaptor", "legacy-args-namespace"],
)
def test_parity_with_fairseq(variant: dict[str, Any], tmp_path: Path) -> None:
    original, checkpoint = _build(tmp_path, **variant)
    plan = preview("wav2vec2_mbart", checkpoint).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    shared = variant.get("share_decoder_input_output_embed", True)
    lm_head = next(a for a in plan.applied if a.target == "decoder.lm_head.weight")
    assert lm_head.source == ("decoder.embed_tokens.weight" if shared else "decoder.output_projection.weight")
    assert (lm_head.tied_to is not None) == shared

    out = convert("wav2vec2_mbart", checkpoint, tmp_path / "hf").unwrap()
    assert verify("wav2vec2_mbart", checkpoint, out).unwrap().ok
    ported = load_pretrained_strictly(SpeechEncoderDecoderModel, out)
    assert ported.config.decoder.tie_word_embeddings == shared
    decoder = ported.decoder
    assert torch.equal(decoder.lm_head.weight, decoder.model.decoder.embed_tokens.weight) == shared
    assert ported.config.decoder_start_token_id == 2
    assert GenerationConfig.from_pretrained(out).forced_eos_token_id == 2

    x = torch.randn(2, 4000)
    ids = torch.tensor([[2, 5, 7, 9, 11, 13], [2, 6, 8, 10, 12, 14]])
    with torch.no_grad():
        encoded = original.encoder(src_tokens=x, src_lengths=torch.tensor([4000, 4000]))
        theirs_encoder = encoded["encoder_out"][0].transpose(0, 1)
        theirs_logits = original.decoder(ids, encoder_out=encoded)[0]
        ours_encoder = ported.encoder(x).last_hidden_state
        ours_logits = ported(input_values=x, decoder_input_ids=ids).logits
    torch.testing.assert_close(ours_encoder, theirs_encoder, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    ("overrides", "refused_prefix", "reason"),
    [
        (
            {"encoder_proj": True, "decoder_embed_dim": 24, "decoder_attention_heads": 4},
            "encoder.w2v_encoder.proj",
            "encoder projection without the layer norm",
        ),
        (
            {"adaptor_proj": True, "decoder_embed_dim": 24, "decoder_attention_heads": 4},
            "encoder.adaptor.proj",
            "adaptor projection layers",
        ),
        ({"adaptor_layernorm": True}, "encoder.adaptor.layernorm", "adaptor input layer norm"),
        ({"decoder_normalize_before": False}, "decoder.layers.0", "post-LN decoder"),
    ],
    ids=["encoder-proj-without-ln", "adaptor-proj", "adaptor-layernorm", "post-ln-decoder"],
)
def test_variants_without_an_equivalent_are_refused(
    overrides: dict[str, Any], refused_prefix: str, reason: str, tmp_path: Path
) -> None:
    _, checkpoint = _build(tmp_path, **overrides)
    plan = preview("wav2vec2_mbart", checkpoint).unwrap().plan
    refused = [r for r in plan.refused if r.key.startswith(refused_prefix)]
    assert refused, plan.problems(limit=5)
    assert all(reason in r.reason for r in refused)
    error = convert("wav2vec2_mbart", checkpoint, tmp_path / "hf").failure()
    assert refused_prefix in error.message
    assert not (tmp_path / "hf").exists()


def test_tokenizer_is_written_from_a_sentencepiece_model(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    _, checkpoint = _build(tmp_path)
    from tests.helpers import fairseq_sentencepiece

    model_file, _ = fairseq_sentencepiece(tmp_path / "spm")
    out = convert("wav2vec2_mbart", checkpoint, tmp_path / "hf", processor_file=model_file).unwrap()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer).__name__.startswith("MBart50Tokenizer")
    config = SpeechEncoderDecoderConfig.from_pretrained(out)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (config.pad_token_id, config.eos_token_id)
    assert tokenizer("speech to text").input_ids[-1] == tokenizer.eos_token_id


def test_bad_tokenizer_input_is_refused_before_writing(tmp_path: Path) -> None:
    from tests.helpers import reference_checkpoint

    _, checkpoint = _build(tmp_path)
    garbage = tmp_path / "not.model"
    garbage.write_bytes(b"not a sentencepiece model")
    error = convert("wav2vec2_mbart", checkpoint, tmp_path / "hf", processor_file=garbage).failure()
    assert "--tokenizer" in error.message and str(garbage) in error.message
    encodec = reference_checkpoint(tmp_path / "encodec.pt")
    error = convert("encodec_32khz", encodec, tmp_path / "hf", processor_file=garbage).failure()
    assert "takes none" in error.message
    assert not (tmp_path / "hf").exists()


def _fairseq_outputs(model: Any) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(2, 4000)
    ids = torch.tensor([[2, 5, 7, 9, 11, 13], [2, 6, 8, 10, 12, 14]])
    with torch.no_grad():
        encoded = model.encoder(src_tokens=x, src_lengths=torch.tensor([4000, 4000]))
        logits: torch.Tensor = model.decoder(ids, encoder_out=encoded)[0]
    return logits


@pytest.mark.parametrize("shared", [True, False], ids=["tied", "untied"])
def test_the_way_back_builds_in_fairseq_and_loads_strictly(shared: bool, tmp_path: Path) -> None:
    """original -> convert -> export: every tensor of the original's state dict back as it was (the
    tied output projection as the embedding's tensor, the decoder's format marker); fairseq's own
    ``build_model`` makes an ``XMTransformerModel`` from the exported ``cfg`` that loads it strictly
    and gives the original's logits; export -> convert gives the same safetensors."""
    import argparse

    from fairseq import checkpoint_utils, models
    from safetensors.torch import load_file

    from wmap.way_back import export, preview_reverse

    original, checkpoint = _build(tmp_path, share_decoder_input_output_embed=shared)
    hf = convert("wav2vec2_mbart", checkpoint, tmp_path / "hf").unwrap()
    assert preview_reverse("wav2vec2_mbart", hf).unwrap().plan.is_clean()
    (tmp_path / "back").mkdir()
    out = export("wav2vec2_mbart", hf, tmp_path / "back" / "checkpoint.pt").unwrap()

    written = torch.load(out, weights_only=True)  # plain containers only
    exported = written["model"]
    state = original.state_dict()
    assert exported.keys() == state.keys()
    assert all(exported[k].dtype == v.dtype and torch.equal(exported[k], v) for k, v in state.items())

    from wmap.config_fields import inverse
    from wmap.fairseq.export import TRANSLATED_BACK
    from wmap.models.wav2vec2_mbart import XM_TRANSFORMER

    theirs, ours = torch.load(checkpoint, weights_only=False)["cfg"]["model"], written["cfg"]["model"]
    translated = [str(f.target) for f in inverse(XM_TRANSFORMER.fields)]  # the table's, read back
    fields = [*translated, "no_scale_embedding", "adaptor_n_layers", "adaptor_kernel_size", "adaptor_proj"]
    assert {f: ours[f] for f in fields} == {f: theirs[f] for f in fields}
    encoder = [f for f in TRANSLATED_BACK.values() if f in theirs["w2v_args"]["model"]]
    assert {f: ours["w2v_args"]["model"][f] for f in encoder} == {f: theirs["w2v_args"]["model"][f] for f in encoder}

    saved = checkpoint_utils.load_checkpoint_to_cpu(str(out))  # fairseq's own reader and upgrades
    task = argparse.Namespace(target_dictionary=original.decoder.dictionary, source_dictionary=None, multitask_tasks={})
    rebuilt = models.build_model(saved["cfg"].model, task)
    rebuilt.load_state_dict(saved["model"], strict=True, model_cfg=saved["cfg"].model)
    assert bool(saved["cfg"].model.share_decoder_input_output_embed) == shared
    assert torch.equal(_fairseq_outputs(rebuilt.eval()), _fairseq_outputs(original))

    again = convert("wav2vec2_mbart", out, tmp_path / "again").unwrap()
    first, second = load_file(hf / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_an_older_file_converts_without_fairseq(tmp_path: Path) -> None:
    """Older fairseq files keep attention fused (``in_proj_weight``) and the decoder layers' norms as
    ``layer_norms.0/1/2``. fairseq's module upgrades (``BaseFairseqModel.upgrade_state_dict_named``:
    ``MultiheadAttention``'s and ``TransformerDecoder``'s) turn such a file into the current state
    dict; wmap's upgrade chain converts it to the same tensors. (``XMTransformerModel`` overrides
    ``upgrade_state_dict`` with a no-op, so fairseq's xm_transformer loader itself would not read it.)"""
    from fairseq.models import BaseFairseqModel
    from safetensors.torch import load_file

    original, checkpoint = _build(tmp_path)
    current = original.state_dict()
    older = dict(current)
    fused = 0
    for key in [k for k in current if k.endswith("attn.q_proj.weight")]:
        head = key.removesuffix("q_proj.weight")
        for leaf in ("weight", "bias"):
            older[f"{head}in_proj_{leaf}"] = torch.cat([older.pop(f"{head}{p}_proj.{leaf}") for p in "qkv"])
        fused += 1
    norms = 0
    for n, name in enumerate(("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")):
        for key in [k for k in current if k.startswith("decoder.layers.") and f".{name}." in k]:
            older[key.replace(f".{name}.", f".layer_norms.{n}.")] = older.pop(key)
            norms += 1
    assert fused == 2 + 2 * 2 and norms == 2 * 3 * 2  # encoder self-attention; decoder self and cross
    upgraded = dict(older)
    BaseFairseqModel.upgrade_state_dict_named(original, upgraded, "")  # each module's own upgrade
    assert upgraded.keys() == current.keys() and all(torch.equal(upgraded[k], v) for k, v in current.items())

    saved = torch.load(checkpoint, weights_only=False)
    torch.save({**saved, "model": older}, tmp_path / "older.pt")
    plan = preview("wav2vec2_mbart", tmp_path / "older.pt").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    old = convert("wav2vec2_mbart", tmp_path / "older.pt", tmp_path / "old").unwrap()
    new = convert("wav2vec2_mbart", checkpoint, tmp_path / "new").unwrap()
    first, second = load_file(old / "model.safetensors"), load_file(new / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_an_adapter_that_projects_and_has_layers_is_refused_on_the_way_back(tmp_path: Path) -> None:
    """Wav2Vec2's adapter may project to another width and then run conv layers; fairseq's adaptor
    with a projection (``--adaptor-proj``) adds projection layers Wav2Vec2 lacks, so there is no
    fairseq file for it: refused before anything is read, naming the field."""
    from transformers import MBartConfig, Wav2Vec2Config, Wav2Vec2FeatureExtractor

    from wmap.way_back import export

    encoder = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        add_adapter=True,
        num_adapter_layers=2,
        output_hidden_size=24,
    )
    decoder = MBartConfig(d_model=24, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=48, vocab_size=40)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    SpeechEncoderDecoderModel(config=config).save_pretrained(tmp_path / "hf")
    Wav2Vec2FeatureExtractor().save_pretrained(tmp_path / "hf")
    error = export("wav2vec2_mbart", tmp_path / "hf", tmp_path / "back.pt").failure()
    assert "encoder.output_hidden_size" in error.message and "adapter layers" in error.message
    assert not (tmp_path / "back.pt").exists()


@pytest.mark.parametrize("shared", [True, False], ids=["tied", "untied"])
def test_a_bare_state_dict_converts_with_a_config(shared: bool, tmp_path: Path) -> None:
    """Without fairseq's cfg the rules take the variant the target config implies (pre-LN, the tie):
    a bare state dict with ``--config`` gives the same safetensors as the full checkpoint. Before,
    every decoder layer was refused as post-LN."""
    from safetensors.torch import load_file

    original, checkpoint = _build(tmp_path, share_decoder_input_output_embed=shared)
    hf = convert("wav2vec2_mbart", checkpoint, tmp_path / "hf").unwrap()
    torch.save(original.state_dict(), tmp_path / "bare.pt")
    plan = preview("wav2vec2_mbart", tmp_path / "bare.pt", config=hf / "config.json").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    bare = convert("wav2vec2_mbart", tmp_path / "bare.pt", tmp_path / "bare", config=hf / "config.json").unwrap()
    first, second = load_file(hf / "model.safetensors"), load_file(bare / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_what_the_family_never_reads_leaves_the_preview_as_it_is(tmp_path: Path) -> None:
    """The encoder's pre-training settings, as the file records them, changed: the same preview."""
    from tests.helpers import assert_unread_leaves_the_preview

    _, checkpoint = _build(tmp_path)
    assert_unread_leaves_the_preview("wav2vec2_mbart", checkpoint, tmp_path, ("cfg.model.decoder_layers", 1))
