"""fairseq data2vec 2.0 audio (``data2vec_multi``, audio modality) -> ``Data2VecAudioModel``, both ways.

Its encoder is data2vec-audio's under other names: the conv extractor (``local_encoder``), the
feature projection (``project_features``), a stack of positional convs, the encoder norm
(``context_encoder.norm``, before the layers: post-LN), then the prenet blocks and the blocks as one
sequence of layers, each with q, k and v fused in ``attn.qkv`` (split in thirds; joined on the way
back). The EMA teacher (``_ema``) and the pre-training decoder are training only.

What ``Data2VecAudioModel`` cannot represent is refused, naming the field: ALiBi attention biases
(``use_alibi_encoder``: the released base and large audio models use them, so this family converts
models trained without), extra tokens, a pre-LN encoder, a layer norm before the positional convs,
a group-norm extractor. The layer norms all take ``norm_eps`` except the feature projection's,
which is fairseq's default 1e-5: with ``norm_eps`` 1e-5 (the released configs) the outputs agree
within 1e-5; with another the floor is set by that one norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from returns.result import Failure, Result, Success
from transformers import Data2VecAudioConfig, PretrainedConfig

from wmap.config_back import Back, Merged
from wmap.config_fields import (
    PROBABILITY,
    Checked,
    ConfigTable,
    Decided,
    Ignored,
    Joint,
    Translated,
    Translation,
    boolean,
    conv_spec,
    divides,
    get,
    ignore_all,
    integer,
    left_behind,
    number,
    one_of,
    optional,
    translate_each,
)
from wmap.errors import BadConfig
from wmap.fairseq import (
    CTC_FINE_TUNING,
    MASKING_DETAIL,
    NO_CONFIG,
    TRAINING_ONLY,
    ctc_head_kwargs,
    fairseq_encoder_config,
    fairseq_model_config,
    layers_agree,
)
from wmap.fairseq.dictionary import STAND_INS
from wmap.fairseq.export import audio_task, ctc_exporter, fairseq_layout, nothing_made, trainer_exporter
from wmap.fairseq.processor import ctc_processor, feature_extractor_writer
from wmap.models.base import ModelSpec, TranslatedConfig, shipped
from wmap.pipeline import first_match, scoped
from wmap.plan import MakeRule
from wmap.transforms import PARAMS, Layout, Transform, rename, skip, split
from wmap.values import Zeros

OBJECTIVE = "data2vec 2.0 pre-training objective (EMA teacher, decoder, targets): not part of the encoder"
ALIBI = "ALiBi setting; use_alibi_encoder (checked) is off"


def mlp_width(values: Mapping[str, Any]) -> dict[str, int]:
    """Each block's MLP width: ``mlp_ratio`` times the width."""
    return {"intermediate_size": round(values["embed_dim"] * values["mlp_ratio"])}


def mlp_ratio_back(config: Any) -> dict[str, float]:
    return {"mlp_ratio": int(config.intermediate_size) / int(config.hidden_size)}


