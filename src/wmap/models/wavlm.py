"""WavLM (microsoft/unilm's ``WavLM.py``) <-> ``transformers.WavLMModel``, and UniSpeech-SAT as s3prl
keeps it (the same files, without the bias) <-> ``UniSpeechSatModel``, both ways.

WavLM's files are ``{"cfg": {...}, "model": state dict}``: what unilm's README and s3prl's ``wavlm``
upstream load (``WavLM(WavLMConfig(checkpoint["cfg"]))``, strictly). Its encoder is fairseq's
wav2vec 2.0 encoder, by the same names, with a gated relative position bias in the attention: three
rules more per layer (:data:`WAVLM_LAYERS`), and its config is fairseq's encoder fields
(:func:`~wmap.fairseq.encoder_rows`) with four of its own. transformers' WavLM always has the bias and
the gate: a file without them (``relative_position_embedding`` or ``gru_rel_pos`` false) is refused,
naming the field; s3prl keeps UniSpeech-SAT as such a WavLM, which converts as ``unispeech_sat``
(:class:`UnilmStyle` describes both). The way back writes the same two keys from the same table, with the feature
extractor's normalisation as the ``cfg``'s ``normalize`` (WavLM Large's inputs are normalised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig, UniSpeechSatConfig, WavLMConfig

from wmap.config_back import Back, written
from wmap.config_fields import (
    Checked,
    ConfigTable,
    Field,
    Translated,
    boolean,
    ignore_all,
    integer,
    section_at,
)
from wmap.errors import BadConfig, Disagrees
from wmap.fairseq import (
    MASKING_FIELDS,
    TRANSFORMER_LAYERS,
    EncoderConfig,
    always_masks,
    encoder_rows,
    fairseq_layout,
    flag,
    identity_projection,
    mask_embedding,
    masks,
    wav2vec2_encoder_rules,
)
from wmap.fairseq.processor import FEATURES, FeatureExtractorSettings, Features, feature_settings
from wmap.models.base import Exporter, ExportSource, ModelSpec, Writer, shipped
from wmap.pipeline import first_match, seq
from wmap.transforms import EXACT, PARAMS, Layout, Transform, rename, route_weight_norm

RELATIVE_POSITIONS = (
    ("grep_a", "gru_rel_pos_const", EXACT),
    ("grep_linear", "gru_rel_pos_linear", PARAMS),
    ("relative_attention_bias", "rel_attn_embed", PARAMS),
)
"""WavLM's gated relative position bias, as unilm and transformers name it (the bias table in layer 0 only)."""

WAVLM_LAYERS = (
    *TRANSFORMER_LAYERS,
    *(
        rename(f"encoder.layers.*.self_attn.{name}", f"encoder.layers.*.attention.{target}", kind)
        for name, target, kind in RELATIVE_POSITIONS
    ),
)
"""fairseq's transformer layers, and the relative position bias and its gate."""

SHARED_WITH_FAIRSEQ = (
    *("extractor_mode", "encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim", "encoder_attention_heads"),
    *("activation_fn", "layer_norm_first", "conv_feature_layers", "conv_bias", "feature_grad_mult"),
    *("dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input", "dropout_features"),
    *("mask_length", "mask_prob", "mask_channel_length", "mask_channel_prob", "conv_pos", "conv_pos_groups"),
    *MASKING_FIELDS,
)
"""unilm's ``WavLMConfig`` fields that are fairseq's wav2vec 2.0 encoder's (with the same defaults)."""

NORMALIZE = Translated("normalize", boolean, None, False)
"""Whether the models were fed normalised waves: the feature extractor's ``do_normalize``."""

BIAS = "transformers' WavLM always biases its attention by relative position (a file without one: unispeech_sat)"

RELATIVE_BIAS: tuple[Field, ...] = (
    Checked("relative_position_embedding", (True,), BIAS, False, boolean),
    Checked("gru_rel_pos", (True,), BIAS + ", gated by its input", False, boolean),
    Translated("num_buckets", integer(1, 100_000), "num_buckets", 320),
    Translated("max_distance", integer(1, 10**7), "max_bucket_distance", 1280),
)
"""WavLM's own fields: the relative position bias and its gate, which its target always has."""

NO_BIAS = "UniSpeechSatModel has no relative position bias (a file with one converts as wavlm)"

