"""DistilHuBERT from s3prl (``DistillerModel``) -> ``transformers.HubertModel``.

The s3prl checkpoint keeps the distiller's state dict under ``Distiller`` and
its config under ``Config.distiller``; the distillation prediction heads have
no counterpart in ``HubertModel`` and are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import HubertConfig, HubertModel, PretrainedConfig, Wav2Vec2FeatureExtractor

from wmap.errors import BadConfig
from wmap.models.base import ModelSpec, register
from wmap.models.source_config import encoder_kwargs, field, require_ints
from wmap.models.wav2vec2_family import (
    PROJECTIONS,
    TRANSFORMER_LAYERS,
    WEIGHT_NORM_POS_CONV,
    feature_extractor,
)
from wmap.pipeline import first_match, seq
from wmap.transforms import Layout, Transform, route_weight_norm, skip

SOURCE = "s3prl Config.distiller"
S3PRL_DEFAULTS = {
    "encoder_embed_dim": 768,
    "encoder_layers": 1,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "conv_pos": 128,
    "conv_pos_groups": 16,
}
"""s3prl's ``DistillerConfig`` defaults, used where the saved config leaves a value out."""
S3PRL_CONV_LAYERS = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"


def distiller_config(meta: Mapping[str, Any]) -> object | None:
    """The distiller section of an s3prl checkpoint's config."""
    config: object = field(meta.get("Config"), "distiller", None)
    return config


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[PretrainedConfig, BadConfig]:
    """s3prl's ``DistillerConfig`` (as saved: a dict) -> ``HubertConfig`` (the seed's ``convert_config``)."""
    cfg = distiller_config(meta)
    if cfg is None:
        return Failure(
            BadConfig("checkpoint", "Config.distiller", "an s3prl distiller config; or pass --config", "none")
        )
    shared = encoder_kwargs(
        SOURCE, cfg, "extractor_conv_feature_layers", defaults=S3PRL_DEFAULTS, conv_default=S3PRL_CONV_LAYERS
    )
    if isinstance(shared, Failure):
        return Failure(shared.failure())
    positional = require_ints(SOURCE, cfg, ("conv_pos", "conv_pos_groups"), S3PRL_DEFAULTS)
    if isinstance(positional, Failure):
        return Failure(positional.failure())
    ints = positional.unwrap()
    mode = str(field(cfg, "extractor_mode", "default"))
    if mode not in ("default", "layer_norm"):
        return Failure(BadConfig(SOURCE, "extractor_mode", "'default' (group norm) or 'layer_norm'", repr(mode)))
    return Success(
        HubertConfig(
            **shared.unwrap(),
            conv_bias=False,
            feat_extract_norm="layer" if mode == "layer_norm" else "group",
            feat_extract_activation="gelu",
            feat_proj_layer_norm=False,
            num_conv_pos_embeddings=ints["conv_pos"],
            num_conv_pos_embedding_groups=ints["conv_pos_groups"],
            do_stable_layer_norm=bool(field(cfg, "layer_norm_first", False)),
            apply_spec_augment=False,
            mask_time_prob=0.0,
            hidden_dropout=float(field(cfg, "dropout", 0.1)),
            attention_dropout=float(field(cfg, "attention_dropout", 0.1)),
            activation_dropout=float(field(cfg, "activation_dropout", 0.1)),
            feat_proj_dropout=0.0,
            final_dropout=0.0,
            layerdrop=0.0,
        )
    )


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """The shared wav2vec2-family rules; the prediction heads skipped; weight norm routed."""
    return seq(
        first_match(
            "distilhubert",
            (
                *feature_extractor(config),
                *WEIGHT_NORM_POS_CONV,
                *TRANSFORMER_LAYERS,
                *PROJECTIONS,
                skip("output_layer", "distillation prediction heads (training only); HubertModel has none"),
                skip("task_embedding", "distillation task embeddings (training only); HubertModel has none"),
            ),
        ),
        route_weight_norm(),
    )


def write_feature_extractor(config: PretrainedConfig, out_dir: Path) -> None:
    """The feature extractor the seed writes: 16 kHz, no normalisation, no attention mask."""
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0, do_normalize=False, return_attention_mask=False
    ).save_pretrained(out_dir)


DISTILHUBERT = register(
    ModelSpec(
        name="distilhubert",
        source="s3prl DistilHuBERT ({'Distiller', 'Config', ...} checkpoint)",
        target="transformers HubertModel",
        config_class=HubertConfig,
        config_from_checkpoint=translate_config,
        pipeline=pipeline,
        model_class=HubertModel,
        write_extras=write_feature_extractor,
    )
)
