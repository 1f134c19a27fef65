"""openai-whisper <-> transformers ``WhisperForConditionalGeneration``, both directions.

The openai format is ``{"dims": ModelDimensions, "model_state_dict": ...}``, as
``whisper.load_model`` reads it. Forward, ``proj_out`` is tied to the token
embedding (openai's decoder multiplies by it) and the positional embeddings stay
as they are (the encoder's sinusoids are a buffer openai saves). Back
(``wmap export whisper HF_DIR OUT.pt``), the rules are the same ones reversed
(:mod:`wmap.reverse`) and ``dims`` is rebuilt from the transformers config, every
field accounted for. Released openai checkpoints are float16: tensors keep their
dtype both ways unless ``--dtype`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import WhisperConfig, WhisperForConditionalGeneration

from wmap.config_fields import (
    Checked,
    ConfigTable,
    Translated,
    Translation,
    ignore_all,
    integer,
    inverse,
    one_of,
)
from wmap.config_fields import translate as read_table
from wmap.errors import BadConfig, Disagrees
from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig, shipped
from wmap.models.whisper_processor import whisper_generation_config, whisper_processor
from wmap.pipeline import first_match, scoped
from wmap.transforms import EXACT, PARAMS, Layout, Transform, rename, tie

VOCABULARIES = (51864, 51865, 51866)
"""openai's vocabularies: English-only, multilingual, and large-v3's (one more language)."""

DIMS = ConfigTable(
    "openai-whisper dims",
    (
        Translated("n_mels", integer(1, 1024), "num_mel_bins"),
        Translated("n_audio_ctx", integer(1, 1 << 20), "max_source_positions"),
        Translated("n_audio_state", integer(1, 65536), "d_model"),
        Translated("n_audio_head", integer(1, 1024), "encoder_attention_heads"),
        Translated("n_audio_layer", integer(1, 512), "encoder_layers"),
        Checked(
            "n_vocab",
            VOCABULARIES,
            "the special-token ids (end of text, start of transcript) are those of openai's vocabularies",
            None,
            integer(1, 1 << 20),
        ),
        Translated("n_text_ctx", integer(1, 1 << 20), "max_target_positions"),
        Translated("n_text_state", integer(1, 65536), None),
        Translated("n_text_head", integer(1, 1024), "decoder_attention_heads"),
        Translated("n_text_layer", integer(1, 512), "decoder_layers"),
    ),
)
"""openai's ``ModelDimensions``, every field."""


def special_tokens(n_vocab: int) -> dict[str, int]:
    """openai's end-of-text and start-of-transcript ids (``whisper.tokenizer``): GPT-2's vocabulary
    for English-only models, one more token before them for multilingual ones."""
    end = 50256 if n_vocab < 51865 else 50257
    return {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end, "decoder_start_token_id": end + 1}


def config_from_checkpoint(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    dims = meta.get("dims")
    if dims is None:
        return Failure(BadConfig("checkpoint", "dims", "openai-whisper's ModelDimensions; or pass --config", "none"))

    def built(read: Translation) -> Result[TranslatedConfig, BadConfig]:
        state, text = read.values["n_audio_state"], read.values["n_text_state"]
        if state != text:
            expected = f"{state} (n_audio_state: transformers' Whisper has one d_model)"
            return Failure(BadConfig(DIMS.section, "n_text_state", expected, str(text)))
        for heads in ("n_audio_head", "n_text_head"):
            if state % read.values[heads]:
                return Failure(
                    BadConfig(DIMS.section, heads, f"a divisor of the width ({state})", str(read.values[heads]))
                )
        kwargs = {
            **read.kwargs,
            "vocab_size": read.values["n_vocab"],
            "encoder_ffn_dim": 4 * state,
            "decoder_ffn_dim": 4 * state,
            **special_tokens(read.values["n_vocab"]),
        }
        return Success(TranslatedConfig(WhisperConfig(**kwargs), read.ignored))

    return read_table(DIMS, dims).bind(built)


ATTENTION = (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "out_proj"))


