"""wav2vec2 + adaptor + mBART decoder from fairseq's xm_transformer: parity per adaptor variant,
embedding-to-linear tying, and refusal of variants transformers cannot represent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GenerationConfig, SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview, verify

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


def _sentencepiece_model(directory: Path) -> Path:
    import sentencepiece

    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(f"speech to text sentence number {i} for a tiny test model" for i in range(200)))
    prefix = directory / "spm"
    sentencepiece.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), vocab_size=40, model_type="unigram", minloglevel=2
    )
    return prefix.with_suffix(".model")


def test_tokenizer_is_written_from_a_sentencepiece_model(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    _, checkpoint = _build(tmp_path)
    model_file = _sentencepiece_model(tmp_path)
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
