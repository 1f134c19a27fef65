"""DistilHuBERT from s3prl (``DistillerModel``) -> ``transformers.HubertModel``.

The s3prl checkpoint keeps the distiller's state dict under ``Distiller`` and
its config under ``Config.distiller``; the distillation prediction heads have
no counterpart in ``HubertModel`` and are skipped.

The way back writes the same container. The heads are unrecoverable (the plan
names ``output_layer``); once the user accepts that, the written config says
what the file holds, a distiller without heads (``out_layer_type`` and
``task_emb_type`` ``none``), which s3prl's own ``PretrainedDistiller`` loads
strictly and runs with ``no_pred=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from returns.result import Result, Success
from transformers import HubertConfig, PretrainedConfig

from wmap.config_back import Back, Merged, written
from wmap.config_fields import (
    PROBABILITY,
    Checked,
    ConfigTable,
    conv_spec,
    ignore_all,
    section_at,
    text,
)
from wmap.errors import BadConfig
from wmap.fairseq import (
    EncoderConfig,
    constant,
    encoder_rows,
    identity_projection,
    wav2vec2_encoder_rules,
)
from wmap.fairseq.processor import FeatureExtractorSettings
from wmap.models.base import Exporter, ExportSource, ModelSpec, Writer, shipped
from wmap.pipeline import first_match, seq
from wmap.reverse import predicted_layout
from wmap.transforms import Layout, Transform, refuse, route_weight_norm, skip, weight_norm_hook_names

S3PRL_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"
DISTILLATION = "distillation objective (prediction heads, task embeddings, loss): HubertModel has none"

SHARED_WITH_FAIRSEQ = (
    "extractor_mode",
    "feature_grad_mult",
    "conv_pos",
    "conv_pos_groups",
    "encoder_layers",
    "encoder_embed_dim",
    "encoder_ffn_embed_dim",
    "encoder_attention_heads",
    "activation_fn",
    "layer_norm_first",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "encoder_layerdrop",
)
"""The distiller's fields that are fairseq's wav2vec 2.0 encoder's, read by its rows (s3prl's defaults)."""

DISTILLER = ConfigTable(
    "s3prl Config.distiller",
    (
        *encoder_rows(SHARED_WITH_FAIRSEQ, encoder_layers=1, activation_dropout=0.1),
        conv_spec("extractor_conv_feature_layers", S3PRL_CONV_LAYERS),
        Checked(
            "extractor_dropout", (0.0,), "HubertModel has no dropout inside the feature extractor", 0.0, PROBABILITY
        ),
        Checked(
            "attention_type", ("original",), "HubertModel has standard multi-head attention only", "original", text
        ),
        *ignore_all(
            (
                "final_dim",
                "out_layer_type",
                "out_layer_inter_dim",
                "n_tasks",
                "task_emb_type",
                "task_emb_size",
                "layer_emb_size",
                "loss_type",
                "feat_pen_loss",
                "cosine_loss",
                "pred_layer_id",
            ),
            DISTILLATION,
        ),
        *ignore_all(("init_teacher_conv_layers", "init_teacher_encoder_layers"), "how training was initialised"),
    ),
)
"""s3prl's ``DistillerConfig`` (as saved: a dict under ``Config.distiller``)."""


HUBERT_FIXED: dict[str, Any] = {
    "layer_norm_eps": 1e-5,
    "conv_bias": False,
    "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": False,
    "apply_spec_augment": False,
    "mask_time_prob": 0.0,
    "feat_proj_dropout": 0.0,
    "final_dropout": 0.0,
}
"""What s3prl's distiller always is, as ``HubertConfig`` spells it (the seed's ``convert_config``): no conv
bias, no layer norm before the projection, no masking."""


TRANSLATED = EncoderConfig(
    DISTILLER,
    HubertConfig,
    section_at("Config", "distiller"),
    extra=constant(HUBERT_FIXED),
    conv_field="extractor_conv_feature_layers",
)
"""s3prl's ``DistillerConfig`` (``Config.distiller``) -> ``HubertConfig``, checked against the file's layers."""


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """The shared wav2vec2-family rules; the prediction heads skipped; weight norm routed."""
    return seq(
        first_match(
            "distilhubert",
            (
                *wav2vec2_encoder_rules(config),
                skip("output_layer", "distillation prediction heads (training only); HubertModel has none"),
                skip("task_embedding", "distillation task embeddings (training only); HubertModel has none"),
            ),
        ),
        route_weight_norm(),
    )


def feature_extractor_files(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """The feature extractor the seed writes: 16 kHz, no normalisation, no attention mask."""
    return Success(FeatureExtractorSettings(16_000, do_normalize=False, return_attention_mask=False).write)


HEADS = "output_layer"
"""The distillation prediction heads the published DistilHuBERT has and ``HubertModel`` lacks."""

HEADLESS = {"task_emb_type": "none", "out_layer_type": "none", "n_tasks": 1, "pred_layer_id": [1]}
"""A distiller without prediction heads, as s3prl's ``DistillerConfig`` spells it."""


DISTILLER_BACK = Merged(Back(DISTILLER.fields, fixed=True), HEADLESS)
"""``Config.distiller`` for a ``HubertConfig``: :data:`DISTILLER`'s fields read back (the extractor's
mode and the conv spec among them), its single checked values, and no heads (:data:`HEADLESS`)."""


def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    """The distiller's names (the reversed rules, hook-style weight norm), the heads named
    unrecoverable, and its config."""
    layout = dict(weight_norm_hook_names(predicted_layout(source.pipeline, source.converted)))
    layout[HEADS] = ()  # named, not recovered
    return Success((layout, {"Config": {"distiller": written(DISTILLER_BACK, source.config)}}))


def way_back_only(config: PretrainedConfig) -> tuple[Transform, ...]:
    """What a ``HubertModel`` may hold that s3prl's distiller has no place for: the layer norm before
    the projection (refused: it changes what the model computes), SpecAugment's mask embedding (skipped:
    used only in training)."""
    rules: list[Transform] = []
    if getattr(config, "feat_proj_layer_norm", False):
        reason = "s3prl's distiller has no layer norm before the projection (the config's feat_proj_layer_norm)"
        rules.append(refuse("feature_projection.layer_norm", reason))
    rules.append(
        skip("masked_spec_embed", "SpecAugment's mask embedding: used only in training; the distiller has none")
    )
    return tuple(rules)


EXPORTER = Exporter(
    original,
    container=lambda state, meta, where: {"Distiller": dict(state), "Config": dict(meta["Config"])},
    describes="an s3prl distiller checkpoint (PretrainedDistiller loads it)",
    way_back_only=way_back_only,
)

DISTILHUBERT = ModelSpec(
    made=identity_projection,
    **shipped("distilhubert"),
    config_class=HubertConfig,
    config_from_checkpoint=TRANSLATED,
    pipeline=pipeline,
    model_class="HubertModel",
    extras=feature_extractor_files,
    export=EXPORTER,
)
