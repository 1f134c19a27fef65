"""Reading original configs without the original packages: fairseq ``cfg``/``args``, s3prl ``Config``.

Configs arrive as plain containers, ``argparse.Namespace`` or omegaconf
objects (:func:`wmap.config_fields.get` reads any of them). The fields of
fairseq's wav2vec2-family encoder config (``Wav2Vec2Config``, which data2vec,
HuBERT and s3prl's distiller share) are one table here, written once; a family
overrides the entries whose meaning differs for its target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wmap.config_fields import (
    PROBABILITY,
    Checked,
    Decided,
    Field,
    Ignored,
    Translated,
    boolean,
    conv_layers,
    get,
    ignore_all,
    integer,
    one_of,
)

ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear", "swish": "swish"}
"""fairseq activation names -> transformers' names for the same function."""


def fairseq_model_config(meta: Mapping[str, Any]) -> object | None:
    """The model section of a fairseq checkpoint's config (``cfg.model`` or old-style ``args``)."""
    cfg = meta.get("cfg")
    model: object = get(cfg, "model", None) if cfg is not None else None
    if model is None:
        model = meta.get("args")
    return model


def fairseq_task_config(meta: Mapping[str, Any]) -> object | None:
    """The task section (``cfg.task``; old-style ``args`` holds task fields at the top level)."""
    cfg = meta.get("cfg")
    task: object = get(cfg, "task", None) if cfg is not None else None
    return task if task is not None else meta.get("args")


def fairseq_encoder_config(meta: Mapping[str, Any]) -> object | None:
    """The wav2vec2-style encoder's config: ``w2v_args.model`` when fine-tuned, else the model config."""
    model = fairseq_model_config(meta)
    inner: object = get(model, "w2v_args", None)
    if inner is not None:
        encoder: object = get(inner, "model", None)
        return encoder if encoder is not None else inner
    return model


def flag(container: object, name: str, default: bool = False) -> bool:
    """A boolean setting for choosing rules; anything but a boolean (or 0/1) counts as ``default``
    (the config translation has already refused such a value, or was replaced by ``--config``)."""
    read = boolean(get(container, name, default))
    value: bool = read.value_or(default)
    return value


PRETRAINING_OBJECTIVE = "pre-training objective (contrastive loss, quantizer, negatives): not part of the encoder"
MASKING_DETAIL = "SpecAugment detail transformers does not have (it masks fixed-length 'static' spans); training only"
TRAINING_ONLY = "training-only setting; inference is unchanged"
CONFORMER_ONLY = "setting of conformer / adapter layers, which layer_type 'transformer' (checked) does not use"


def activation(value: object) -> Any:
    """A fairseq activation name, as transformers names the same function."""
    return one_of(*ACTIVATIONS)(value).map(ACTIVATIONS.__getitem__)


