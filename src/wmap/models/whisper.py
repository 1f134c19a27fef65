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
from transformers import WhisperConfig

from wmap.config_back import Holds
from wmap.config_fields import (
    Checked,
    Composite,
    ConfigTable,
    Derived,
    Translated,
    divides,
    ignore_all,
    integer,
    inverse,
    one_of,
    values_back,
)
from wmap.config_fields import translate as read_table
from wmap.errors import BadConfig
from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig, shipped
from wmap.models.whisper_processor import whisper_generation_config, whisper_processor
from wmap.pipeline import first_match, scoped
from wmap.reverse import predicted_layout
from wmap.transforms import EXACT, PARAMS, Layout, Transform, rename, tie

VOCABULARIES = (51864, 51865, 51866)
"""openai's vocabularies: English-only, multilingual, and large-v3's (one more language)."""


def openai_vocabulary(value: object) -> Result[Any, str]:
    """One of openai's vocabularies: the special-token ids are laid out by its size."""
    if value in VOCABULARIES and isinstance(value, int) and not isinstance(value, bool):
        return Success(value)
    return Failure("51864, 51865 or 51866: the special-token ids (end of text, start of transcript) are openai's")


def special_tokens(n_vocab: int) -> dict[str, int]:
    """The vocabulary's size and openai's end-of-text and start-of-transcript ids (``whisper.tokenizer``):
    GPT-2's vocabulary for English-only models, one more token before them for multilingual ones."""
    end = 50256 if n_vocab < 51865 else 50257
    ids = {"bos_token_id": end, "eos_token_id": end, "pad_token_id": end, "decoder_start_token_id": end + 1}
    return {"vocab_size": n_vocab, **ids}


def widths(width: int) -> dict[str, int]:
    """openai's one width: the model's, and its MLPs' (four times it)."""
    return {"d_model": width, "encoder_ffn_dim": 4 * width, "decoder_ffn_dim": 4 * width}


ONE_WIDTH = "transformers' Whisper has one d_model"

DIMS = ConfigTable(
    "openai-whisper dims",
    (
        Translated("n_mels", integer(1, 1024), "num_mel_bins"),
        Translated("n_audio_ctx", integer(1, 1 << 20), "max_source_positions"),
        Composite("n_audio_state", integer(1, 65536), widths, lambda config: config.d_model),
        Translated("n_audio_head", integer(1, 1024), "encoder_attention_heads", fits=divides("n_audio_state")),
        Translated("n_audio_layer", integer(1, 512), "encoder_layers"),
        Composite("n_vocab", openai_vocabulary, special_tokens, lambda config: config.vocab_size),
        Translated("n_text_ctx", integer(1, 1 << 20), "max_target_positions"),
        Derived("n_text_state", integer(1, 65536), lambda values: values["n_audio_state"], ONE_WIDTH),
        Translated("n_text_head", integer(1, 1024), "decoder_attention_heads", fits=divides("n_audio_state")),
        Translated("n_text_layer", integer(1, 512), "decoder_layers"),
    ),
)
"""openai's ``ModelDimensions``, every field, both ways (:func:`~wmap.config_fields.values_back`)."""


def config_from_checkpoint(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """``dims`` -> ``WhisperConfig``."""
    return read_table(DIMS, meta.get("dims")).map(
        lambda read: TranslatedConfig(WhisperConfig(**read.kwargs), read.ignored)
    )


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

OPENAI_MLP = "openai's MLP is four times the width"

DIMENSIONS_FROM = ConfigTable(
    "transformers WhisperConfig (for openai's dims)",
    (
        *inverse(DIMS.fields),
        Translated("d_model", integer(1, 65536), None),
        Translated("vocab_size", integer(1, 1 << 20), None),
        Derived("encoder_ffn_dim", integer(1, 1 << 22), lambda values: 4 * values["d_model"], OPENAI_MLP),
        Derived("decoder_ffn_dim", integer(1, 1 << 22), lambda values: 4 * values["d_model"], OPENAI_MLP),
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


OPENAI_HOLDS = Holds(DIMENSIONS_FROM)
"""A config openai's model can hold (every field transformers adds checked), or the refusal (exit 1)."""


def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    """openai's names (the rules reversed) and the ``dims`` ``whisper.load_model`` needs, when openai's
    model can hold the directory's config (:data:`OPENAI_HOLDS`)."""
    dims = values_back(DIMS.fields, source.config)
    return OPENAI_HOLDS(source.config).map(
        lambda _: (predicted_layout(source.pipeline, source.converted), {"dims": dims})
    )


def openai_container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """What ``whisper.load_model`` reads: ``dims`` and ``model_state_dict``."""
    return {"dims": dict(meta["dims"]), "model_state_dict": dict(state)}


WHISPER = ModelSpec(
    **shipped("whisper"),
    config_class=WhisperConfig,
    config_from_checkpoint=config_from_checkpoint,
    pipeline=lambda config, meta: RULES,
    model_class="WhisperForConditionalGeneration",
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
