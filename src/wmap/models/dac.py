"""descript-audio-codec (DAC) -> ``DacModel``, both ways: the file ``DAC.save(path, package=False)``
writes (``{"state_dict", "metadata": {"kwargs"}}``), read back by ``DAC.load``.

DAC's modules are nested ``Sequential`` s, so its names are positions; transformers names them. The
table says which position is which (:data:`RESIDUAL_UNIT`, :data:`ENCODER_BLOCK`,
:data:`DECODER_BLOCK`), and the rules are made from it for the config's number of blocks. Every conv and
the quantizer's projections are old-style weight norm (``weight_g``/``weight_v``); ``DacModel`` holds
plain weights: folded on the CPU in float32 (:func:`~wmap.transforms.fold`), unfolded on the way back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import DacConfig, DacFeatureExtractor, PretrainedConfig

from wmap.config_fields import (
    PROBABILITY,
    ConfigTable,
    Derived,
    Translated,
    Translation,
    get,
    integer,
    optional,
    strides,
    translate,
    values_back,
)
from wmap.errors import BadConfig
from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig, Writer, shipped
from wmap.pipeline import first_match
from wmap.reverse import predicted_layout
from wmap.transforms import EXACT, PARAMS, Layout, Transform, fold, rename


def _codebook_dim(value: object) -> Result[Any, str]:
    """One width for every codebook: DAC also takes a list (one per codebook), DacModel does not."""
    if isinstance(value, list | tuple):
        return Failure("one width for every codebook (DacModel's are all alike; DAC's list is one per codebook)")
    return integer(1, 4096)(value)


def _dropout(value: object) -> Result[Any, str]:
    """DAC's ``quantizer_dropout``: a flag (``True`` is a rate of 1) or a rate."""
    if isinstance(value, bool):
        return Success(float(value))
    return PROBABILITY(value)


LATENT = "or null: encoder_dim * 2 ** len(encoder_rates), DacModel derives it"


def _latent(values: Mapping[str, Any]) -> int:
    return int(values["encoder_dim"]) << len(values["encoder_rates"])  # encoder_dim * 2 ** len(encoder_rates)


def _reversed(values: Mapping[str, Any]) -> list[int]:
    return [int(rate) for rate in values["encoder_rates"]][::-1]


KWARGS = ConfigTable(
    "DAC metadata.kwargs",
    (
        Translated("encoder_dim", integer(1, 65536), "encoder_hidden_size", 64),
        Translated("encoder_rates", strides, "downsampling_ratios", [2, 4, 8, 8]),
        Derived("latent_dim", optional(integer(1, 1 << 20)), _latent, LATENT, None),
        Translated("decoder_dim", integer(1, 1 << 20), "decoder_hidden_size", 1536),
        Derived("decoder_rates", strides, _reversed, "the encoder's strides reversed: DacModel derives them", None),
        Translated("n_codebooks", integer(1, 1024), "n_codebooks", 9),
        Translated("codebook_size", integer(2, 1 << 20), "codebook_size", 1024),
        Translated("codebook_dim", _codebook_dim, "codebook_dim", 8),
        Translated("quantizer_dropout", _dropout, "quantizer_dropout", False),
        Translated("sample_rate", integer(1, 1 << 20), "sampling_rate", 44100),
    ),
)
"""DAC's constructor arguments, as ``DAC.save`` keeps them; what DacModel derives instead of reading
(the decoder's strides, the latent width) is checked, and written back derived."""


def built(read: Translation) -> TranslatedConfig:
    """The ``DacConfig`` of a translation of :data:`KWARGS`."""
    return TranslatedConfig(DacConfig(**read.kwargs), read.ignored)


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """``metadata.kwargs`` by :data:`KWARGS`, into a ``DacConfig``."""
    return translate(KWARGS, get(meta.get("metadata"), "kwargs", None)).map(built)


