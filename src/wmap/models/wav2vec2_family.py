"""The wav2vec2-family pieces, written once and reused by data2vec-audio, DistilHuBERT and the
speech encoder-decoder: conv feature extractor, positional conv, transformer layers, projections.

Source names are fairseq's (s3prl's distiller uses the same); target names are transformers'.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from wmap.pipeline import when
from wmap.transforms import EXACT, PARAMS, WEIGHT_NORM, Transform, refuse, rename, skip

CONV_LAYERS = (rename("feature_extractor.conv_layers.*.0", "feature_extractor.conv_layers.*.conv", PARAMS),)
"""The conv of every feature-extractor layer (``conv_layers.N.0``), weight and optional bias."""

LAYER_NORMS = rename("feature_extractor.conv_layers.*.2.1", "feature_extractor.conv_layers.*.layer_norm", PARAMS)
"""Layer-norm mode: every layer has ``conv_layers.N.2`` = (transpose, LayerNorm, transpose)."""

GROUP_NORM = rename("feature_extractor.conv_layers.0.2", "feature_extractor.conv_layers.0.layer_norm", PARAMS)
"""Group-norm mode: only layer 0 has a norm, a GroupNorm at ``conv_layers.0.2``."""


def feature_extractor(config: PretrainedConfig) -> tuple[Transform, ...]:
    """The conv feature extractor, its norms chosen by ``feat_extract_norm``."""
    group = getattr(config, "feat_extract_norm", "layer") == "group"
    return (*CONV_LAYERS, when("feat_extract_norm == 'group'", group, GROUP_NORM, LAYER_NORMS))


def layer_norm_feature_extractor(target: str) -> tuple[Transform, ...]:
    """For targets that only have layer norms (data2vec-audio): group-norm keys are refused."""
    return (
        *CONV_LAYERS,
        LAYER_NORMS,
        refuse(
            "feature_extractor.conv_layers.*.2",
            f"group-norm feature extractor (fairseq extractor_mode 'default'); {target} has layer norm only",
        ),
    )


STACKED_POS_CONV = (rename("encoder.pos_conv.*.0", "encoder.pos_conv_embed.layers.*.conv", PARAMS),)
"""data2vec's positional conv: a stack ``pos_conv.N.0`` of plain convs."""

WEIGHT_NORM_POS_CONV = (rename("encoder.pos_conv.0", "encoder.pos_conv_embed.conv", WEIGHT_NORM),)
"""wav2vec2/HuBERT's positional conv: one weight-norm conv ``pos_conv.0`` (route the pair afterwards)."""

ATTENTION = ("k_proj", "v_proj", "q_proj", "out_proj")

TRANSFORMER_LAYERS = (
    *(rename(f"encoder.layers.*.self_attn.{p}", f"encoder.layers.*.attention.{p}", PARAMS) for p in ATTENTION),
    rename("encoder.layers.*.self_attn_layer_norm", "encoder.layers.*.layer_norm", PARAMS),
    rename("encoder.layers.*.fc1", "encoder.layers.*.feed_forward.intermediate_dense", PARAMS),
    rename("encoder.layers.*.fc2", "encoder.layers.*.feed_forward.output_dense", PARAMS),
    rename("encoder.layers.*.final_layer_norm", "encoder.layers.*.final_layer_norm", PARAMS),
    rename("encoder.layer_norm", "encoder.layer_norm", PARAMS),
)
"""The transformer encoder: attention, its norm, feed-forward, final norm, and the encoder norm."""

PROJECTIONS = (
    rename("post_extract_proj", "feature_projection.projection", PARAMS),
    rename("layer_norm", "feature_projection.layer_norm", PARAMS),
    rename("mask_emb", "masked_spec_embed", EXACT),
)
"""Feature projection (and its layer norm, fairseq's top-level ``layer_norm``) and the mask embedding."""

PRETRAINING_HEADS = (
    skip("quantizer", "wav2vec2 pre-training quantizer; not used by the fine-tuned encoder"),
    skip("project_q", "wav2vec2 pre-training projection; not used by the fine-tuned encoder"),
    skip("final_proj", "wav2vec2 pre-training projection; not used by the fine-tuned encoder"),
    skip("target_glu", "wav2vec2 pre-training head; not used by the fine-tuned encoder"),
)
"""Pre-training-only modules a fine-tuned checkpoint may still carry."""