NO_RELATIVE_BIAS: tuple[Field, ...] = (
    Checked("relative_position_embedding", (False,), NO_BIAS, False, boolean),
    Checked("gru_rel_pos", (False,), NO_BIAS, False, boolean),
    *ignore_all(("num_buckets", "max_distance"), "size of a relative position bias this file does not have"),
)
"""The same fields for UniSpeech-SAT, which s3prl keeps as a WavLM without the bias."""


@attrs.frozen
class UnilmStyle:
    """A family of unilm's ``WavLM.py`` files (``{"cfg", "model"}``), described once: its ``cfg`` fields
    beyond fairseq's encoder rows (``own``), its layer rules, and the transformers classes. :meth:`spec`
    is the :class:`~wmap.models.base.ModelSpec`, both ways."""

    name: str
    own: tuple[Field, ...]
    layers: tuple[Transform, ...]
    config_class: type[PretrainedConfig]
    model_class: str
    masked: Callable[[PretrainedConfig], bool] = masks
    """Whether the target holds ``masked_spec_embed`` (:func:`~wmap.fairseq.projections`)."""

    @property
    def table(self) -> ConfigTable:
        """The file's ``cfg`` (unilm's ``WavLMConfig`` saved as a dict), at its defaults where a field is absent."""
        return ConfigTable(
            f"{self.model_class.removesuffix('Model')} cfg", (*encoder_rows(SHARED_WITH_FAIRSEQ), *self.own, NORMALIZE)
        )

    @property
    def config_reader(self) -> EncoderConfig:
        """The file's ``cfg`` -> the target config, checked against the file's layers."""
        return EncoderConfig(self.table, self.config_class, section_at("cfg"))

    def pipeline(self, config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
        """fairseq's encoder rules with the family's layers; the weight-norm pair routed."""
        return seq(
            first_match(self.name, wav2vec2_encoder_rules(config, layers=self.layers, masked=self.masked)),
            route_weight_norm(),
        )

    def cfg_back(self, config: PretrainedConfig, features: Features) -> Result[dict[str, Any], BadConfig]:
        """The ``cfg`` for a target config: the table read back, its single allowed values, and the
        feature extractor's normalisation; a rate other than 16 kHz has no place in it."""
        normalize, rate = features
        if rate != SAMPLING_RATE:
            expected = f"{SAMPLING_RATE} (a WavLM cfg has no sampling rate: its models take 16 kHz)"
            return Failure(Disagrees(FEATURES, "sampling_rate", expected, str(rate)))
        return Success({**written(Back(self.table.fields, fixed=True), config), "normalize": normalize})

    def original(self, source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        """The original's names (the rules reversed, hook-style weight norm, the mask embedding it
        always holds) and its ``cfg``."""
        return (
            feature_settings(source.files)
            .bind(partial(self.cfg_back, source.config))
            .map(lambda cfg: (fairseq_layout(source), {"cfg": cfg}))
        )

    def spec(self) -> ModelSpec:
        """The family, both ways."""
        return ModelSpec(
            made=identity_projection,
            **shipped(self.name),
            config_class=self.config_class,
            config_from_checkpoint=self.config_reader,
            pipeline=self.pipeline,
            model_class=self.model_class,
            extras=feature_extractor,
            export=Exporter(self.original, unilm_file, UNILM_FILE, reads=(FEATURES,), made=mask_embedding),
        )


SAMPLING_RATE = 16_000
"""WavLM's models take 16 kHz audio (its ``cfg`` has no field for it)."""


def feature_extractor(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """``Wav2Vec2FeatureExtractor`` as the models were fed: 16 kHz, normalised where ``cfg.normalize``
    says, an attention mask for layer-norm extractors (as transformers' ``wavlm-large`` has)."""
    layer_norm = config.feat_extract_norm == "layer"
    return Success(FeatureExtractorSettings(SAMPLING_RATE, flag(meta.get("cfg"), "normalize"), layer_norm).write)


def unilm_file(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """What unilm's and s3prl's loaders read: the ``cfg`` and the state dict."""
    return {"cfg": dict(meta["cfg"]), "model": dict(state)}


UNILM_FILE = (
    "a WavLM checkpoint ({'cfg', 'model'}: unilm's WavLM and s3prl's wavlm_local and unispeech_sat_local load it)"
)

WAVLM = UnilmStyle("wavlm", RELATIVE_BIAS, WAVLM_LAYERS, WavLMConfig, "WavLMModel").spec()
UNISPEECH_SAT = UnilmStyle(
    "unispeech_sat", NO_RELATIVE_BIAS, TRANSFORMER_LAYERS, UniSpeechSatConfig, "UniSpeechSatModel", always_masks
).spec()