def _block(cross: bool) -> Transform:
    """One residual block: self-attention (and cross-attention in the decoder) and the MLP."""
    rules: list[Transform] = [rename(f"attn.{a}", f"self_attn.{b}", PARAMS) for a, b in ATTENTION]
    rules.append(rename("attn_ln", "self_attn_layer_norm", PARAMS))
    if cross:
        rules += [rename(f"cross_attn.{a}", f"encoder_attn.{b}", PARAMS) for a, b in ATTENTION]
        rules.append(rename("cross_attn_ln", "encoder_attn_layer_norm", PARAMS))
    rules += [
        rename("mlp.0", "fc1", PARAMS),
        rename("mlp.2", "fc2", PARAMS),
        rename("mlp_ln", "final_layer_norm", PARAMS),
    ]
    return first_match("decoder block" if cross else "encoder block", rules)


RULES = first_match(
    "whisper",
    (
        rename("encoder.conv1", "model.encoder.conv1", PARAMS),
        rename("encoder.conv2", "model.encoder.conv2", PARAMS),
        rename("encoder.positional_embedding", "model.encoder.embed_positions.weight", EXACT),
        scoped("encoder.blocks.*", "model.encoder.layers.*", _block(cross=False)),
        rename("encoder.ln_post", "model.encoder.layer_norm", PARAMS),
        tie("decoder.token_embedding", "model.decoder.embed_tokens", "proj_out"),
        rename("decoder.positional_embedding", "model.decoder.embed_positions.weight", EXACT),
        scoped("decoder.blocks.*", "model.decoder.layers.*", _block(cross=True)),
        rename("decoder.ln", "model.decoder.layer_norm", PARAMS),
    ),
)
"""openai's names -> transformers' names; :func:`wmap.reverse.reverse` gives the way back."""


# --- back to openai ------------------------------------------------------------------------------

DIMENSIONS_FROM = ConfigTable(
    "transformers WhisperConfig (for openai's dims)",
    (
        *inverse(DIMS.fields),
        Translated("vocab_size", integer(1, 1 << 20), "n_vocab"),  # checked, not translated, forward
        Translated("encoder_ffn_dim", integer(1, 1 << 20), None),
        Translated("decoder_ffn_dim", integer(1, 1 << 20), None),
        Checked(
            "activation_function",
            ("gelu",),
            "openai's MLP is GELU",
            "gelu",
            one_of("gelu", "relu", "gelu_new", "silu", "swish", "tanh", "gelu_fast", "quick_gelu"),
        ),
        Checked("scale_embedding", (False,), "openai does not scale the token embedding", False),
        Checked("tie_word_embeddings", (True,), "openai's decoder projects with the token embedding itself", True),
        Checked(
            "use_weighted_layer_sum",
            (False,),
            "a classification setting; the openai model has no weighted layer sum",
            False,
        ),
        *ignore_all(
            (
                "dropout",
                "attention_dropout",
                "activation_dropout",
                "encoder_layerdrop",
                "decoder_layerdrop",
                "apply_spec_augment",
                "mask_time_prob",
                "mask_time_length",
                "mask_time_min_masks",
                "mask_feature_prob",
                "mask_feature_length",
                "mask_feature_min_masks",
                "use_cache",
                "init_std",
                "classifier_proj_size",
                "median_filter_width",
            ),
            "training or inference setting of transformers; openai's model has no field for it",
        ),
        *ignore_all(
            (
                "bos_token_id",
                "eos_token_id",
                "pad_token_id",
                "decoder_start_token_id",
                "suppress_tokens",
                "begin_suppress_tokens",
                "forced_decoder_ids",
                "max_length",
            ),
            "openai's tokenizer and decoding options hold these; the weights do not depend on them",
        ),
    ),
)
"""The transformers config -> openai's ``dims``; the fields transformers adds are accounted for."""


