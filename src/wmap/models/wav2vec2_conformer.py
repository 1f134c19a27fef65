"""fairseq wav2vec 2.0 Conformer (``layer_type: conformer``), pre-trained -> ``Wav2Vec2ConformerForPreTraining``
and fine-tuned (CTC) -> ``Wav2Vec2ConformerForCTC``: wav2vec 2.0's tables with the conformer's layer
rules and fields.

What differs from wav2vec 2.0 is data: :data:`~wmap.fairseq.CONFORMER_LAYERS` (whose rotary
``inv_freq``, one copy per layer in fairseq, is gathered into transformers' one), and these fields:
the position encoding (relative or rotary; fairseq's ``abs`` is refused), the depthwise kernel, and
the checks transformers' conformer needs (ESPnet attention, the encoder norm after the layers).
fairseq's conformer layers use swish whatever ``activation_fn`` says. Where fairseq has no
``post_extract_proj`` (equal widths) the projection is made the identity (transformers#28174).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig, Wav2Vec2ConformerConfig, Wav2Vec2ConformerForCTC, Wav2Vec2ConformerModel
from transformers import Wav2Vec2ConformerForPreTraining as ForPreTraining

from wmap.config_fields import (
    Checked,
    ConfigTable,
    Field,
    Ignored,
    Translated,
    Translation,
    ValueMap,
    boolean,
    fixed_back,
    integer,
    one_of,
)
from wmap.fairseq import CONFORMER_LAYERS, PRETRAINING_HEADS, ctc_fine_tuning, identity_projection, with_upgrades
from wmap.fairseq.export import ctc_exporter, pretraining_exporter
from wmap.fairseq.processor import ctc_processor, feature_extractor_writer
from wmap.models.base import ModelSpec, is_headless, shipped
from wmap.models.wav2vec2 import (
    ctc_rules,
    encoder_fields,
    encoder_rules,
    fine_tuned_config,
    pretrained_config,
    pretraining_back,
    pretraining_kwargs,
    pretraining_rules,
)
from wmap.pipeline import first_match, seq
from wmap.transforms import Transform, route_weight_norm

POSITIONS = ValueMap(
    (("rel_pos", "relative"), ("rope", "rotary")),
    "relative or rotary positions in the attention; transformers' conformer has no absolute ('abs') kind",
)
"""fairseq's ``pos_enc_type`` <-> transformers' ``position_embeddings_type``."""

ADAPTERS = "setting of adapter layers (layer_type 'trf_adp'), which conformer layers do not use"

CONFORMER_FIELDS: dict[str, Field] = {
    "layer_type": Checked(
        "layer_type",
        ("conformer",),
        "this family's target has conformer layers; transformer layers convert with wav2vec2[_ctc]",
        "transformer",
        one_of("transformer", "conformer", "trf_adp"),
    ),
    "activation_fn": Ignored("activation_fn", "fairseq's conformer layers use swish whatever it says"),
    "layer_norm_first": Checked(
        "layer_norm_first",
        (True,),
        "fairseq's conformer normalises before the layers when false, transformers' after them",
        False,
        boolean,
    ),
    "attn_type": Checked(
        "attn_type",
        ("espnet",),
        "transformers' conformer has ESPnet's attention (linear_q/k/v/out), not fairseq's own",
        "",
        one_of("", "espnet"),
    ),
    "pos_enc_type": Translated("pos_enc_type", POSITIONS, "position_embeddings_type", "abs"),
    "depthwise_conv_kernel_size": Translated(
        "depthwise_conv_kernel_size", integer(1, 4097), "conv_depthwise_kernel_size", 31
    ),
    "max_positions": Translated("max_positions", integer(1, 10**7), "max_source_positions", 100_000),
    **{name: Ignored(name, ADAPTERS) for name in ("adp_num", "adp_dim", "adp_act_fn", "adp_trf_idx")},
}
"""Where fairseq's ``Wav2Vec2Config`` means something else for a conformer."""

