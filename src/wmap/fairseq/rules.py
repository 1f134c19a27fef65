"""fairseq's wav2vec2-family names as rules for transformers' wav2vec2-family names: the conv feature
extractor in both norm modes, the positional conv in its three forms, the transformer and conformer
layers, the projections, targets made from the config, fairseq's load-time upgrades, and the
pre-training heads to skip."""

from __future__ import annotations

from collections.abc import Callable

from transformers import PretrainedConfig

from wmap.pipeline import first_match, seq, upgrade, when
from wmap.plan import MakeRule
from wmap.transforms import BATCH_NORM, EXACT, PARAMS, WEIGHT_NORM, Transform, gather, refuse, rename, skip, split
from wmap.values import Identity, Zeros

# --- rules --------------------------------------------------------------------------------------

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


def _feed_forward(name: str) -> tuple[Transform, ...]:
    at = f"encoder.layers.*.{name}"
    return (
        rename(f"{at}.layer_norm", f"encoder.layers.*.{name}_layer_norm", PARAMS),
        rename(f"{at}.w_1", f"{at}.intermediate_dense", PARAMS),
        rename(f"{at}.w_2", f"{at}.output_dense", PARAMS),
    )


CONFORMER_CONV = ("layer_norm", "pointwise_conv1", "depthwise_conv", "pointwise_conv2")

CONFORMER_LAYERS = (
    *_feed_forward("ffn1"),
    rename("encoder.layers.*.self_attn_layer_norm", "encoder.layers.*.self_attn_layer_norm", PARAMS),
    *(
        rename(f"encoder.layers.*.self_attn.linear_{p}", f"encoder.layers.*.self_attn.linear_{p}", PARAMS)
        for p in ("q", "k", "v", "out", "pos")
    ),
    *(
        rename(f"encoder.layers.*.self_attn.{p}", f"encoder.layers.*.self_attn.{p}", EXACT)
        for p in ("pos_bias_u", "pos_bias_v")
    ),
    gather("encoder.layers.*.self_attn.rotary_emb.inv_freq", "encoder.embed_positions.inv_freq", EXACT),
    *(rename(f"encoder.layers.*.conv_module.{p}", f"encoder.layers.*.conv_module.{p}", PARAMS) for p in CONFORMER_CONV),
    rename("encoder.layers.*.conv_module.batch_norm", "encoder.layers.*.conv_module.batch_norm", BATCH_NORM),
    *_feed_forward("ffn2"),
    rename("encoder.layers.*.final_layer_norm", "encoder.layers.*.final_layer_norm", PARAMS),
    rename("encoder.layer_norm", "encoder.layer_norm", PARAMS),
)
"""fairseq's conformer encoder (ESPnet attention) as transformers' ``Wav2Vec2Conformer`` names it: two
half-step feed-forwards, attention with relative (``linear_pos``, ``pos_bias_u/v``) or rotary positions,
the conv module. fairseq keeps one identical rotary ``inv_freq`` per layer, transformers one for the
encoder: gathered, every copy checked equal when apply runs."""


def masks(config: PretrainedConfig) -> bool:
    """Whether a transformers wav2vec2-family model of ``config`` holds ``masked_spec_embed``: only
    when SpecAugment is on (``mask_time_prob`` or ``mask_feature_prob`` above 0)."""
    return float(getattr(config, "mask_time_prob", 0.0)) > 0 or float(getattr(config, "mask_feature_prob", 0.0)) > 0


Makes = Callable[[PretrainedConfig], tuple[MakeRule, ...]]
"""What a family makes for a target config (:attr:`wmap.models.base.ModelSpec.made`)."""


def made_by(*makers: Makes) -> Makes:
    """What each of ``makers`` makes, together (the identity projection and a family's own)."""

    def made(config: PretrainedConfig) -> tuple[MakeRule, ...]:
        return tuple(rule for maker in makers for rule in maker(config))

    return made


def identity_projection(config: PretrainedConfig) -> tuple[MakeRule, ...]:
    """fairseq builds no ``post_extract_proj`` where the conv extractor's width equals the encoder's;
    transformers always projects (transformers#28174): there the projection is made the identity
    (weight ``I``, bias 0), which computes what fairseq computes. Elsewhere nothing is made."""
    width = int(config.hidden_size)
    if int(config.conv_dim[-1]) != width:
        return ()
    reason = f"fairseq has no post_extract_proj where conv_dim[-1] = hidden_size = {width}: the identity"
    return (
        MakeRule("feature_projection.projection.weight", Identity(width), reason),
        MakeRule("feature_projection.projection.bias", Zeros((width,)), reason),
    )


def always_masks(config: PretrainedConfig) -> bool:
    """For a target that holds ``masked_spec_embed`` whatever its config says (``UniSpeechSatModel``)."""
    return True