RESIDUAL_UNIT = ("snake1", "conv1", "snake2", "conv2")
"""DAC's ``ResidualUnit.block``: Snake, dilated conv, Snake, 1x1 conv, by position."""
ENCODER_BLOCK = ("res_unit1", "res_unit2", "res_unit3", "snake1", "conv1")
"""``EncoderBlock.block``: three residual units, Snake, the strided conv."""
DECODER_BLOCK = ("snake1", "conv_t1", "res_unit1", "res_unit2", "res_unit3")
"""``DecoderBlock.block``: Snake, the transposed conv, three residual units."""


def _layer(source: str, target: str) -> tuple[Transform, ...]:
    """One position: a Snake's ``alpha``, a residual unit, or a weight-norm conv (folded) and its bias."""
    name = target.rsplit(".", 1)[1]
    if name.startswith("snake"):
        return (rename(f"{source}.alpha", f"{target}.alpha", EXACT),)
    if name.startswith("res_unit"):
        return _positions(f"{source}.block", target, RESIDUAL_UNIT)
    return (fold(source, target), rename(f"{source}.bias", f"{target}.bias", EXACT))


def _positions(source: str, target: str, names: tuple[str, ...]) -> tuple[Transform, ...]:
    return tuple(rule for i, name in enumerate(names) for rule in _layer(f"{source}.{i}", f"{target}.{name}"))


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Encoder and decoder by position (their first and last two layers around ``n`` blocks, ``n`` the
    number of strides), and the quantizer's projections and codebooks."""
    n = len(config.downsampling_ratios)
    encoder = (
        *_layer("encoder.block.0", "encoder.conv1"),
        *(r for i in range(n) for r in _positions(f"encoder.block.{i + 1}.block", f"encoder.block.{i}", ENCODER_BLOCK)),
        *_layer(f"encoder.block.{n + 1}", "encoder.snake1"),
        *_layer(f"encoder.block.{n + 2}", "encoder.conv2"),
    )
    decoder = (
        *_layer("decoder.model.0", "decoder.conv1"),
        *(r for i in range(n) for r in _positions(f"decoder.model.{i + 1}.block", f"decoder.block.{i}", DECODER_BLOCK)),
        *_layer(f"decoder.model.{n + 1}", "decoder.snake1"),
        *_layer(f"decoder.model.{n + 2}", "decoder.conv2"),
    )
    quantizer = (
        *_layer("quantizer.quantizers.*.in_proj", "quantizer.quantizers.*.in_proj"),
        *_layer("quantizer.quantizers.*.out_proj", "quantizer.quantizers.*.out_proj"),
        rename("quantizer.quantizers.*.codebook", "quantizer.quantizers.*.codebook", PARAMS),
    )
    return first_match("dac", (*encoder, *decoder, *quantizer))


def dac_kwargs(config: PretrainedConfig) -> dict[str, Any]:
    """``DAC(**kwargs)`` for a ``DacConfig``: the table read back (the derived fields derived)."""
    return values_back(KWARGS.fields, config)


def feature_extractor(
    config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
) -> Result[Writer, BadConfig]:
    """The ``DacFeatureExtractor`` ``AutoProcessor`` loads: mono, the model's rate, its hop length
    (the product of the strides)."""
    hop = 1
    for rate in config.downsampling_ratios:
        hop *= int(rate)
    extractor = DacFeatureExtractor(feature_size=1, sampling_rate=int(config.sampling_rate), hop_length=hop)
    return Success(extractor.save_pretrained)


def _original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    layout = predicted_layout(source.pipeline, source.converted)
    return Success((layout, {"metadata": {"kwargs": dac_kwargs(source.config)}}))


def _container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    return {"state_dict": dict(state), "metadata": meta["metadata"]}


DAC = ModelSpec(
    **shipped("dac"),
    config_class=DacConfig,
    config_from_checkpoint=translate_config,
    pipeline=pipeline,
    model_class="DacModel",
    extras=feature_extractor,
    export=Exporter(_original, _container, "a DAC weights file (DAC.load reads it)"),
)