PRETRAINED_FIELDS = encoder_fields(
    pretraining=True,
    **CONFORMER_FIELDS,
    quantize_targets=Translated("quantize_targets", boolean, None, False),
)
"""A file without a quantizer (``quantize_targets: false``) converts to the headless model."""
ENCODER_FIELDS = encoder_fields(pretraining=False, **CONFORMER_FIELDS)
PRETRAINED = ConfigTable("fairseq cfg.model (wav2vec2, conformer)", PRETRAINED_FIELDS)
FINE_TUNED_ENCODER = ConfigTable("fairseq cfg.model.w2v_args.model (wav2vec2, conformer)", ENCODER_FIELDS)
WRAPPER = ctc_fine_tuning("conformer")

BACK = fixed_back(ENCODER_FIELDS)
"""What fairseq's config must spell for a conformer (its defaults are a transformer's); its
``activation_fn`` is left at fairseq's default, which the conformer layers do not read."""


def fixed(read: Translation) -> dict[str, Any]:
    """fairseq's conformer: swish in every layer, the conv module's dropout the layers' own."""
    return {"hidden_act": "swish", "conformer_conv_dropout": read.kwargs["hidden_dropout"]}


def pretrained_kwargs(read: Translation) -> dict[str, Any]:
    """With a quantizer, ``ForPreTraining``'s sizes; without one, the headless model (named)."""
    if read.values["quantize_targets"]:
        return {**pretraining_kwargs(read), **fixed(read)}
    return {**fixed(read), "architectures": [HEADLESS.__name__]}


HEADLESS = Wav2Vec2ConformerModel


def pretrained_pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """``ForPreTraining`` with the quantizer and projections; the headless model skips what a file
    without a quantizer still holds (``project_q``, ``final_proj``), with the reason."""
    if not is_headless(WAV2VEC2_CONFORMER, config):
        return pretraining_rules(config, "wav2vec2_conformer", "Wav2Vec2Conformer", CONFORMER_LAYERS)
    encoder = encoder_rules(config, HEADLESS.__name__, CONFORMER_LAYERS)
    return seq(with_upgrades(first_match(HEADLESS.__name__, (*encoder, *PRETRAINING_HEADS))), route_weight_norm())


def _back(config: PretrainedConfig) -> dict[str, Any]:
    if is_headless(WAV2VEC2_CONFORMER, config):
        return {**BACK, "quantize_targets": False}
    return {**BACK, **pretraining_back(config)}


WAV2VEC2_CONFORMER = ModelSpec(
    made=identity_projection,
    **shipped("wav2vec2_conformer"),
    config_class=Wav2Vec2ConformerConfig,
    config_from_checkpoint=lambda meta, layout: pretrained_config(
        meta, layout, PRETRAINED, Wav2Vec2ConformerConfig, pretrained_kwargs
    ),
    pipeline=lambda config, meta: pretrained_pipeline(config, meta),
    model_class=ForPreTraining,
    headless=HEADLESS,
    extras=feature_extractor_writer,
    export=pretraining_exporter("wav2vec2", PRETRAINED_FIELDS, _back),
)

WAV2VEC2_CONFORMER_CTC = ModelSpec(
    made=identity_projection,
    **shipped("wav2vec2_conformer_ctc"),
    config_class=Wav2Vec2ConformerConfig,
    config_from_checkpoint=lambda meta, layout: fine_tuned_config(
        meta, layout, FINE_TUNED_ENCODER, Wav2Vec2ConformerConfig, wrapper=WRAPPER, extra=fixed
    ),
    pipeline=lambda config, meta: ctc_rules(
        config, "wav2vec2_conformer", "Wav2Vec2ConformerForCTC", layers=CONFORMER_LAYERS
    ),
    model_class=Wav2Vec2ConformerForCTC,
    extras=ctc_processor,
    export=ctc_exporter(
        "wav2vec2", fields=ENCODER_FIELDS, extra=lambda config: BACK, wrapper={"layer_type": "conformer"}
    ),
    takes_file="--dict: the fine-tuning dictionary (dict.ltr.txt) where task_state lacks it",
)
