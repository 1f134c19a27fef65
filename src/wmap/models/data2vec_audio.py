"""data2vec-audio from fairseq: fine-tuned (CTC) -> ``Data2VecAudioForCTC``, pre-trained -> ``Data2VecAudioModel``.

Variants transformers' data2vec-audio cannot represent are refused by the plan:
a group-norm feature extractor, a single weight-norm positional conv, a pre-LN
transformer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Data2VecAudioConfig, PretrainedConfig

from wmap.config_fields import ConfigTable, Joint, Translated, ignore_all, integer
from wmap.fairseq import (
    STACKED_POS_CONV,
    TRANSFORMER_LAYERS,
    EncoderConfig,
    FineTunedConfig,
    ZeroHeads,
    fairseq_encoder_config,
    flag,
    layer_norm_feature_extractor,
    projections,
    wav2vec2_encoder_fields,
    with_upgrades,
)
from wmap.fairseq.dictionary import STAND_INS
from wmap.fairseq.export import ctc_exporter, pretraining_exporter
from wmap.fairseq.processor import ctc_processor, feature_extractor_writer
from wmap.models.base import ModelSpec, shipped
from wmap.pipeline import first_match, scoped, seq, when
from wmap.pipeline import optional as pass_unmatched
from wmap.transforms import PARAMS, Transform, refuse, rename, skip

TARGET = "Data2VecAudio"

DATA2VEC_OBJECTIVE = "data2vec pre-training objective (EMA teacher and its targets): not part of the encoder"


def positional_convs(values: Mapping[str, Any]) -> dict[str, int]:
    """fairseq's ``pos_conv_depth`` convs, whose kernels together span ``conv_pos`` (each at least 3)."""
    depth: int = values["pos_conv_depth"]
    return {"num_conv_pos_embeddings": depth, "conv_pos_kernel_size": max(3, values["conv_pos"] // depth)}


def positional_convs_back(config: Any) -> dict[str, int]:
    depth = int(config.num_conv_pos_embeddings)
    return {"pos_conv_depth": depth, "conv_pos": int(config.conv_pos_kernel_size) * depth}


ENCODER_FIELDS = (
    *wav2vec2_encoder_fields(
        conv_pos=Translated("conv_pos", integer(1, 4096), None, 128),
        pos_conv_depth=Joint("pos_conv_depth", integer(1, 64), positional_convs, positional_convs_back, 1),
    ),
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


LAYER_NORM_ONLY = {"extractor_mode": "layer_norm"}
"""What the way back spells beyond the table: Data2VecAudio has layer norms only (a group-norm extractor
is refused forward), which its config does not say (it has no ``feat_extract_norm``)."""


PRETRAINED = ConfigTable("fairseq cfg.model", ENCODER_FIELDS)
FINE_TUNED_ENCODER = ConfigTable("fairseq cfg.model.w2v_args.model", ENCODER_FIELDS)


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
    config_from_checkpoint=FineTunedConfig(EncoderConfig(FINE_TUNED_ENCODER, Data2VecAudioConfig)),
    pipeline=ctc_pipeline,
    model_class="Data2VecAudioForCTC",
    extras=ctc_processor,
    export=ctc_exporter("data2vec_audio", fields=ENCODER_FIELDS, extra=LAYER_NORM_ONLY),
    takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
)


def regression_head(config: PretrainedConfig) -> dict[str, tuple[int, ...]]:
    """fairseq's ``Data2VecAudioModel`` always builds its regression head (``final_proj``, the encoder's
    width both ways)."""
    width = int(config.hidden_size)
    return {"final_proj.weight": (width, width), "final_proj.bias": (width,)}


REGRESSION_HEAD = ZeroHeads(
    regression_head,
    "data2vec's regression head (pre-training only), which Data2VecAudioModel has none of: zeros, so "
    "pre-training resumes with a new head; fairseq's fine-tuning drops it",
)


def with_teacher(state: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """fairseq's ``Data2VecAudioModel`` makes its EMA teacher when a file is loaded and reads it from the
    file (``_ema``, the encoder's tensors by the encoder's own names: the written config keeps fairseq's
    ``ema_transformer_only``). A transformers model has no teacher: the file's is the encoder itself, as
    fairseq's ``make_ema_teacher`` starts pre-training (the same tensors, written once)."""
    teacher = {key.removeprefix("encoder."): tensor for key, tensor in state.items() if key.startswith("encoder.")}
    return {**state, "_ema": teacher}


NO_TEACHER = (
    "data2vec's EMA teacher and regression head, which Data2VecAudioModel has neither of: the file's teacher "
    "is the encoder itself and its head zeros, as pre-training from these weights starts (fairseq's fine-tuning, "
    "w2v_path, drops both)"
)
"""What a pre-trained export cannot hold, and what the file has instead (told after the export)."""

DATA2VEC_AUDIO = ModelSpec(
    **shipped("data2vec_audio"),
    stand_ins=STAND_INS,
    config_class=Data2VecAudioConfig,
    config_from_checkpoint=EncoderConfig(PRETRAINED, Data2VecAudioConfig),
    pipeline=headless_pipeline,
    model_class="Data2VecAudioModel",
    extras=feature_extractor_writer,
    export=pretraining_exporter(
        "data2vec_audio",
        ENCODER_FIELDS,
        LAYER_NORM_ONLY,
        criterion="ModelCriterion",
        leaves_out=NO_TEACHER,
        heads=REGRESSION_HEAD,
        tensors=with_teacher,
    ),
)
