"""fairseq's configs, read without fairseq: where a checkpoint keeps its sections (plain containers,
``argparse.Namespace`` or omegaconf), the 64 fields of ``Wav2Vec2Config`` as one table (a family
overrides the entries whose meaning differs for its target), the CTC fine-tuning wrapper's table, and
the keyword arguments every transformers wav2vec2-family config shares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from returns.result import Failure, Result, Success

from wmap.config_fields import (
    PROBABILITY,
    Checked,
    Composite,
    ConfigTable,
    Decided,
    Field,
    Ignored,
    Translated,
    Translation,
    ValueMap,
    boolean,
    conv_spec,
    divides,
    get,
    ignore_all,
    integer,
    number,
    one_of,
    optional,
    translate,
    translate_each,
)
from wmap.errors import BadConfig

# --- config -------------------------------------------------------------------------------------

ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear", "swish": "swish"}
"""fairseq activation names -> transformers' names for the same function."""


def fairseq_model_config(meta: Mapping[str, Any]) -> object | None:
    """The model section of a fairseq checkpoint's config (``cfg.model`` or old-style ``args``)."""
    return _section(meta, "model")


def fairseq_task_config(meta: Mapping[str, Any]) -> object | None:
    """The task section (``cfg.task``; old-style ``args`` holds task fields at the top level)."""
    return _section(meta, "task")


def _section(meta: Mapping[str, Any], name: str) -> object | None:
    found: object = get(meta.get("cfg"), name, None)
    return found if found is not None else meta.get("args")


def fairseq_encoder_config(meta: Mapping[str, Any]) -> object | None:
    """The wav2vec2-style encoder's config: ``w2v_args.model`` when fine-tuned, else the model config."""
    model = fairseq_model_config(meta)
    inner: object = get(model, "w2v_args", None)
    encoder: object = get(inner, "model", None)  # an old-style w2v_args is the namespace itself
    return model if inner is None else inner if encoder is None else encoder


def flag(container: object, name: str, default: bool = False) -> bool:
    """A boolean setting for choosing rules; anything but a boolean (or 0/1) counts as ``default``
    (the config translation has already refused such a value, or was replaced by ``--config``)."""
    read = boolean(get(container, name, default))
    value: bool = read.value_or(default)
    return value


PRETRAINING_OBJECTIVE = "pre-training objective (contrastive loss, quantizer, negatives): not part of the encoder"
MASKING_DETAIL = "SpecAugment detail transformers does not have (it masks fixed-length 'static' spans); training only"
MASKING_FIELDS = (
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
)
"""fairseq's SpecAugment settings beyond probability and length, which transformers does not have."""
TRAINING_ONLY = "training-only setting; inference is unchanged"
CONFORMER_ONLY = "setting of conformer or adapter layers, which the layer kinds this family reads (checked) do not use"


def activation(value: object) -> Any:
    """A fairseq activation name, as transformers names the same function."""
    return one_of(*ACTIVATIONS)(value).map(ACTIVATIONS.__getitem__)


EXTRACTOR_MODE = ValueMap(
    (("default", "group"), ("layer_norm", "layer")),
    "fairseq's extractor modes: group norm on the first conv layer, or layer norm on every one",
)
"""fairseq's ``extractor_mode`` <-> transformers' ``feat_extract_norm``: the one map, read both ways."""


WAV2VEC2_ENCODER: tuple[Field, ...] = (
    Translated("encoder_layers", integer(1, 512), "num_hidden_layers", 12),
    Translated("encoder_embed_dim", integer(1, 65536), "hidden_size", 768),
    Translated("encoder_ffn_embed_dim", integer(1, 262144), "intermediate_size", 3072),
    Translated(
        "encoder_attention_heads", integer(1, 1024), "num_attention_heads", 12, fits=divides("encoder_embed_dim")
    ),
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
    Translated("layer_norm_first", boolean, "do_stable_layer_norm", False),
    conv_spec("conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"),
    Translated("conv_bias", boolean, "conv_bias", False),
    Translated("extractor_mode", EXTRACTOR_MODE, "feat_extract_norm", "default"),
    Ignored("feature_grad_mult", TRAINING_ONLY + " (gradient scaling of the feature extractor)"),
    Translated("mask_length", integer(1, 100_000), "mask_time_length", 10),
    Translated("mask_prob", PROBABILITY, "mask_time_prob", 0.65),
    Translated("mask_channel_length", integer(1, 100_000), "mask_feature_length", 10),
    Translated("mask_channel_prob", PROBABILITY, "mask_feature_prob", 0.0),
    Translated("conv_pos", integer(1, 4096), "num_conv_pos_embeddings", 128),
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
        MASKING_FIELDS,
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
)
"""fairseq ``Wav2Vec2Config``'s 64 fields for a transformers wav2vec2-family target (the table; a family
changes entries with :func:`wav2vec2_encoder_fields`)."""