def projections(config: PretrainedConfig, masked: Callable[[PretrainedConfig], bool] = masks) -> tuple[Transform, ...]:
    """Feature projection (and its layer norm, fairseq's top-level ``layer_norm``) and the mask
    embedding, which goes to ``masked_spec_embed`` where the target has one (``masked``: by default
    where its config masks, :func:`masks`), and is skipped with the reason where it has none."""
    mask = when(
        "the target holds masked_spec_embed (its config masks: mask_time_prob or mask_feature_prob above 0)",
        masked(config),
        rename("mask_emb", "masked_spec_embed", EXACT),
        skip("mask_emb", "SpecAugment's mask embedding (training only); the target config masks nothing"),
    )
    return (
        rename("post_extract_proj", "feature_projection.projection", PARAMS),
        rename("layer_norm", "feature_projection.layer_norm", PARAMS),
        mask,
    )


PRETRAINING_HEADS = (
    skip("quantizer", "wav2vec2 pre-training quantizer; not used by the fine-tuned encoder"),
    skip("project_q", "wav2vec2 pre-training projection; not used by the fine-tuned encoder"),
    skip("final_proj", "wav2vec2 pre-training projection; not used by the fine-tuned encoder"),
    skip("target_glu", "wav2vec2 pre-training head; not used by the fine-tuned encoder"),
)
"""Pre-training-only modules a fine-tuned checkpoint may still carry."""


def fused_attention(attention: str) -> tuple[Transform, ...]:
    """An older file's fused ``{attention}.in_proj_weight``/``in_proj_bias`` -> q, k, v (equal thirds)."""
    return tuple(
        split(f"{attention}.in_proj_{leaf}", tuple(f"{attention}.{p}.{leaf}" for p in ("q_proj", "k_proj", "v_proj")))
        for leaf in ("weight", "bias")
    )


FUSED_ATTENTION = upgrade(
    "fairseq's fused attention (older checkpoints)",
    first_match("in_proj -> q/k/v", fused_attention("encoder.layers.*.self_attn")),
)
"""Older fairseq files keep q, k and v fused in ``in_proj_weight``/``in_proj_bias``; fairseq's
``MultiheadAttention.upgrade_state_dict_named`` splits them in equal thirds when it loads them. This
does the same, so such files convert without fairseq (the way back writes the current format)."""

DECODER_LAYER_NORMS = (("0", "self_attn_layer_norm"), ("1", "encoder_attn_layer_norm"), ("2", "final_layer_norm"))
"""``TransformerDecoder.upgrade_state_dict_named``'s map of an older layer's numbered norms."""

DECODER_UPGRADES = upgrade(
    "fairseq's older transformer decoder (fused attention, numbered layer norms)",
    first_match(
        "older decoder layers",
        (
            *fused_attention("decoder.layers.*.self_attn"),
            *fused_attention("decoder.layers.*.encoder_attn"),
            *(
                rename(f"decoder.layers.*.layer_norms.{n}", f"decoder.layers.*.{name}", PARAMS)
                for n, name in DECODER_LAYER_NORMS
            ),
        ),
    ),
)
"""Older files of fairseq's transformer decoder: attention fused as in :data:`FUSED_ATTENTION`, and
each layer's norms as ``layer_norms.0/1/2``, which fairseq renames when it loads them."""


def with_upgrades(rules: Transform) -> Transform:
    """``rules`` preceded by fairseq's load-time upgrades (:data:`FUSED_ATTENTION`)."""
    return seq(FUSED_ATTENTION, rules)


BATCH_NORM_POS_CONV = (
    rename("encoder.pos_conv.0", "encoder.pos_conv_embed.batch_norm", BATCH_NORM),
    rename("encoder.pos_conv.1", "encoder.pos_conv_embed.conv", PARAMS),
)
"""The batch-norm positional conv (fairseq ``conv_pos_batch_norm``): ``pos_conv.0`` a BatchNorm1d,
``pos_conv.1`` a plain conv (transformers' ``conv_pos_batch_norm``)."""


def wav2vec2_encoder_rules(
    config: PretrainedConfig,
    *,
    positional: tuple[Transform, ...] = (),
    layers: tuple[Transform, ...] = TRANSFORMER_LAYERS,
    masked: Callable[[PretrainedConfig], bool] = masks,
) -> tuple[Transform, ...]:
    """The whole fairseq wav2vec2-style encoder as rules for a transformers wav2vec2-family model:
    feature extractor (norm mode from ``config``), the positional conv (``positional``; by default
    weight-norm or batch-norm as ``config.conv_pos_batch_norm`` says), the layers (``layers``:
    :data:`TRANSFORMER_LAYERS`, or :data:`CONFORMER_LAYERS`) and projections (``masked``: whether the
    target holds a mask embedding, :func:`projections`). Follow with
    :func:`~wmap.transforms.route_weight_norm` for the weight-norm pair."""
    if not positional:
        positional = BATCH_NORM_POS_CONV if getattr(config, "conv_pos_batch_norm", False) else WEIGHT_NORM_POS_CONV
    return (*feature_extractor(config), *positional, *layers, *projections(config, masked))