def wav2vec2_encoder_fields(**overrides: Field) -> tuple[Field, ...]:
    """fairseq ``Wav2Vec2Config``'s 64 fields for a transformers wav2vec2-family target; ``overrides``
    replace entries by field name (a field whose meaning differs for the family's target)."""
    fields: list[Field] = [
        Translated("encoder_layers", integer(1, 512), "num_hidden_layers", 12),
        Translated("encoder_embed_dim", integer(1, 65536), "hidden_size", 768),
        Translated("encoder_ffn_embed_dim", integer(1, 262144), "intermediate_size", 3072),
        Translated("encoder_attention_heads", integer(1, 1024), "num_attention_heads", 12),
        Translated("activation_fn", activation, "hidden_act", "gelu"),
        Checked(
            "layer_type",
            ("transformer",),
            "transformers has transformer layers only",
            "transformer",
            one_of("transformer", "conformer", "trf_adp"),
        ),
        Translated("dropout", PROBABILITY, "hidden_dropout", 0.1),
        Translated("attention_dropout", PROBABILITY, "attention_dropout", 0.1),
        Translated("activation_dropout", PROBABILITY, "activation_dropout", 0.0),
        Translated("encoder_layerdrop", PROBABILITY, "layerdrop", 0.0),
        Translated("dropout_input", PROBABILITY, "feat_proj_dropout", 0.0),
        Ignored("dropout_features", "dropout on the pre-training targets' features: " + PRETRAINING_OBJECTIVE),
        Ignored("final_dim", "size of the pre-training projection: " + PRETRAINING_OBJECTIVE),
        Decided("layer_norm_first", "pre-LN or post-LN transformer: chosen (or refused) by the rules"),
        Translated("conv_feature_layers", conv_layers, None, "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"),
        Translated("conv_bias", boolean, "conv_bias", False),
        Decided("extractor_mode", "group-norm or layer-norm feature extractor: chosen (or refused) by the rules"),
        Ignored("feature_grad_mult", TRAINING_ONLY + " (gradient scaling of the feature extractor)"),
        Translated("mask_length", integer(1, 100_000), "mask_time_length", 10),
        Translated("mask_prob", PROBABILITY, "mask_time_prob", 0.65),
        Translated("mask_channel_length", integer(1, 100_000), "mask_feature_length", 10),
        Translated("mask_channel_prob", PROBABILITY, "mask_feature_prob", 0.0),
        Translated("conv_pos", integer(1, 4096), None, 128),
        Translated("conv_pos_groups", integer(1, 65536), "num_conv_pos_embedding_groups", 16),
        Translated("pos_conv_depth", integer(1, 64), None, 1),
        Checked(
            "crop_seq_to_multiple",
            (1,),
            "fairseq crops the features to a multiple; transformers does not",
            1,
            integer(1, 1_000_000),
        ),
        Ignored("max_positions", "fairseq's input-length limit; transformers' wav2vec2 models have none"),
        Ignored("required_seq_len_multiple", "padding multiple for efficient kernels; valid frames are unchanged"),
        Ignored("checkpoint_activations", TRAINING_ONLY + " (activation checkpointing)"),
        Ignored("fp16", TRAINING_ONLY + " (the dtype is kept from the tensors, or --dtype)"),
        *ignore_all(
            (
                "mask_selection",
                "mask_other",
                "no_mask_overlap",
                "mask_min_space",
                "require_same_masks",
                "mask_dropout",
                "mask_channel_before",
                "mask_channel_selection",
                "mask_channel_other",
                "no_mask_channel_overlap",
                "mask_channel_min_space",
            ),
            MASKING_DETAIL,
        ),
        *ignore_all(
            (
                "logit_temp",
                "quantize_targets",
                "quantize_input",
                "same_quantizer",
                "target_glu",
                "quantizer_depth",
                "quantizer_factor",
                "latent_vars",
                "latent_groups",
                "latent_dim",
                "num_negatives",
                "negatives_from_everywhere",
                "cross_sample_negatives",
                "codebook_negatives",
                "latent_temp",
            ),
            PRETRAINING_OBJECTIVE,
        ),
        *ignore_all(
            (
                "depthwise_conv_kernel_size",
                "attn_type",
                "pos_enc_type",
                "adp_num",
                "adp_dim",
                "adp_act_fn",
                "adp_trf_idx",
            ),
            CONFORMER_ONLY,
        ),
    ]
    unknown = set(overrides) - {f.source for f in fields}
    if unknown:
        raise ValueError(f"no such wav2vec2 encoder field: {sorted(unknown)}")
    return tuple(overrides.get(f.source, f) for f in fields)


def conv_kwargs(layers: tuple[tuple[int, int, int], ...]) -> dict[str, Any]:
    """A parsed ``conv_feature_layers`` as transformers' ``conv_dim`` / ``conv_kernel`` / ``conv_stride``."""
    return {
        "conv_dim": [c[0] for c in layers],
        "conv_kernel": [c[1] for c in layers],
        "conv_stride": [c[2] for c in layers],
    }