def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    """openai's names and shapes for the directory's config, and the ``dims`` ``whisper.load_model`` needs."""
    config = source.config
    fields = {k: v for k, v in config.to_dict().items() if k in DIMENSIONS_FROM.names()}

    def built(read: Translation) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        dims = {**read.kwargs, "n_text_state": read.kwargs["n_audio_state"]}
        width = dims["n_audio_state"]
        for name in ("encoder_ffn_dim", "decoder_ffn_dim"):
            if read.values[name] != 4 * width:
                return Failure(
                    Disagrees(
                        DIMENSIONS_FROM.section,
                        name,
                        f"{4 * width} (openai's MLP is 4x the width)",
                        str(read.values[name]),
                    )
                )
        return Success((openai_layout(dims), {"dims": dims}))

    return read_table(DIMENSIONS_FROM, fields, report_unknown=False).alt(_cannot_hold).bind(built)


def _cannot_hold(error: BadConfig) -> BadConfig:
    """A readable config.json whose model openai's code cannot hold (untied embeddings, another MLP
    width): a refusal (exit 1), not bad input."""
    return Disagrees(error.source, error.key, error.expected, error.found)


def openai_layout(dims: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The state-dict layout openai's ``Whisper(ModelDimensions(**dims))`` has."""
    width, mels, vocab = dims["n_audio_state"], dims["n_mels"], dims["n_vocab"]
    layout: dict[str, tuple[int, ...]] = {
        "encoder.positional_embedding": (dims["n_audio_ctx"], width),
        "encoder.conv1.weight": (width, mels, 3),
        "encoder.conv1.bias": (width,),
        "encoder.conv2.weight": (width, width, 3),
        "encoder.conv2.bias": (width,),
    }

    def block(prefix: str, cross: bool) -> None:
        for attention in ("attn", "cross_attn") if cross else ("attn",):
            for part in ("query", "key", "value", "out"):
                layout[f"{prefix}.{attention}.{part}.weight"] = (width, width)
                if part != "key":
                    layout[f"{prefix}.{attention}.{part}.bias"] = (width,)
            layout[f"{prefix}.{attention}_ln.weight"] = layout[f"{prefix}.{attention}_ln.bias"] = (width,)
        layout[f"{prefix}.mlp.0.weight"], layout[f"{prefix}.mlp.0.bias"] = (4 * width, width), (4 * width,)
        layout[f"{prefix}.mlp.2.weight"], layout[f"{prefix}.mlp.2.bias"] = (width, 4 * width), (width,)
        layout[f"{prefix}.mlp_ln.weight"] = layout[f"{prefix}.mlp_ln.bias"] = (width,)

    for i in range(dims["n_audio_layer"]):
        block(f"encoder.blocks.{i}", cross=False)
    layout["encoder.ln_post.weight"] = layout["encoder.ln_post.bias"] = (width,)
    layout["decoder.token_embedding.weight"] = (vocab, width)
    layout["decoder.positional_embedding"] = (dims["n_text_ctx"], width)
    for i in range(dims["n_text_layer"]):
        block(f"decoder.blocks.{i}", cross=True)
    layout["decoder.ln.weight"] = layout["decoder.ln.bias"] = (width,)
    return layout


def openai_container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """What ``whisper.load_model`` reads: ``dims`` and ``model_state_dict``."""
    return {"dims": dict(meta["dims"]), "model_state_dict": dict(state)}


WHISPER = ModelSpec(
    **shipped("whisper"),
    config_class=WhisperConfig,
    config_from_checkpoint=config_from_checkpoint,
    pipeline=lambda config, meta: RULES,
    model_class=WhisperForConditionalGeneration,
    extras=whisper_processor,
    without_processor=whisper_generation_config,
    takes_file="--tokenizer: openai's gpt2.tiktoken or multilingual.tiktoken, or the directory holding it "
    "(default: the installed openai-whisper's)",
    export=Exporter(
        original,
        openai_container,
        "an openai-whisper checkpoint (whisper.load_model reads it)",
        leaves_out="the processor and generation config (openai's file has no place for them; wmap convert "
        "derives them again from the vocabulary, alignment heads aside)",
    ),
)
