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

from wmap.config_fields import (
    ConfigTable,
    Translation,
    ignore_all,
)
from wmap.errors import BadConfig
from wmap.fairseq import (
    STACKED_POS_CONV,
    TRANSFORMER_LAYERS,
    ctc_head_kwargs,
    fairseq_encoder_config,
    fine_tuned,
    flag,
    layer_norm_feature_extractor,
    layout_agrees,
    pre_trained,
    projections,
    wav2vec2_encoder_fields,
    with_upgrades,
)
from wmap.fairseq.dictionary import STAND_INS
from wmap.fairseq.export import ctc_exporter, pretraining_exporter
from wmap.fairseq.processor import ctc_processor, feature_extractor_writer
from wmap.models.base import ModelSpec, TranslatedConfig, shipped
from wmap.pipeline import first_match, scoped, seq, when
from wmap.pipeline import optional as pass_unmatched
from wmap.transforms import PARAMS, Layout, Transform, refuse, rename, skip

TARGET = "Data2VecAudio"

DATA2VEC_OBJECTIVE = "data2vec pre-training objective (EMA teacher and its targets): not part of the encoder"

ENCODER_FIELDS = (
    *wav2vec2_encoder_fields(),
    *ignore_all(
        (
            "loss_beta",
            "loss_scale",
            "average_top_k_layers",
            "layer_norm_target_layer",
            "instance_norm_target_layer",
            "instance_norm_targets",
            "layer_norm_targets",
            "batch_norm_target_layer",
            "group_norm_target_layer",
            "ema_decay",
            "ema_end_decay",
            "ema_anneal_end_step",
            "ema_transformer_only",
            "ema_layers_only",
            "max_update",
            "min_target_var",
            "min_pred_var",
        ),
        DATA2VEC_OBJECTIVE,
    ),
)
"""fairseq's ``Data2VecAudioConfig`` (wav2vec2's encoder fields and data2vec's objective)."""


def layer_norm_extractor(config: PretrainedConfig) -> dict[str, Any]:
    """What the way back spells otherwise than the table: Data2VecAudio has layer norms only (a
    group-norm extractor is refused forward), which its config does not say (it has no
    ``feat_extract_norm``), and a stack of ``num_conv_pos_embeddings`` positional convs of kernel
    ``conv_pos_kernel_size`` where fairseq says ``pos_conv_depth`` and ``conv_pos`` = kernel x depth."""
    depth = int(config.num_conv_pos_embeddings)
    return {
        "extractor_mode": "layer_norm",
        "pos_conv_depth": depth,
        "conv_pos": int(config.conv_pos_kernel_size) * depth,  # fairseq: kernel = conv_pos // depth
    }


PRETRAINED = ConfigTable("fairseq cfg.model", ENCODER_FIELDS)
FINE_TUNED_ENCODER = ConfigTable("fairseq cfg.model.w2v_args.model", ENCODER_FIELDS)


def _encoder_kwargs(encoder: Translation, *, masking: bool) -> dict[str, Any]:
    values = encoder.values
    depth: int = values["pos_conv_depth"]
    kwargs = dict(encoder.kwargs)
    if not masking:  # fine-tuned without masking: off, but the mask embedding keeps its place
        kwargs["apply_spec_augment"] = False
    return {
        **kwargs,
        "num_conv_pos_embeddings": depth,
        "conv_pos_kernel_size": max(3, values["conv_pos"] // depth),
        "layer_norm_eps": 1e-5,
    }


def translate_config(meta: Mapping[str, Any], layout: Layout, *, ctc: bool) -> Result[TranslatedConfig, BadConfig]:
    """fairseq's data2vec-audio config (plain containers, omegaconf or ``args``) -> ``Data2VecAudioConfig``."""
    if ctc:
        return fine_tuned(meta, FINE_TUNED_ENCODER).bind(
            lambda both: _build(FINE_TUNED_ENCODER.section, both[1], both[0], layout)
        )
    return pre_trained(meta, PRETRAINED).bind(lambda enc: _build(PRETRAINED.section, enc, None, layout))


def _build(
    section: str, encoder: Translation, outer: Translation | None, layout: Layout
) -> Result[TranslatedConfig, BadConfig]:
    masking = outer is None or bool(outer.values["apply_mask"])
    kwargs = _encoder_kwargs(encoder, masking=masking)
    bad = layout_agrees(section, layout, kwargs, "w2v_encoder.w2v_model." if outer is not None else "")
    if bad is not None:
        return Failure(bad)
    if outer is None:
        return Success(TranslatedConfig(Data2VecAudioConfig(**kwargs), encoder.ignored))
    return ctc_head_kwargs(outer, layout).map(
        lambda head: TranslatedConfig(Data2VecAudioConfig(**{**kwargs, **head}), outer.ignored + encoder.ignored)
    )


def encoder_rules(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """The data2vec-audio encoder as fairseq names it, with the refusals for what the target lacks."""
    pre_ln = flag(fairseq_encoder_config(meta), "layer_norm_first")
    return with_upgrades(
        first_match(
            "data2vec-audio encoder",
            (
                *layer_norm_feature_extractor(TARGET),
                *STACKED_POS_CONV,
                refuse(
                    "encoder.pos_conv",
                    "single weight-norm positional conv (fairseq pos_conv_depth 1); "
                    f"{TARGET} has a stack of plain convs",
                ),
                when(
                    "layer_norm_first",
                    pre_ln,
                    refuse("encoder", f"pre-LN transformer (fairseq layer_norm_first); {TARGET} is post-LN only"),
                ),
                *TRANSFORMER_LAYERS,
                *projections(config),
                skip("_ema", "EMA teacher: used only for pre-training"),
                skip("final_proj", f"pre-training regression head; {TARGET} has no equivalent"),
            ),
        )
    )


def headless_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Pre-trained checkpoint -> Data2VecAudioModel (``final_proj.0`` renamed first, as in the seed)."""
    return seq(pass_unmatched(rename("final_proj.0", "final_proj")), encoder_rules(config, meta))


def ctc_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Fine-tuned checkpoint -> Data2VecAudioForCTC: the encoder under ``data2vec_audio.``, the head on top."""
    return first_match(
        "data2vec-audio CTC",
        (
            rename("w2v_encoder.proj", "lm_head", PARAMS),
            scoped("w2v_encoder.w2v_model", "data2vec_audio", encoder_rules(config, meta)),
        ),
    )


DATA2VEC_AUDIO_CTC = ModelSpec(
    **shipped("data2vec_audio_ctc"),
    stand_ins=STAND_INS,
    config_class=Data2VecAudioConfig,
    config_from_checkpoint=lambda meta, layout: translate_config(meta, layout, ctc=True),
    pipeline=ctc_pipeline,
    model_class=Data2VecAudioForCTC,
    extras=ctc_processor,
    export=ctc_exporter("data2vec_audio", extra=layer_norm_extractor),
    takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
)

DATA2VEC_AUDIO = ModelSpec(
    **shipped("data2vec_audio"),
    stand_ins=STAND_INS,
    config_class=Data2VecAudioConfig,
    config_from_checkpoint=lambda meta, layout: translate_config(meta, layout, ctc=False),
    pipeline=headless_pipeline,
    model_class=Data2VecAudioModel,
    extras=feature_extractor_writer,
    export=pretraining_exporter("data2vec_audio", ENCODER_FIELDS, layer_norm_extractor, criterion="ModelCriterion"),
)