def overridden(fields: tuple[Field, ...], overrides: Mapping[str, Field], what: str) -> tuple[Field, ...]:
    """``fields`` with entries replaced by source name (a field whose meaning differs for a family's
    target); naming a field the table does not have is a bug in the family, raised at import."""
    unknown = set(overrides) - {f.source for f in fields}
    if unknown:
        raise ValueError(f"no such {what} field: {sorted(unknown)}")
    return tuple(overrides.get(f.source, f) for f in fields)


def wav2vec2_encoder_fields(**overrides: Field) -> tuple[Field, ...]:
    """:data:`WAV2VEC2_ENCODER` with ``overrides`` by field name."""
    return overridden(WAV2VEC2_ENCODER, overrides, "wav2vec2 encoder")


def encoder_rows(names: tuple[str, ...], **defaults: Any) -> tuple[Field, ...]:
    """The rows of :data:`WAV2VEC2_ENCODER` named ``names``, in that order, with other ``defaults`` by
    name: for a config that spells fairseq's encoder fields with defaults of its own (s3prl's
    ``DistillerConfig``), so that no row is written twice."""
    by_name = {f.source: f for f in WAV2VEC2_ENCODER}
    return tuple(attrs.evolve(by_name[n], default=defaults[n]) if n in defaults else by_name[n] for n in names)


def encoder_config_kwargs(encoder: Translation) -> dict[str, Any]:
    """The keyword arguments every transformers wav2vec2-family config takes, from a translation of
    :func:`wav2vec2_encoder_fields`: sizes, dropouts and masking, the conv layers (a conv spec row),
    the positional conv's width and groups, the extractor's norm mode and pre-/post-LN, all the
    table's; and fairseq's layer-norm epsilon."""
    return {**encoder.kwargs, "layer_norm_eps": 1e-5}


def layer_indices(layout: Mapping[str, Any], prefix: str, holding: str = "") -> set[int]:
    """The indices of the layers the checkpoint holds under ``prefix`` (``encoder.layers``), or of those
    holding a module named ``holding`` (``adapter_layer``)."""
    head = prefix + "."
    found = (
        key[len(head) :].split(".", 1)
        for key in layout
        if key.startswith(head) and (not holding or f".{holding}." in key)
    )
    return {int(parts[0]) for parts in found if parts[0].isdigit()}


def layers_agree(
    section: str, layout: Mapping[str, Any], prefix: str, configured: int, field: str = "encoder_layers"
) -> BadConfig | None:
    """A :class:`BadConfig` when the config's ``field`` (``encoder_layers``) is not the number of
    layers the checkpoint holds under ``prefix`` (``encoder.layers``), so a config that disagrees with
    its own file is refused before any model is built; ``None`` when they agree or the file has none."""
    indices = layer_indices(layout, prefix)
    if not indices or len(indices) == configured:
        return None
    return BadConfig(section, field, f"{len(indices)} layers (what the checkpoint holds)", str(configured))


def layout_agrees(
    section: str, layout: Mapping[str, Any], kwargs: Mapping[str, Any], root: str = "", conv_field: str = ""
) -> BadConfig | None:
    """The config's encoder against the file's own layout under ``root``: the transformer layers and
    the feature extractor's conv layers (``conv_field``, default ``conv_feature_layers``) are as many
    as the checkpoint holds."""
    return layers_agree(section, layout, root + "encoder.layers", kwargs["num_hidden_layers"]) or layers_agree(
        section,
        layout,
        root + "feature_extractor.conv_layers",
        len(kwargs["conv_dim"]),
        conv_field or "conv_feature_layers",
    )


FINE_TUNING_OVERRIDES = (
    "dropout_input",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "layerdrop",
    "mask_length",
    "mask_prob",
    "mask_channel_length",
    "mask_channel_prob",
)
"""Fields of a fine-tuning wrapper that fairseq copies into the pre-trained encoder's config when
fine-tuning starts (``w2v_args.model`` then holds the values in effect)."""

FROM_ENCODER_CONFIG = "the pre-trained encoder's config in w2v_args.model holds the value in effect"


def spec_augment(on: bool) -> dict[str, bool]:
    """Fine-tuned with masking or not; without, the target does not mask either (its mask embedding
    keeps its place)."""
    return {"apply_spec_augment": on}


def spec_augment_back(config: Any) -> bool:
    """Whether the target masks: ``Data2VecAudioConfig`` has no ``apply_spec_augment`` and masks
    whenever ``mask_time_prob`` > 0."""
    return bool(getattr(config, "apply_spec_augment", float(config.mask_time_prob) > 0))


def _wrapper_layer_type(*kinds: str) -> Checked:
    reason = "fairseq builds the encoder with the wrapper's layer_type (not w2v_args'); the target has {} layers"
    layers = optional(one_of("transformer", "conformer", "trf_adp"))
    return Checked("layer_type", (*kinds, None), reason.format(" or ".join(kinds)), None, layers)


def ctc_fine_tuning(*layer_types: str) -> ConfigTable:
    """:data:`CTC_FINE_TUNING` for an encoder of ``layer_types`` layers ("conformer"; "transformer" and
    "trf_adp", its layers with adapters): fairseq replaces the encoder config's ``layer_type`` with the
    wrapper's when it builds the model."""
    fields = tuple(_wrapper_layer_type(*layer_types) if f.source == "layer_type" else f for f in CTC_FINE_TUNING.fields)
    return ConfigTable(CTC_FINE_TUNING.section, fields)


