"""fairseq HuBERT: pre-trained -> ``HubertModel``, fine-tuned (CTC) -> ``HubertForCTC``.

The pre-training heads (``final_proj`` onto the label embeddings,
``label_embs_concat``) are skipped with the reason; the label dictionaries in
``task_state`` are read as inert data and not needed. A stacked positional conv
and conformer layers are refused. Back, a file's pre-training task has no label
sets: fairseq builds the heads empty (:func:`empty_heads`, and HubertCtc's label
embeddings), the way back makes them so (:class:`~wmap.fairseq.ZeroHeads`), and fairseq's
loader takes the file strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import HubertConfig, PretrainedConfig

from wmap.config_back import Back, Merged
from wmap.config_fields import ConfigTable, Translated, boolean, ignore_all, integer
from wmap.fairseq import (
    ONE_POS_CONV,
    STAND_INS,
    EncoderConfig,
    FineTunedConfig,
    ZeroHeads,
    audio_task,
    constant,
    ctc_exporter,
    ctc_processor,
    ctc_rules,
    encoder_back,
    encoder_rules,
    feature_extractor_writer,
    identity_projection,
    trainer_exporter,
    wav2vec2_encoder_fields,
    with_upgrades,
)
from wmap.models.base import ModelSpec, shipped
from wmap.pipeline import first_match, seq
from wmap.transforms import Transform, route_weight_norm, skip

FIELDS = (
    *wav2vec2_encoder_fields(pos_conv_depth=ONE_POS_CONV),
    Translated("conv_pos_batch_norm", boolean, "conv_pos_batch_norm", False),
    *ignore_all(("label_rate", "untie_final_proj", "skip_masked", "skip_nomask"), "HuBERT's pre-training objective"),
)
"""fairseq's ``HubertConfig``: wav2vec 2.0's encoder fields, the batch-norm positional conv, the objective."""

PRETRAINED = ConfigTable("fairseq cfg.model (hubert)", FIELDS)
FINE_TUNED_ENCODER = ConfigTable("fairseq cfg.model.w2v_args.model (hubert)", FIELDS)

FIXED: dict[str, Any] = {"feat_proj_layer_norm": True}
"""fairseq's HuBERT normalises the features before projecting them (its top-level ``layer_norm``)."""


PRETRAINING_LABELS = {"label_rate": -1.0}
"""The pre-training labels' frame rate (fairseq's ``HubertConfig.label_rate`` interpolates it from the
task): fairseq's default, as the labels are not part of the transformers model."""

FINAL_DIM = Translated("final_dim", integer(0, 65536), "hidden_size")
"""The width of the pre-training projection and label embeddings, read back: not part of the
transformers model, so unknown; the encoder's width, as fairseq's default ``final_dim`` 0 means."""

PRETRAINING = Merged(Back((FINAL_DIM,)), PRETRAINING_LABELS)
"""What fairseq's ``HubertConfig`` needs beyond the encoder: the projection's width, the labels' rate."""


NO_LABELS: dict[str, Any] = {"labels": [], **PRETRAINING_LABELS}
"""The pre-training task of a written file: no label sets (fairseq then builds the heads empty)."""

NO_LABEL_SETS = (
    "HuBERT's pre-training heads, empty: the written file has no label sets (its task's labels: []), for "
    "the transformers model holds none; fairseq's fine-tuning drops them, pre-training needs new labels"
)


def empty_heads(config: PretrainedConfig) -> dict[str, tuple[int, ...]]:
    """fairseq's ``HubertModel`` for no label sets (the task's ``labels: []``, the projection untied)
    holds its pre-training heads empty: a projection to nothing and no label embeddings. The way back
    writes them so, for HubertModel has none to give and fairseq's model cannot be built without them."""
    width = int(config.hidden_size)
    return {"final_proj.weight": (0, width), "final_proj.bias": (0,), "label_embs_concat": (0, width)}


def ctc_empty_heads(config: PretrainedConfig) -> dict[str, tuple[int, ...]]:
    """HubertCtc's encoder keeps the label embeddings (fairseq's fine-tuning removes the projection
    only): empty, for no label sets."""
    return {"w2v_encoder.w2v_model.label_embs_concat": empty_heads(config)["label_embs_concat"]}


EMPTY_HEADS = ZeroHeads(empty_heads, NO_LABEL_SETS)
CTC_EMPTY_HEADS = ZeroHeads(ctc_empty_heads, NO_LABEL_SETS)


FAIRSEQ_CFG = {
    "model": encoder_back("hubert", FIELDS, Merged(PRETRAINING, {"untie_final_proj": True})),
    "task": audio_task("hubert_pretraining", **NO_LABELS),
}
"""The ``cfg`` of a pre-trained export: ``hubert`` (the table read back, an untied projection) and the
``hubert_pretraining`` task with no label sets, which builds the model with no label dictionary."""


PRETRAINING_HEADS = (
    skip("final_proj", "HuBERT pre-training projection onto the label embeddings; HubertModel has none"),
    skip("label_embs_concat", "HuBERT pre-training label embeddings; HubertModel has none"),
)


def pretrained_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    rules = first_match("hubert", (*encoder_rules(config, "HubertModel"), *PRETRAINING_HEADS))
    return seq(with_upgrades(rules), route_weight_norm())


HUBERT = ModelSpec(
    made=identity_projection,
    **shipped("hubert"),
    stand_ins=STAND_INS,
    config_class=HubertConfig,
    config_from_checkpoint=EncoderConfig(PRETRAINED, HubertConfig, extra=constant(FIXED)),
    pipeline=pretrained_pipeline,
    model_class="HubertModel",
    extras=feature_extractor_writer,
    export=trainer_exporter(
        FAIRSEQ_CFG,
        "HubertCriterion",
        layout=EMPTY_HEADS.layout,
        made=EMPTY_HEADS.made,
    ),
)

HUBERT_CTC = ModelSpec(
    made=identity_projection,
    **shipped("hubert_ctc"),
    stand_ins=STAND_INS,
    config_class=HubertConfig,
    config_from_checkpoint=FineTunedConfig(EncoderConfig(FINE_TUNED_ENCODER, HubertConfig, extra=constant(FIXED))),
    pipeline=lambda config, meta: ctc_rules(config, "hubert", "HubertForCTC", PRETRAINING_HEADS),
    model_class="HubertForCTC",
    extras=ctc_processor,
    takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
    export=ctc_exporter(
        "hubert",
        "hubert_ctc",
        "hubert_pretraining",
        task_fields=NO_LABELS,
        extra=PRETRAINING,
        layout=CTC_EMPTY_HEADS.layout,
        made=CTC_EMPTY_HEADS.made,
    ),
)
