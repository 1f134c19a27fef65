"""EnCodec 24 kHz, 32 kHz and 48 kHz: the original ``encodec`` code -> ``transformers.EncodecModel``.

Each model name has its own config and its own rule table; only the 48 kHz
table has the time-group norms (the seed's ``or`` bug used the 24 kHz table
for every model).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from returns.result import Result, Success
from transformers import EncodecConfig, EncodecFeatureExtractor, PretrainedConfig

from wmap.errors import BadConfig
from wmap.models.base import (
    Exporter,
    ExportSource,
    ModelSpec,
    TranslatedConfig,
    Writer,
    bundled_reference,
    read_reference,
    shipped,
)
from wmap.pipeline import first_match, seq
from wmap.transforms import (
    PARAMS,
    WEIGHT_NORM,
    Layout,
    Leaves,
    Transform,
    lstm_leaves,
    rename,
    route_weight_norm,
)

CONV = WEIGHT_NORM | PARAMS
"""A SEANet conv: weight-norm pair (24/32 kHz) or plain weight (48 kHz), and bias."""

CODEBOOK = Leaves("codebook buffers", frozenset({"inited", "cluster_size", "embed", "embed_avg"}))

QUANTIZER = (rename("quantizer.vq.layers.*._codebook", "quantizer.layers.*.codebook", CODEBOOK),)


def _seanet(side: str, num_lstm_layers: int) -> tuple[Transform, ...]:
    lstm = lstm_leaves(num_lstm_layers)
    return (
        rename(f"{side}.model.*.conv.conv", f"{side}.layers.*.conv", CONV),
        rename(f"{side}.model.*.convtr.convtr", f"{side}.layers.*.conv", CONV),
        rename(f"{side}.model.*.block.*.conv.conv", f"{side}.layers.*.block.*.conv", CONV),
        rename(f"{side}.model.*.shortcut.conv.conv", f"{side}.layers.*.shortcut.conv", CONV),
        rename(f"{side}.model.*.lstm", f"{side}.layers.*.lstm", lstm),
    )


def _seanet_norms(side: str) -> tuple[Transform, ...]:
    """48 kHz only: the time-group norms beside every conv."""
    return (
        rename(f"{side}.model.*.conv.norm", f"{side}.layers.*.norm", PARAMS),
        rename(f"{side}.model.*.convtr.norm", f"{side}.layers.*.norm", PARAMS),
        rename(f"{side}.model.*.block.*.conv.norm", f"{side}.layers.*.block.*.norm", PARAMS),
        rename(f"{side}.model.*.shortcut.conv.norm", f"{side}.layers.*.shortcut.norm", PARAMS),
    )


def encodec_pipeline(config: PretrainedConfig, *, with_norms: bool) -> Transform:
    """The rule table: quantizer, encoder and decoder (with norms for 48 kHz), then weight-norm routing."""
    assert isinstance(config, EncodecConfig)
    layers = int(config.num_lstm_layers)
    rules = (*QUANTIZER, *_seanet("encoder", layers), *_seanet("decoder", layers))
    if with_norms:
        rules += (*_seanet_norms("encoder"), *_seanet_norms("decoder"))
    name = "encodec 48 kHz" if with_norms else "encodec 24/32 kHz"
    return seq(first_match(name, rules), route_weight_norm())


PRESETS: dict[str, dict[str, Any]] = {
    "encodec_24khz": {},
    "encodec_32khz": {
        "upsampling_ratios": [8, 5, 4, 4],
        "target_bandwidths": [2.2],
        "num_filters": 64,
        "sampling_rate": 32_000,
        "codebook_size": 2048,
        "use_causal_conv": False,
        "normalize": False,
        "use_conv_shortcut": False,
    },
    "encodec_48khz": {
        "upsampling_ratios": [8, 5, 4, 2],
        "target_bandwidths": [3.0, 6.0, 12.0, 24.0],
        "sampling_rate": 48_000,
        "audio_channels": 2,
        "use_causal_conv": False,
        "norm_type": "time_group_norm",
        "normalize": True,
        "chunk_length_s": 1.0,
        "overlap": 0.01,
    },
}


def preset_config(name: str) -> EncodecConfig:
    """The transformers config of one published EnCodec model."""
    return EncodecConfig(**PRESETS[name])


def _config_for(name: str) -> Any:
    def config_from_checkpoint(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
        return Success(TranslatedConfig(preset_config(name)))

    return config_from_checkpoint


def feature_extractor_files(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """The feature extractor the seed writes beside the model."""
    extractor = EncodecFeatureExtractor(
        feature_size=getattr(config, "audio_channels", 1),
        sampling_rate=getattr(config, "sampling_rate", 24_000),
        chunk_length_s=getattr(config, "chunk_length_s", None),
        overlap=getattr(config, "overlap", None),
    )
    return Success(extractor.save_pretrained)


def _original(name: str) -> Any:
    """Back to the ``encodec`` package: its layout is the bundled reference (the original at this
    family's one config), and what it loads is the plain state dict (``load_state_dict(strict=True)``)."""

    def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        return read_reference(bundled_reference(name)).map(lambda found: (found[0], {}))

    return original


def plain_state_dict(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """What ``encodec.EncodecModel.load_state_dict`` takes: the state dict itself."""
    return dict(state)


def _spec(name: str, *, with_norms: bool) -> ModelSpec:
    return ModelSpec(
        **shipped(name),
        config_class=EncodecConfig,
        config_from_checkpoint=_config_for(name),
        pipeline=lambda config, meta: encodec_pipeline(config, with_norms=with_norms),
        model_class="EncodecModel",
        extras=feature_extractor_files,
        export=Exporter(_original(name), plain_state_dict, "an encodec package state dict (load_state_dict strict)"),
    )


ENCODEC_24KHZ = _spec("encodec_24khz", with_norms=False)
ENCODEC_32KHZ = _spec("encodec_32khz", with_norms=False)
ENCODEC_48KHZ = _spec("encodec_48khz", with_norms=True)