WRAPPER_REPLACES = ("layer_type", "adp_num", "adp_dim", "adp_act_fn", "adp_trf_idx")
"""The encoder fields fairseq's CTC wrapper replaces with its own when it builds the model (its
``Wav2VecEncoder``; the wrapper's defaults are never ``None``, so always): the way back's wrapper
spells the encoder's values."""


CTC_FINE_TUNING = ConfigTable(
    "fairseq cfg.model (wav2vec_ctc / hubert_ctc)",
    (
        Decided("w2v_args", "the pre-trained encoder's config, translated by its own table"),
        Translated("final_dropout", PROBABILITY, "final_dropout", 0.0),
        Composite("apply_mask", boolean, spec_augment, spec_augment_back, False),
        Checked(
            "blank_weight",
            (0.0,),
            "fairseq adds it to the blank logit at inference; transformers cannot",
            0.0,
            number(-1e9, 1e9),
        ),
        Ignored("blank_mode", "how blank_weight (checked to be 0) is applied"),
        _wrapper_layer_type("transformer"),
        Translated("normalize", boolean, None, False),
        Ignored("w2v_path", "where fine-tuning loaded the pre-trained weights from; the checkpoint holds them"),
        Ignored(
            "no_pretrained_weights",
            "whether fine-tuning started from the pre-trained weights; the checkpoint holds them",
        ),
        Ignored("data", "the training data directory"),
        Ignored("encoder_embed_dim", "HubertCtcConfig's copy of the size; " + FROM_ENCODER_CONFIG),
        Ignored("autoregressive", "seq2seq decoding flag (fairseq#4917 adds it to HubertCtcConfig); CTC is not"),
        *ignore_all(
            (
                *FINE_TUNING_OVERRIDES,
                "checkpoint_activations",
                "adp_num",
                "adp_dim",
                "adp_act_fn",
                "adp_trf_idx",
            ),
            "copied into the pre-trained encoder's config when fine-tuning started; " + FROM_ENCODER_CONFIG,
        ),
        *ignore_all(MASKING_FIELDS, MASKING_DETAIL),
        *ignore_all(
            (
                "freeze_finetune_updates",
                "feature_grad_mult",
                "drop_path",
                "update_alibi",
                "offload_activations",
                "min_params_to_wrap",
                "ddp_backend",
                "zero_mask",
                "load_ema",
                "layer_decay",
                "freeze_regex",
            ),
            TRAINING_ONLY,
        ),
    ),
)
"""fairseq's ``Wav2Vec2CtcConfig`` (and ``HubertCtcConfig``, a subset): the fine-tuning wrapper around
the pre-trained encoder, whose own config is ``w2v_args.model``."""


CTC_HEAD = "w2v_encoder.proj.weight"
"""The CTC projection of a fine-tuned fairseq checkpoint (its rows are the target dictionary)."""


NO_CONFIG = BadConfig("checkpoint", "cfg.model", "a fairseq config (cfg or args); or pass --config", "none")
"""A checkpoint without fairseq's config: the translation needs one (or the user's ``--config``)."""


def pre_trained(meta: Mapping[str, Any], table: ConfigTable) -> Result[Translation, BadConfig]:
    """A pre-trained fairseq checkpoint's model config (``cfg.model`` or ``args``), read with ``table``."""
    model = fairseq_model_config(meta)
    return Failure(NO_CONFIG) if model is None else translate(table, model)


def fine_tuned(
    meta: Mapping[str, Any], encoder: ConfigTable, wrapper: ConfigTable | None = None
) -> Result[tuple[Translation, Translation], BadConfig]:
    """A fine-tuned fairseq checkpoint's two configs: the CTC wrapper (``wrapper``, by default
    :data:`CTC_FINE_TUNING`) and the pre-trained encoder's (``w2v_args.model``, read with ``encoder``)."""
    model = fairseq_model_config(meta)
    outer = wrapper or CTC_FINE_TUNING
    if model is None:
        return Failure(NO_CONFIG)
    if get(model, "w2v_args", None) is None:
        return Failure(BadConfig(outer.section, "w2v_args", "the pre-trained encoder's config", "missing"))
    read = translate_each(((outer, model), (encoder, fairseq_encoder_config(meta))))
    return read.map(lambda both: (both[0], both[1]))


def ctc_head_kwargs(outer: Translation, layout: Mapping[str, Any]) -> Result[dict[str, Any], BadConfig]:
    """The CTC head's config: the vocabulary size from the head's rows, the special ids after the blank
    swap (fairseq's blank ``<s>`` is index 0; transformers' is the pad token), and the wrapper's fields."""
    if CTC_HEAD not in layout:
        return Failure(BadConfig("checkpoint", CTC_HEAD, "a CTC projection (fine-tuned checkpoint)", "missing"))
    ids = {"vocab_size": layout[CTC_HEAD][0], "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    return Success({**outer.kwargs, **ids})
