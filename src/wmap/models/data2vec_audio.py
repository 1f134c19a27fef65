"""data2vec-audio from fairseq: fine-tuned (CTC) -> ``Data2VecAudioForCTC``, pre-trained -> ``Data2VecAudioModel``.

Variants transformers' data2vec-audio cannot represent are refused by the plan:
a group-norm feature extractor, a single weight-norm positional conv, a pre-LN
transformer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from returns.result import Failure, Result, Success
from transformers import Data2VecAudioConfig, Data2VecAudioForCTC, Data2VecAudioModel, PretrainedConfig

from wmap.errors import BadConfig
from wmap.models.base import ModelSpec, register
from wmap.models.source_config import encoder_kwargs, fairseq_encoder_config, field
from wmap.models.wav2vec2_family import (
    PROJECTIONS,
    STACKED_POS_CONV,
    TRANSFORMER_LAYERS,
    layer_norm_feature_extractor,
)
from wmap.pipeline import first_match, optional, scoped, seq, when
from wmap.transforms import PARAMS, Layout, Transform, refuse, rename, skip

SOURCE = "fairseq cfg.model"
TARGET = "Data2VecAudio"
CTC_HEAD = "w2v_encoder.proj.weight"


def translate_config(meta: Mapping[str, Any], layout: Layout, *, ctc: bool) -> Result[PretrainedConfig, BadConfig]:
    """fairseq's data2vec-audio config (plain containers, omegaconf or ``args``) -> ``Data2VecAudioConfig``."""
    enc = fairseq_encoder_config(meta)
    if enc is None:
        return Failure(BadConfig("checkpoint", "cfg.model", "a fairseq config (cfg or args); or pass --config", "none"))
    shared = encoder_kwargs(SOURCE, enc, "conv_feature_layers")
    if isinstance(shared, Failure):
        return Failure(shared.failure())
    depth = int(field(enc, "pos_conv_depth", 1) or 1)
    conv_pos = int(field(enc, "conv_pos", 128))
    extra: dict[str, Any] = {}
    if ctc:
        if CTC_HEAD not in layout:
            return Failure(BadConfig("checkpoint", CTC_HEAD, "a CTC projection (fine-tuned checkpoint)", "missing"))
        extra["vocab_size"] = layout[CTC_HEAD][0]
    return Success(
        Data2VecAudioConfig(
            **shared.unwrap(),
            conv_bias=bool(field(enc, "conv_bias", False)),
            num_conv_pos_embeddings=depth,
            conv_pos_kernel_size=max(3, conv_pos // depth),
            num_conv_pos_embedding_groups=int(field(enc, "conv_pos_groups", 16)),
            **extra,
        )
    )


def encoder_rules(meta: Mapping[str, Any]) -> Transform:
    """The data2vec-audio encoder as fairseq names it, with the refusals for what the target lacks."""
    pre_ln = bool(field(fairseq_encoder_config(meta), "layer_norm_first", False))
    return first_match(
        "data2vec-audio encoder",
        (
            *layer_norm_feature_extractor(TARGET),
            *STACKED_POS_CONV,
            refuse(
                "encoder.pos_conv",
                f"single weight-norm positional conv (fairseq pos_conv_depth 1); {TARGET} has a stack of plain convs",
            ),
            when(
                "layer_norm_first",
                pre_ln,
                refuse("encoder", f"pre-LN transformer (fairseq layer_norm_first); {TARGET} is post-LN only"),
            ),
            *TRANSFORMER_LAYERS,
            *PROJECTIONS,
            skip("_ema", "EMA teacher: used only for pre-training"),
            skip("final_proj", f"pre-training regression head; {TARGET} has no equivalent"),
        ),
    )


def headless_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Pre-trained checkpoint -> Data2VecAudioModel (``final_proj.0`` renamed first, as in the seed)."""
    return seq(optional(rename("final_proj.0", "final_proj")), encoder_rules(meta))


def ctc_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Fine-tuned checkpoint -> Data2VecAudioForCTC: the encoder under ``data2vec_audio.``, the head on top."""
    return first_match(
        "data2vec-audio CTC",
        (
            rename("w2v_encoder.proj", "lm_head", PARAMS),
            scoped("w2v_encoder.w2v_model", "data2vec_audio", encoder_rules(meta)),
        ),
    )


DATA2VEC_AUDIO_CTC = register(
    ModelSpec(
        name="data2vec_audio_ctc",
        source="fairseq data2vec-audio fine-tuned for CTC ({'cfg', 'model'} checkpoint)",
        target="transformers Data2VecAudioForCTC",
        config_class=Data2VecAudioConfig,
        config_from_checkpoint=lambda meta, layout: translate_config(meta, layout, ctc=True),
        pipeline=ctc_pipeline,
        model_class=Data2VecAudioForCTC,
    )
)

DATA2VEC_AUDIO = register(
    ModelSpec(
        name="data2vec_audio",
        source="fairseq data2vec-audio pre-trained ({'cfg', 'model'} checkpoint)",
        target="transformers Data2VecAudioModel (headless)",
        config_class=Data2VecAudioConfig,
        config_from_checkpoint=lambda meta, layout: translate_config(meta, layout, ctc=False),
        pipeline=headless_pipeline,
        model_class=Data2VecAudioModel,
    )
)
