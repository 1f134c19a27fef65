"""fairseq speech-to-text (wav2vec2 encoder + conv adaptor + transformer decoder, ``xm_transformer``)
-> ``SpeechEncoderDecoderModel(Wav2Vec2Model, MBartForCausalLM)``.

Variants without an exact equivalent in transformers are refused by the plan,
naming the keys: an encoder projection without the layer norm the adapter
expects, the adaptor's extra projection layers or input layer norm, a
stacked positional conv, a post-LN decoder.

The way back (``wmap export``) writes fairseq's checkpoint with ``cfg.model``
rebuilt from the two sub-configs (the same field tables inverted): fairseq's
``build_model`` makes an ``XMTransformerModel`` from it that loads the state
strictly. The ``speech_to_text`` task's data (``config.yaml``, the target
dictionary) is not written: the directory holds no fairseq dictionary.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from returns.result import Failure, Result, Success
from transformers import (
    MBartConfig,
    PretrainedConfig,
    SpeechEncoderDecoderConfig,
    Wav2Vec2Config,
)

from wmap.config_back import Back, Made, Merged, Picked
from wmap.config_fields import (
    PROBABILITY,
    Checked,
    Composite,
    ConfigTable,
    Decided,
    Derived,
    Field,
    Ignored,
    Translated,
    Translation,
    boolean,
    divides,
    fixed_back,
    get,
    ignore_all,
    integer,
    kwargs_of,
    left_behind,
    optional,
    translate_each,
)
from wmap.errors import BadConfig
from wmap.fairseq import (
    DECODER_UPGRADES,
    FINE_TUNING_OVERRIDES,
    FUSED_ATTENTION,
    NO_CONFIG,
    PRETRAINING_HEADS,
    TRAINING_ONLY,
    TRANSFORMER_LAYERS,
    WEIGHT_NORM_POS_CONV,
    EncoderConfig,
    activation,
    fairseq_model_config,
    feature_extractor,
    flag,
    projections,
    wav2vec2_encoder_fields,
)
from wmap.fairseq.decoder import (
    NEGATIVE,
    decoder_tensors,
    plain_decoder_fields,
    transformer_decoder_rules,
    vocabulary_size,
)
from wmap.fairseq.dictionary import STAND_INS
from wmap.fairseq.export import (
    DATA,
    NORMALIZE,
    audio_task,
    encoder_back,
    fairseq_layout,
    mask_embedding,
    trainer_exporter,
)
from wmap.models.base import ExportSource, ModelSpec, TranslatedConfig, shipped
from wmap.models.wav2vec2_mbart_processor import extras
from wmap.pipeline import first_match, scoped, seq, upgrade, when
from wmap.transforms import (
    PARAMS,
    Layout,
    Transform,
    refuse,
    rename,
    route_weight_norm,
)

SOURCE = "fairseq cfg.model (xm_transformer)"
W2V = "encoder.w2v_encoder.w2v_model"
PROJECTION = "encoder.w2v_encoder.proj.weight"
POSITIONS = "decoder.embed_positions.weight"


W2V_ENCODER = ConfigTable(
    SOURCE + ".w2v_args.model",
    wav2vec2_encoder_fields(
        layer_norm_first=Translated("layer_norm_first", boolean, "do_stable_layer_norm", False),
        pos_conv_depth=Decided("pos_conv_depth", "a stacked positional conv is refused by the rules"),
    ),
)
"""The pre-trained wav2vec2 encoder (``w2v_args.model``)."""

FINE_TUNED_IN_ENCODER = (
    "copied into the encoder's config (w2v_args.model) when fine-tuning started, which holds the value in effect"
)


def adapter_layers(layers: int) -> dict[str, Any]:
    """fairseq's adaptor depth (0: none) as Wav2Vec2Config's switch and depth."""
    return {"add_adapter": layers > 0, "num_adapter_layers": max(layers, 1)}


def _adaptor_depth(encoder: Any) -> int:
    return int(encoder.num_adapter_layers) if encoder.add_adapter else 0


def _pads_by_one(kernel: Any, values: Mapping[str, Any]) -> str | None:
    return None if not values.get("adaptor_n_layers") or kernel == 3 else "3 (Wav2Vec2's adapter pads by 1)"


ADAPTOR: tuple[Field, ...] = (
    Composite("adaptor_n_layers", integer(0, 64), adapter_layers, _adaptor_depth, 3),
    Translated("adaptor_kernel_size", integer(1, 64), "adapter_kernel_size", 3, fits=_pads_by_one),
    Translated("adaptor_stride", integer(1, 64), "adapter_stride", 2),
)
"""The adaptor's fields of ``cfg.model``: ``Wav2Vec2Config``'s adapter, both ways."""

ONE_WIDTH = "xm_transformer's decoder has one width, decoder_embed_dim"

DECODER: tuple[Field, ...] = (
    Translated("decoder_embed_dim", integer(1, 65536), "d_model"),
    Translated("decoder_layers", integer(1, 512), "decoder_layers"),
    Translated("decoder_ffn_embed_dim", integer(1, 262144), "decoder_ffn_dim"),
    Translated(
        "decoder_attention_heads", integer(1, 1024), "decoder_attention_heads", fits=divides("decoder_embed_dim")
    ),
    Translated("no_scale_embedding", NEGATIVE, "scale_embedding", False),
    Translated("share_decoder_input_output_embed", boolean, "tie_word_embeddings", False),
    Translated("activation_fn", activation, "activation_function", "relu"),
    Translated("max_target_positions", integer(1, 1_000_000), "max_position_embeddings", 1024),
    Derived("decoder_input_dim", optional(integer(1, 65536)), lambda v: v["decoder_embed_dim"], ONE_WIDTH, None),
    Derived("decoder_output_dim", optional(integer(1, 65536)), lambda v: v["decoder_embed_dim"], ONE_WIDTH, None),
)
"""The decoder's fields of ``cfg.model``: ``MBartConfig``'s, both ways."""

DECODER_DROPOUTS = {
    "decoder_dropout": "dropout",
    "decoder_attention_dropout": "attention_dropout",
    "decoder_activation_dropout": "activation_dropout",
    "decoder_layerdrop": "decoder_layerdrop",
}
"""fairseq's decoder dropouts and MBartConfig's: not read (the converted decoder has the seed's 0), written back."""

XM_TRANSFORMER = ConfigTable(
    SOURCE,
    (
        Decided("w2v_args", "the pre-trained encoder's config, translated by its own table"),
        *ADAPTOR,
        *DECODER,
        Decided("adaptor_proj", "adaptor projection layers: refused by the rules"),
        Decided("adaptor_layernorm", "adaptor input layer norm: refused by the rules"),
        Ignored("adaptor_layerdrop", "training-only adaptor layer drop"),
        Decided("encoder_proj", "the encoder projection: mapped or refused by the rules"),
        Decided("decoder_normalize_before", "a post-LN decoder is refused by the rules"),
        Checked("decoder_learned_pos", (True,), "MBart has learned positions only", True),
        Checked("layernorm_embedding", (True,), "MBart always normalises the embeddings", True),
        *plain_decoder_fields("MBart"),
        Ignored("decoder_embed_path", "where training loaded pre-trained embeddings; the checkpoint holds them"),
        Ignored("quant_noise_pq", TRAINING_ONLY + " (quantization noise)"),
        Ignored("pooler_activation_fn", "classification pooler; not part of the decoder"),
        Ignored("pooler_dropout", "classification pooler; not part of the decoder"),
        *ignore_all(
            (*DECODER_DROPOUTS, "relu_dropout"),
            "decoder dropouts: the converted decoder has dropout 0 (inference settings, as the seed writes)",
        ),
        Ignored("encoder_embed_dim", "the encoder's width, read from w2v_args.model"),
        *ignore_all(
            (
                *FINE_TUNING_OVERRIDES,
                "mask_selection",
                "mask_other",
                "no_mask_overlap",
                "mask_channel_selection",
                "mask_channel_other",
                "no_mask_channel_overlap",
                "mask_channel_before",
                "feature_grad_mult",
                "checkpoint_activations",
                "offload_activations",
                "min_params_to_wrap",
                "apply_mask",
            ),
            FINE_TUNED_IN_ENCODER,
        ),
        Ignored("final_dropout", "dropout before the encoder projection; training only"),
        Ignored("normalize", "input normalisation: the feature extractor normalises (do_normalize)"),
        *ignore_all(
            (
                "w2v_path",
                "no_pretrained_weights",
                "load_pretrained_encoder_from",
                "load_pretrained_decoder_from",
                "remove_weight_norm",
            ),
            "how training loaded pre-trained parts; the checkpoint holds the weights",
        ),
        *ignore_all(
            (
                "freeze_finetune_updates",
                "w2v_freezing_updates",
                "finetune_w2v_params",
                "finetune_decoder_params",
                "max_positions",
            ),
            TRAINING_ONLY,
        ),
    ),
)
"""fairseq ``xm_transformer``'s model arguments (its ``add_args``), beside the encoder's."""


ENCODER = EncoderConfig(W2V_ENCODER, Wav2Vec2Config, root=W2V + ".")
"""The wav2vec2 encoder's keyword arguments, checked against its layers under fairseq's prefix."""


def encoder_config(encoder: Translation, model: Translation, layout: Layout) -> Result[Wav2Vec2Config, BadConfig]:
    """The wav2vec2 encoder (``w2v_args.model``) and the adaptor -> ``Wav2Vec2Config``; the adapter
    projects to the width of the encoder projection the file holds."""
    projected = layout.get(PROJECTION, (encoder.kwargs["hidden_size"],))[0]
    adapter = {**kwargs_of(ADAPTOR, model), "output_hidden_size": projected}
    return ENCODER.kwargs(encoder, layout).map(lambda kwargs: Wav2Vec2Config(**kwargs, **adapter))


MBART_DECODER = {
    "encoder_layers": 0,
    "is_decoder": True,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "decoder_layerdrop": 0.0,
}
"""What the seed's decoder config always is: decoder only, fairseq's token ids, inference dropouts."""


def decoder_config(model: Translation, layout: Layout) -> Result[MBartConfig, BadConfig]:
    """fairseq's transformer decoder -> ``MBartConfig`` (vocabulary and positions from the weights)."""
    # fairseq's learned positions hold two more rows (its padding offset)
    positions = {"max_position_embeddings": layout[POSITIONS][0] - 2} if POSITIONS in layout else {}
    return vocabulary_size(layout).map(
        lambda rows: MBartConfig(**{**kwargs_of(DECODER, model), "vocab_size": rows, **positions, **MBART_DECODER})
    )


COMPOSITE = {
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,  # the seed: tokenizer.eos_token_id
    "feature_extractor_type": "wav2vec2",
    "tokenizer_class": "mbart50",
}
"""The seed's settings of the composite config (fairseq's token ids, the processor's classes)."""


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """The composite config: ``cfg.model`` and its encoder's ``w2v_args.model``, each by its table."""
    model = fairseq_model_config(meta)
    if model is None:
        return Failure(NO_CONFIG)
    tables = ((XM_TRANSFORMER, model), (W2V_ENCODER, get(get(model, "w2v_args", None), "model", None)))
    # an old-style ``args`` namespace mixes model and training fields: only the model's are reported
    return translate_each(tables, report_unknown="cfg" in meta).bind(partial(_composite, layout=layout))


def _composite(read: tuple[Translation, ...], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    model, encoder = read
    return Result.do(
        _joined(enc, dec, read)
        for enc in encoder_config(encoder, model, layout)
        for dec in decoder_config(model, layout)
    )


def _joined(enc: Wav2Vec2Config, dec: MBartConfig, read: tuple[Translation, ...]) -> TranslatedConfig:
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.update(COMPOSITE)
    return TranslatedConfig(config, left_behind(read))


def encoder_rules(model: object, encoder: PretrainedConfig) -> tuple[Transform, ...]:
    """The wav2vec2 encoder under fairseq's prefix, and the adaptor (with refusals)."""
    adaptor_proj = flag(model, "adaptor_proj")
    wav2vec2 = first_match(
        "wav2vec2 encoder",
        (
            *feature_extractor_rules(),
            *WEIGHT_NORM_POS_CONV,
            refuse(
                "encoder.pos_conv",
                "stacked positional conv (fairseq pos_conv_depth > 1); Wav2Vec2 has one weight-norm conv",
            ),
            *TRANSFORMER_LAYERS,
            *projections(encoder),
            *PRETRAINING_HEADS,
        ),
    )
    return (
        scoped(W2V, "encoder", wav2vec2),
        rename("encoder.adaptor.layers.*", "encoder.adapter.layers.*.conv", PARAMS),
        refuse(
            "encoder.adaptor.layernorm", "adaptor input layer norm (--adaptor-layernorm); Wav2Vec2's adapter has none"
        ),
        refuse("encoder.adaptor", "adaptor projection layers (--adaptor-proj); Wav2Vec2's adapter has none"),
        when(
            "adaptor_proj (encoder projection followed by w2v_proj_ln)",
            adaptor_proj,
            first_match(
                "encoder projection",
                (
                    rename("encoder.w2v_encoder.proj", "encoder.adapter.proj", PARAMS),
                    rename("encoder.w2v_proj_ln", "encoder.adapter.proj_layer_norm", PARAMS),
                ),
            ),
            refuse(
                "encoder.w2v_encoder.proj",
                "encoder projection without the layer norm Wav2Vec2's adapter applies after it",
            ),
        ),
    )


def feature_extractor_rules() -> tuple[Transform, ...]:
    """Both norm modes: the target config decides which targets exist (see ``feature_extractor``)."""
    return feature_extractor(_LAYER) + feature_extractor(_GROUP)[1:]


_LAYER = Wav2Vec2Config(feat_extract_norm="layer")
_GROUP = Wav2Vec2Config(feat_extract_norm="group")


def decoder_rules(model: object) -> tuple[Transform, ...]:
    """fairseq's transformer decoder -> ``decoder.model.decoder``; the output projection as a tie or not."""
    shared = flag(model, "share_decoder_input_output_embed")
    pre_ln = flag(model, "decoder_normalize_before")
    return transformer_decoder_rules(shared, pre_ln, "decoder.model.decoder", "decoder.lm_head", "MBart")


OLDER_FILES = (DECODER_UPGRADES, upgrade(FUSED_ATTENTION.name, scoped(W2V, W2V, FUSED_ATTENTION.inner)))
"""fairseq's module upgrades of older files (``TransformerDecoder``'s numbered norms,
``MultiheadAttention``'s fused q/k/v, in the decoder and under the encoder's prefix). Optional:
current files pass unchanged. fairseq's ``XMTransformerModel`` itself overrides
``upgrade_state_dict`` with a no-op, so these are the modules' semantics, not its loader's."""


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """fairseq's upgrades of older files, the encoder, adaptor and decoder rules, then weight-norm
    routing for the positional conv."""
    model = fairseq_model_config(meta)
    if model is None:  # a bare state dict (``--config``), or the way back: the target config decides
        model = variant(config)
    return seq(
        *OLDER_FILES,
        first_match("wav2vec2 + mbart", (*encoder_rules(model, config.encoder), *decoder_rules(model))),
        route_weight_norm(),
    )


def variant(config: PretrainedConfig) -> dict[str, Any]:
    """The xm_transformer settings the rules choose from, as a composite config implies them: pre-LN
    (MBart), the tie, the projection (``adaptor_proj``: an adapter projecting to another width)."""
    encoder, decoder = config.encoder, config.decoder
    projects = bool(encoder.add_adapter) and encoder.output_hidden_size != encoder.hidden_size
    return {
        "decoder_normalize_before": True,
        "share_decoder_input_output_embed": bool(decoder.tie_word_embeddings),
        "adaptor_proj": projects,
        "encoder_proj": False,
    }


XM_FIXED: dict[str, Any] = {
    "_name": "xm_transformer",
    "arch": "xm_transformer",
    "w2v_path": None,
    "apply_mask": False,
    "adaptor_layernorm": False,
    "freeze_regex": None,
}
"""What the way back's ``cfg.model`` always is: the architecture, no pre-trained file to load, no
masking, no adaptor layer norm (refused forward); and ``freeze_regex``, which fairseq's
``Wav2VecEncoder`` reads when ``XMTransformerModel`` builds (a legacy model: no dataclass fills it in)."""


ENCODER_WIDTH = Translated("encoder_embed_dim", integer(1, 65536), "hidden_size")
"""The encoder's width, which ``cfg.model`` repeats (read back only: forward, ``w2v_args.model`` says it)."""

DECODER_DROPOUT_ROWS = tuple(Translated(ours, PROBABILITY, theirs) for ours, theirs in DECODER_DROPOUTS.items())
"""The decoder's dropouts, read back only (:data:`DECODER_DROPOUTS`)."""

W2V_MODEL = encoder_back("wav2vec2", W2V_ENCODER.fields, of="encoder")
"""The encoder's config (``w2v_args.model``): its table read back from the composite's encoder."""

XM_CFG = {
    "model": Merged(
        XM_FIXED,
        fixed_back(XM_TRANSFORMER.fields),
        {"w2v_args": {"task": audio_task("audio_pretraining"), "model": W2V_MODEL}},
        {"normalize": NORMALIZE, "data": DATA},
        Picked(W2V_MODEL, FINE_TUNING_OVERRIDES),
        Back((ENCODER_WIDTH, *ADAPTOR), of="encoder"),
        Back((*DECODER, *DECODER_DROPOUT_ROWS), of="decoder"),
        Made(variant),
    ),
    "task": {"_name": "speech_to_text", "data": DATA},
}
"""The way back's ``cfg``, from the forward tables: ``cfg.model`` of the encoder's (``w2v_args.model``, with
the fine-tuning overrides in effect), the adaptor's and the decoder's rows read back, and the variant the
config implies (:func:`variant`); the ``speech_to_text`` task over its data directory."""


def projects_without_layers(config: PretrainedConfig) -> Result[PretrainedConfig, BadConfig]:
    """An adapter that both projects and has layers is refused (fairseq's adaptor would then hold
    projection layers Wav2Vec2's adapter lacks)."""
    if not (variant(config)["adaptor_proj"] and config.encoder.num_adapter_layers > 0):
        return Success(config)
    found = f"output_hidden_size {config.encoder.output_hidden_size} and adapter layers"
    return Failure(BadConfig("config.json", "encoder.output_hidden_size", "hidden_size, or no adapter layers", found))


def composite_layout(source: ExportSource) -> dict[str, tuple[int, ...]]:
    """fairseq's names, the mask embedding as wide as the encoder."""
    return fairseq_layout(source, encoder=source.config.encoder)


EXPORTER = trainer_exporter(
    XM_CFG,
    "LabelSmoothedCrossEntropyCriterion",
    "a fairseq xm_transformer checkpoint (fairseq's build_model makes the model; the task's data is not written)",
    layout=composite_layout,
    checked=projects_without_layers,
    tensors=decoder_tensors,
    made=lambda config: mask_embedding(config.encoder),
)

WAV2VEC2_MBART = ModelSpec(
    **shipped("wav2vec2_mbart"),
    stand_ins=STAND_INS,
    config_class=SpeechEncoderDecoderConfig,
    config_from_checkpoint=translate_config,
    pipeline=pipeline,
    model_class="SpeechEncoderDecoderModel",
    extras=extras,
    takes_file="--tokenizer: the sentencepiece model to write an MBart50Tokenizer from",
    export=EXPORTER,
)