def positional_kernel(values: Mapping[str, Any]) -> dict[str, int]:
    """The positional convs' kernel: fairseq's ``max(3, conv_pos_width // conv_pos_depth)``."""
    return {"conv_pos_kernel_size": max(3, values["conv_pos_width"] // values["conv_pos_depth"])}


def positional_width_back(config: Any) -> dict[str, int]:
    return {"conv_pos_width": int(config.conv_pos_kernel_size) * int(config.num_conv_pos_embeddings)}


MODEL = ConfigTable(
    "fairseq cfg.model (data2vec_multi)",
    (
        Translated("depth", integer(1, 512), None, 8),
        Translated("num_heads", integer(1, 1024), "num_attention_heads", 12, fits=divides("embed_dim")),
        Translated("embed_dim", integer(1, 65536), "hidden_size", 768),
        Joint("mlp_ratio", number(0.01, 64.0), mlp_width, mlp_ratio_back, 4.0),
        Translated("norm_eps", number(1e-12, 1.0), "layer_norm_eps", 1e-6),
        Checked("norm_affine", (True,), "Data2VecAudio's layer norms have weights and biases", True),
        Translated("encoder_dropout", PROBABILITY, "hidden_dropout", 0.1),
        Translated("attention_dropout", PROBABILITY, "attention_dropout", 0.1),
        Translated("activation_dropout", PROBABILITY, "activation_dropout", 0.0),
        Translated("dropout_input", PROBABILITY, "feat_proj_dropout", 0.0),
        Translated("layerdrop", PROBABILITY, "layerdrop", 0.0),
        Checked("layer_norm_first", (False,), "Data2VecAudio's layers normalise after attention (post-LN)", False),
        Ignored("post_mlp_drop", TRAINING_ONLY + " (dropout after each block's MLP)"),
        *ignore_all(("start_drop_path_rate", "end_drop_path_rate"), TRAINING_ONLY + " (stochastic depth)"),
        Decided("modalities", "the audio modality's settings, read by their own table"),
        Checked(
            "supported_modality",
            ("AUDIO",),
            "this family converts the audio encoder",
            None,
            optional(one_of("AUDIO", "IMAGE", "TEXT")),
        ),
        *ignore_all(
            (
                "loss_beta",
                "loss_scale",
                "average_top_k_layers",
                "end_of_block_targets",
                "clone_batch",
                "layer_norm_target_layer",
                "batch_norm_target_layer",
                "instance_norm_target_layer",
                "instance_norm_targets",
                "layer_norm_targets",
                "ema_decay",
                "ema_same_dtype",
                "log_norms",
                "ema_end_decay",
                "ema_anneal_end_step",
                "ema_encoder_only",
                "max_update",
                "shared_decoder",
                "min_target_var",
                "min_pred_var",
                "mae_init",
                "seed",
                "skip_ema",
                "cls_loss",
                "recon_loss",
                "d2v_loss",
                "decoder_group",
            ),
            OBJECTIVE,
        ),
    ),
)
"""fairseq's ``Data2VecMultiConfig``: the shared blocks' sizes, dropouts and norms."""

AUDIO = ConfigTable(
    "fairseq cfg.model.modalities.audio (data2vec_multi)",
    (
        Checked("type", ("AUDIO",), "the audio modality", "AUDIO", one_of("AUDIO", "IMAGE", "TEXT")),
        Translated("prenet_depth", integer(0, 512), None, 4),
        *ignore_all(("prenet_layerdrop", "prenet_dropout"), TRAINING_ONLY + " (of the prenet blocks)"),
        *ignore_all(("start_drop_path_rate", "end_drop_path_rate"), TRAINING_ONLY + " (stochastic depth)"),
        Checked("num_extra_tokens", (0,), "Data2VecAudio has no extra tokens before the frames", 0, integer(0, 4096)),
        Ignored("init_extra_token_zero", "how extra tokens (checked: none) start"),
        Translated("mask_prob", PROBABILITY, "mask_time_prob", 0.7),
        Translated("mask_length", integer(1, 100_000), "mask_time_length", 5),
        Translated("mask_channel_prob", PROBABILITY, "mask_feature_prob", 0.0),
        Translated("mask_channel_length", integer(1, 100_000), "mask_feature_length", 64),
        *ignore_all(
            (
                "mask_noise_std",
                "mask_prob_min",
                "inverse_mask",
                "mask_prob_adjust",
                "keep_masked_pct",
                "add_masks",
                "remove_masks",
                "mask_dropout",
                "encoder_zero_mask",
            ),
            MASKING_DETAIL,
        ),
        *ignore_all(("ema_local_encoder", "local_grad_mult"), TRAINING_ONLY),
        Checked(
            "use_alibi_encoder",
            (False,),
            "ALiBi attention biases, which Data2VecAudio lacks (the released data2vec 2.0 audio models use them)",
            False,
            boolean,
        ),
        *ignore_all(
            (
                "alibi_scale",
                "learned_alibi",
                "alibi_max_pos",
                "learned_alibi_scale",
                "learned_alibi_scale_per_head",
                "learned_alibi_scale_per_layer",
                "num_alibi_heads",
            ),
            ALIBI,
        ),
        Ignored("model_depth", "the model's depth again (an interpolation of depth)"),
        Ignored("decoder", "the pre-training decoder: " + OBJECTIVE),
        Checked(
            "extractor_mode",
            ("layer_norm",),
            "Data2VecAudio's conv extractor has a layer norm on every layer",
            "layer_norm",
            one_of("layer_norm", "default"),
        ),
        conv_spec("feature_encoder_spec", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2"),
        Joint("conv_pos_width", integer(1, 4096), positional_kernel, positional_width_back, 95),
        Translated("conv_pos_groups", integer(1, 65536), "num_conv_pos_embedding_groups", 16),
        Translated("conv_pos_depth", integer(1, 64), "num_conv_pos_embeddings", 5),
        Checked("conv_pos_pre_ln", (False,), "Data2VecAudio has no layer norm before its positional convs", False),
    ),
)
"""The audio modality's ``D2vAudioConfig``: extractor, positional convs, prenet depth, masking."""

ENCODER = "modality_encoders.AUDIO"


def _sections(model: object) -> tuple[tuple[ConfigTable, object], ...]:
    """The model's section and its audio modality's (``modalities.audio``), each with its table."""
    return ((MODEL, model), (AUDIO, get(get(model, "modalities", None), "audio", None)))


def encoder_kwargs(read: Sequence[Translation], layout: Layout, root: str) -> Result[dict[str, Any], BadConfig]:
    """Data2VecAudioConfig's keyword arguments from the last two sections ``read`` (the model's, the
    audio modality's): the prenet blocks and the blocks are one stack of layers, as many as the file
    holds under ``root``."""
    model, audio = read[-2], read[-1]
    wrong = layers_agree(MODEL.section, layout, root + "blocks", model.values["depth"], "depth")
    layers = model.values["depth"] + audio.values["prenet_depth"]
    return Failure(wrong) if wrong else Success({**model.kwargs, **audio.kwargs, "num_hidden_layers": layers})


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """The model's config and its audio modality's, each by its table, into a ``Data2VecAudioConfig``
    checked against the file's own blocks."""
    model = fairseq_model_config(meta)
    if model is None:
        return Failure(NO_CONFIG)
    return translate_each(_sections(model)).bind(partial(_pretrained, layout=layout))


def _pretrained(read: Sequence[Translation], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    return encoder_kwargs(read, layout, "").map(
        lambda kwargs: TranslatedConfig(Data2VecAudioConfig(**kwargs), left_behind(read))
    )


def translate_ctc_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """A fine-tuned (CTC) file: the wrapper (fairseq's ``Wav2Vec2CtcConfig``) and the encoder in
    ``w2v_args.model``, into a ``Data2VecAudioConfig`` with the CTC head's size."""
    model = fairseq_model_config(meta)
    if model is None:
        return Failure(NO_CONFIG)
    sections = ((CTC_FINE_TUNING, model), *_sections(fairseq_encoder_config(meta)))
    return translate_each(sections).bind(partial(_fine_tuned, layout=layout))


def _fine_tuned(read: Sequence[Translation], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    return Result.do(
        TranslatedConfig(Data2VecAudioConfig(**kwargs, **head), left_behind(read))
        for kwargs in encoder_kwargs(read, layout, "w2v_encoder.w2v_model.")
        for head in ctc_head_kwargs(read[0], layout)
    )


BLOCK = (
    split("attn.qkv", ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    rename("attn.proj", "attention.out_proj", PARAMS),
    rename("norm1", "layer_norm", PARAMS),
    rename("norm2", "final_layer_norm", PARAMS),
    rename("mlp.fc1", "feed_forward.intermediate_dense", PARAMS),
    rename("mlp.fc2", "feed_forward.output_dense", PARAMS),
)
"""One data2vec 2.0 block (timm-style ``AltBlock``, post-LN) as a Data2VecAudio encoder layer."""


def prenet_depth(config: PretrainedConfig, meta: Mapping[str, Any]) -> int:
    """How many of the layers are the audio encoder's prenet blocks (0 on the way back)."""
    audio = get(get(fairseq_encoder_config(meta), "modalities", None), "audio", None)
    prenet = get(audio, "prenet_depth", 0)
    return prenet if isinstance(prenet, int) and 0 <= prenet <= int(config.num_hidden_layers) else 0


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """The audio encoder's extractor, projection, positional convs and norm, the prenet blocks as the
    first layers and the blocks after them (indices shifted by the prenet's depth)."""
    prenet = prenet_depth(config, meta)
    layers = int(config.num_hidden_layers)
    block = first_match("block", BLOCK)
    blocks = (
        (scoped("blocks.*", "encoder.layers.*", block),)
        if not prenet
        else tuple(scoped(f"blocks.{i}", f"encoder.layers.{prenet + i}", block) for i in range(layers - prenet))
    )
    positional = tuple(
        rename(f"relative_positional_encoder.{i + 1}.0", f"encoder.pos_conv_embed.layers.{i}.conv", PARAMS)
        for i in range(int(config.num_conv_pos_embeddings))
    )
    extractor = first_match(
        "conv extractor",
        (
            rename("conv_layers.*.0", "conv_layers.*.conv", PARAMS),
            rename("conv_layers.*.2.1", "conv_layers.*.layer_norm", PARAMS),
        ),
    )
    audio = first_match(
        "data2vec 2.0 audio encoder",
        (
            scoped("local_encoder", "feature_extractor", extractor),
            rename("project_features.1", "feature_projection.layer_norm", PARAMS),
            rename("project_features.2", "feature_projection.projection", PARAMS),
            *positional,
            rename("context_encoder.norm", "encoder.layer_norm", PARAMS),
            *((scoped("context_encoder.blocks.*", "encoder.layers.*", block),) if prenet else ()),
            skip("decoder", "the pre-training decoder: " + OBJECTIVE),
        ),
    )
    return first_match(
        "data2vec 2.0",
        (scoped(ENCODER, "", audio), *blocks, skip("_ema", "the EMA teacher: " + OBJECTIVE)),
    )


def zero_mask(config: PretrainedConfig) -> tuple[MakeRule, ...]:
    """data2vec 2.0 masks frames by zeroing them (``encoder_zero_mask``) and holds no mask embedding;
    Data2VecAudio masks with ``masked_spec_embed`` where its config masks: made as zeros, which masks
    as data2vec 2.0 does."""
    reason = "data2vec 2.0 masks frames with zeros and holds no mask embedding: zeros mask the same way"
    return (MakeRule("masked_spec_embed", Zeros((int(config.hidden_size),)), reason),)


def ctc_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """A fine-tuned file: the encoder under ``data2vec_audio.``, the CTC projection as ``lm_head``."""
    return first_match(
        "data2vec 2.0 CTC",
        (
            rename("w2v_encoder.proj", "lm_head", PARAMS),
            scoped("w2v_encoder.w2v_model", "data2vec_audio", pipeline(config, meta)),
        ),
    )


DEPTH = Translated("depth", integer(1, 512), "num_hidden_layers")
MODEL_DEPTH = Translated("model_depth", integer(1, 512), "num_hidden_layers")
"""The depth, in the model's section and again in the audio modality's: every layer a block (read back
only: no prenet)."""

ALIBI_HEADS = Translated("num_alibi_heads", integer(1, 1024), "num_attention_heads")
"""ALiBi's heads (off), as many as the attention's, as fairseq's default interpolates them (read back only)."""

ENCODER_MODEL = Merged(
    Back(MODEL.fields, fixed=True),
    {"_name": "data2vec_multi", "skip_ema": True, "ema_anneal_end_step": 0, "max_update": 0, "seed": 1},
    Back((DEPTH,)),
    {
        "modalities": {
            "audio": Merged(
                Back(AUDIO.fields, fixed=True),
                {"prenet_depth": 0, "decoder": None},
                Back((ALIBI_HEADS, MODEL_DEPTH)),
            )
        }
    },
)
"""fairseq's model config for an export (``cfg.model``, or a CTC export's ``w2v_args.model``): the two
tables read back with their checked values, the depth (every layer a block, no prenet), and no EMA
teacher or decoder (training only: fairseq builds them from its config, the export has none)."""

FAIRSEQ_CFG = {"model": ENCODER_MODEL, "task": audio_task("audio_pretraining")}
"""fairseq's ``cfg`` for a pre-trained export: the model's and the task's."""


DATA2VEC2_AUDIO = ModelSpec(
    **shipped("data2vec2_audio"),
    stand_ins=STAND_INS,
    config_class=Data2VecAudioConfig,
    config_from_checkpoint=translate_config,
    pipeline=pipeline,
    model_class="Data2VecAudioModel",
    made=zero_mask,
    extras=feature_extractor_writer,
    export=trainer_exporter(
        FAIRSEQ_CFG,
        "ModelCriterion",
        "a fairseq checkpoint of data2vec_multi (load_model_ensemble_and_task reads it, data2vec 2.0 imported)",
        layout=partial(fairseq_layout, mask=False),
        made=nothing_made,
        leaves_out="the EMA teacher and the pre-training decoder: the written config builds neither (as fairseq's "
        "remove_pretraining_modules), so pre-training cannot resume from the file; fine-tuning and inference can",
    ),
)

DATA2VEC2_AUDIO_CTC = ModelSpec(
    **shipped("data2vec2_audio_ctc"),
    stand_ins=STAND_INS,
    config_class=Data2VecAudioConfig,
    config_from_checkpoint=translate_ctc_config,
    pipeline=ctc_pipeline,
    model_class="Data2VecAudioForCTC",
    made=zero_mask,
    extras=ctc_processor,
    export=ctc_exporter("data2vec_multi", encoder=ENCODER_MODEL),
    takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
)
