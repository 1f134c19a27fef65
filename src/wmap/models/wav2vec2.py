"""fairseq wav2vec 2.0: pre-trained -> ``Wav2Vec2ForPreTraining``, fine-tuned (CTC) -> ``Wav2Vec2ForCTC``.

Both styles of encoder convert: base (group-norm extractor, post-LN) and large /
XLS-R (layer-norm extractor, conv bias, ``layer_norm_first``). What transformers'
Wav2Vec2 cannot represent is refused: a stacked positional conv (``pos_conv_depth
> 1``), conformer layers, a quantizer other than one gumbel layer over the
features, a GLU on the targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from returns.result import Failure, Result, Success
from transformers import PretrainedConfig, Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining

from wmap.config_fields import (
    Checked,
    ConfigTable,
    Field,
    Ignored,
    Translated,
    Translation,
    boolean,
    integer,
    number,
    one_of,
)
from wmap.errors import BadConfig
from wmap.fairseq import (
    PRETRAINING_HEADS,
    TRANSFORMER_LAYERS,
    ctc_head_kwargs,
    encoder_config_kwargs,
    fine_tuned,
    identity_projection,
    layout_agrees,
    pre_trained,
    wav2vec2_encoder_fields,
    wav2vec2_encoder_rules,
    with_upgrades,
)
from wmap.fairseq.export import ctc_exporter, pretraining_exporter
from wmap.fairseq.processor import ctc_processor, feature_extractor_writer
from wmap.models.base import ModelSpec, TranslatedConfig, shipped
from wmap.pipeline import first_match, scoped, seq
from wmap.transforms import EXACT, PARAMS, Layout, Transform, refuse, rename, route_weight_norm

ONE_POS_CONV = Checked(
    "pos_conv_depth",
    (1,),
    "transformers' wav2vec2-family encoders have one weight-norm positional conv",
    1,
    integer(1, 64),
)


TRANSFORMER_LAYER_TYPE = Checked(
    "layer_type",
    ("transformer",),
    "Wav2Vec2 has transformer layers; a wav2vec 2.0 conformer converts with wav2vec2_conformer[_ctc]",
    "transformer",
    one_of("transformer", "conformer", "trf_adp"),
)


def encoder_fields(*, pretraining: bool, **overrides: Field) -> tuple[Field, ...]:
    """fairseq's ``Wav2Vec2Config``: for pre-training the quantizer's fields are translated (the target
    has the quantizer), else they belong to the objective the fine-tuned encoder no longer has.
    ``overrides`` as in :func:`~wmap.fairseq.wav2vec2_encoder_fields` (the conformer's fields)."""
    overrides = {"layer_type": TRANSFORMER_LAYER_TYPE, **overrides}
    if not pretraining:
        return wav2vec2_encoder_fields(pos_conv_depth=ONE_POS_CONV, **overrides)
    quantizer: dict[str, Field] = dict(
        pos_conv_depth=ONE_POS_CONV,
        final_dim=Translated("final_dim", integer(0, 65536), None, 0),
        latent_vars=Translated("latent_vars", integer(1, 65536), "num_codevectors_per_group", 320),
        latent_groups=Translated("latent_groups", integer(1, 64), "num_codevector_groups", 2),
        latent_dim=Translated("latent_dim", integer(0, 65536), None, 0),
        latent_temp=Ignored(
            "latent_temp", "the gumbel temperature schedule: training only (in eval the quantizer takes the argmax)"
        ),
        num_negatives=Translated("num_negatives", integer(0, 100_000), "num_negatives", 100),
        logit_temp=Translated("logit_temp", number(1e-6, 1e6), "contrastive_logits_temperature", 0.1),
        quantize_targets=Checked(
            "quantize_targets", (True,), "Wav2Vec2ForPreTraining always quantizes its targets", False, boolean
        ),
        quantize_input=Checked(
            "quantize_input", (False,), "Wav2Vec2ForPreTraining quantizes targets only", False, boolean
        ),
        target_glu=Checked("target_glu", (False,), "Wav2Vec2ForPreTraining has no GLU on its targets", False, boolean),
        quantizer_depth=Checked(
            "quantizer_depth", (1,), "Wav2Vec2ForPreTraining's quantizer is one linear layer", 1, integer(1, 64)
        ),
    )
    return wav2vec2_encoder_fields(**{**quantizer, **overrides})


PRETRAINED = ConfigTable("fairseq cfg.model (wav2vec2)", encoder_fields(pretraining=True))
FINE_TUNED_ENCODER = ConfigTable("fairseq cfg.model.w2v_args.model (wav2vec2)", encoder_fields(pretraining=False))


def pretraining_kwargs(read: Translation) -> dict[str, Any]:
    """The quantizer's and projections' sizes of a ``...ForPreTraining`` config (fairseq's 0 means the
    encoder's width)."""
    values = read.values
    final_dim = values["final_dim"] or read.kwargs["hidden_size"]
    return {
        "codevector_dim": values["latent_dim"] or final_dim,
        "proj_codevector_dim": final_dim,
    }


def pretraining_back(config: PretrainedConfig) -> dict[str, Any]:
    """The quantizer's sizes for fairseq's config, from a ``...ForPreTraining`` config (the way back of
    :func:`pretraining_kwargs`)."""
    return {"quantize_targets": True, "latent_dim": config.codevector_dim, "final_dim": config.proj_codevector_dim}


def pretrained_config(
    meta: Mapping[str, Any], layout: Layout, table: ConfigTable, config_class: type[PretrainedConfig], extra: Any
) -> Result[TranslatedConfig, BadConfig]:
    """A pre-trained fairseq wav2vec2-style checkpoint's config: the encoder's from ``table``, plus
    ``extra(read)`` (the family's own keyword arguments); shared by wav2vec2 and HuBERT."""

    def built(read: Translation) -> Result[TranslatedConfig, BadConfig]:
        kwargs = {**encoder_config_kwargs(read), **extra(read)}
        wrong = layout_agrees(table.section, layout, kwargs)
        return Failure(wrong) if wrong else Success(TranslatedConfig(config_class(**kwargs), read.ignored))

    return pre_trained(meta, table).bind(built)


def fine_tuned_config(
    meta: Mapping[str, Any],
    layout: Layout,
    table: ConfigTable,
    config_class: type[PretrainedConfig],
    *,
    wrapper: ConfigTable | None = None,
    extra: Callable[[Translation], dict[str, Any]] | None = None,
    **fixed: Any,
) -> Result[TranslatedConfig, BadConfig]:
    """A fine-tuned (CTC) fairseq wav2vec2-style checkpoint's config: the encoder's from ``table``, the
    CTC head's from the wrapper (``wrapper``: its table, by default ``CTC_FINE_TUNING``); shared by
    wav2vec2, HuBERT and the conformer. ``fixed``: keyword arguments the family always sets; ``extra``:
    those it derives from the encoder's translation (the conformer's conv-module dropout)."""

    def built(outer: Translation, encoder: Translation) -> Result[TranslatedConfig, BadConfig]:
        kwargs = {**encoder_config_kwargs(encoder), **fixed, **(extra(encoder) if extra else {})}
        if not outer.values["apply_mask"]:  # fine-tuned without masking: off (the embedding keeps its place)
            kwargs["apply_spec_augment"] = False
        wrong = layout_agrees(table.section, layout, kwargs, "w2v_encoder.w2v_model.")
        if wrong is not None:
            return Failure(wrong)
        return ctc_head_kwargs(outer, layout).map(
            lambda head: TranslatedConfig(config_class(**{**kwargs, **head}), outer.ignored + encoder.ignored)
        )

    return fine_tuned(meta, table, wrapper).bind(lambda both: built(*both))


STACKED = "a stack of positional convs (fairseq pos_conv_depth > 1); {target} has one weight-norm conv"


def encoder_rules(
    config: PretrainedConfig, target: str, layers: tuple[Transform, ...] = TRANSFORMER_LAYERS
) -> tuple[Transform, ...]:
    """The encoder's rules (:func:`wmap.fairseq.wav2vec2_encoder_rules`, with ``layers``) and the refusal
    of a stacked positional conv, whose keys (``encoder.pos_conv.N.0``) the single conv's rule does not take."""
    return (
        *wav2vec2_encoder_rules(config, layers=layers),
        refuse("encoder.pos_conv", STACKED.format(target=target)),
    )


QUANTIZER = (
    rename("quantizer.vars", "quantizer.codevectors", EXACT),
    rename("quantizer.weight_proj", "quantizer.weight_proj", PARAMS),
    rename("project_q", "project_q", PARAMS),
    rename("final_proj", "project_hid", PARAMS),
)
"""wav2vec 2.0's pre-training heads, which Wav2Vec2ForPreTraining has at its top level."""


def pretraining_rules(
    config: PretrainedConfig, base: str, target: str, layers: tuple[Transform, ...] = TRANSFORMER_LAYERS
) -> Transform:
    """Pre-trained checkpoint -> a ``...ForPreTraining``: the encoder (its ``layers``) under ``base``,
    the quantizer and projections on top."""
    encoder = with_upgrades(first_match(target, encoder_rules(config, target, layers)))
    return seq(first_match(f"{target} pre-training", (*QUANTIZER, scoped("", base, encoder))), route_weight_norm())


def pretraining_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Pre-trained checkpoint -> Wav2Vec2ForPreTraining: the encoder under ``wav2vec2.``, heads on top."""
    return pretraining_rules(config, "wav2vec2", "Wav2Vec2")


def ctc_rules(
    config: PretrainedConfig,
    base: str,
    target: str,
    heads: tuple[Transform, ...] = PRETRAINING_HEADS,
    layers: tuple[Transform, ...] = TRANSFORMER_LAYERS,
) -> Transform:
    """Fine-tuned checkpoint -> a wav2vec2-family ``...ForCTC``: the encoder (its ``layers``) under
    ``base``, ``lm_head``; the pre-training ``heads`` a fine-tuned file may still carry are skipped."""
    encoder = with_upgrades(first_match(target, (*encoder_rules(config, target, layers), *heads)))
    return seq(
        first_match(
            f"{target} CTC",
            (rename("w2v_encoder.proj", "lm_head", PARAMS), scoped("w2v_encoder.w2v_model", base, encoder)),
        ),
        route_weight_norm(),
    )


WAV2VEC2 = ModelSpec(
    made=identity_projection,
    **shipped("wav2vec2"),
    config_class=Wav2Vec2Config,
    config_from_checkpoint=lambda meta, layout: pretrained_config(
        meta, layout, PRETRAINED, Wav2Vec2Config, pretraining_kwargs
    ),
    pipeline=pretraining_pipeline,
    model_class=Wav2Vec2ForPreTraining,
    extras=feature_extractor_writer,
    export=pretraining_exporter(
        "wav2vec2",
        encoder_fields(pretraining=True),
        pretraining_back,
    ),
)

WAV2VEC2_CTC = ModelSpec(
    made=identity_projection,
    **shipped("wav2vec2_ctc"),
    config_class=Wav2Vec2Config,
    config_from_checkpoint=lambda meta, layout: fine_tuned_config(meta, layout, FINE_TUNED_ENCODER, Wav2Vec2Config),
    pipeline=lambda config, meta: ctc_rules(config, "wav2vec2", "Wav2Vec2"),
    model_class=Wav2Vec2ForCTC,
    extras=ctc_processor,
    export=ctc_exporter("wav2vec2"),
    takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
)
