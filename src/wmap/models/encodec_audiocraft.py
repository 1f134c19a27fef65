"""audiocraft's EnCodec (a MusicGen/AudioGen compression model, or one trained with audiocraft) ->
``EncodecModel``, both ways: ``compression_state_dict.bin`` as ``audiocraft.utils.export`` writes it
(``{"best_state", "xp.cfg" (YAML), "version", "exported"}``), read back by
``audiocraft.models.loaders.load_compression_model``.

The weights are the ``encodec`` package's names (the same SEANet and residual VQ), so the rules are
:func:`wmap.models.encodec.encodec_pipeline`'s; what differs is that the config is the file's own: the
``seanet``, ``rvq`` and ``encodec`` sections of ``xp.cfg``, each read by a table. transformers derives
the number of quantizers from ``target_bandwidths`` with log2(bins) bits per codebook, so the one
bandwidth written is ``n_q * frame_rate * log2(bins) / 1000`` (MusicGen's 32 kHz model: 2.2, not the
7 a 4-codebook model gets from a 10-bit guess).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import EncodecConfig, PretrainedConfig

from wmap.config_back import Back, Made, Merged, written
from wmap.config_fields import (
    Checked,
    Composite,
    ConfigTable,
    Ignored,
    Translated,
    Translation,
    ValueMap,
    boolean,
    get,
    ignore_all,
    integer,
    left_behind,
    number,
    one_of,
    strides,
    translate_each,
)
from wmap.errors import BadConfig
from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig, shipped
from wmap.models.encodec import encodec_pipeline, feature_extractor_files
from wmap.reverse import predicted_layout
from wmap.transforms import Layout, Transform, weight_norm_hook_names
from wmap.yaml_text import dump_yaml, read_config

TRAINING = "training-only setting of the quantizer (codebook updates, dropout, regularisation)"


ALPHA_ONE = {"alpha": 1.0}


def _settings(value: object) -> Result[Any, str]:
    """A section of settings, as a plain dict."""
    if value is None or isinstance(value, str):
        return Failure("a mapping of settings")
    return Success({k: get(value, k) for k in _keys(value)})


def _keys(value: object) -> list[str]:
    try:
        return [str(k) for k in value]  # type: ignore[attr-defined]
    except TypeError:
        return []


def _trim(value: object) -> Result[Any, str]:
    """The decoder's overrides: only ``trim_right_ratio``, which transformers has."""
    keys = _keys(value)
    if value is None or not set(keys) <= {"trim_right_ratio"}:
        return Failure(
            "{'trim_right_ratio': r} at most (transformers has no other decoder-only setting, e.g. a final activation)"
        )
    return number(0.0, 1.0)(get(value, "trim_right_ratio", 1.0))


DECODER = Composite(
    "decoder",
    _trim,
    lambda ratio: {"trim_right_ratio": ratio},
    lambda config: {"trim_right_ratio": float(config.trim_right_ratio)},
    {},
)
"""SEANet's decoder-only settings <-> transformers' ``trim_right_ratio``."""


NORMS = ValueMap(
    (("weight_norm", "weight_norm"), ("time_group_norm", "time_group_norm")),
    "transformers' EnCodec has weight-norm or time-group-norm convs",
)

SEANET = ConfigTable(
    "audiocraft xp.cfg seanet",
    (
        Translated("dimension", integer(1, 65536), "hidden_size", 128),
        Translated("channels", integer(1, 2), "audio_channels", 1),
        Translated("causal", boolean, "use_causal_conv", False),
        Translated("n_filters", integer(1, 65536), "num_filters", 32),
        Translated("n_residual_layers", integer(1, 64), "num_residual_layers", 1),
        Translated("ratios", strides, "upsampling_ratios", [8, 5, 4, 2]),
        Checked("activation", ("ELU",), "transformers' EnCodec uses ELU", "ELU", one_of("ELU", "ReLU", "GELU")),
        Checked("activation_params", (ALPHA_ONE,), "transformers' EnCodec uses ELU with alpha 1", ALPHA_ONE, _settings),
        Translated("norm", NORMS, "norm_type", "weight_norm"),
        Ignored("norm_params", "the norm's parameters: transformers' norms take none (weight norm, one group)"),
        Translated("kernel_size", integer(1, 1024), "kernel_size", 7),
        Translated("last_kernel_size", integer(1, 1024), "last_kernel_size", 7),
        Translated("residual_kernel_size", integer(1, 1024), "residual_kernel_size", 3),
        Translated("dilation_base", integer(1, 64), "dilation_growth_rate", 2),
        Translated("pad_mode", one_of("constant", "reflect", "replicate", "circular"), "pad_mode", "reflect"),
        Translated(
            "true_skip",
            ValueMap(((True, False), (False, True)), "a residual shortcut or a conv"),
            "use_conv_shortcut",
            True,
        ),
        Translated("compress", integer(1, 64), "compress", 2),
        Translated("lstm", integer(0, 64), "num_lstm_layers", 0),
        Checked("disable_norm_outer_blocks", (0,), "transformers normalises every block's convs", 0, integer(0, 64)),
        Checked("encoder", ({},), "no encoder-only settings: transformers has one set", {}, _settings),
        DECODER,
    ),
)
"""audiocraft's SEANet settings, shared by encoder and decoder."""

RVQ = ConfigTable(
    "audiocraft xp.cfg rvq",
    (
        Translated("n_q", integer(1, 1024), None, 8),
        Translated("bins", integer(2, 1 << 20), "codebook_size", 1024),
        Ignored("dimension", "the quantizer's width: the encoder's dimension"),
        *ignore_all(
            (
                "q_dropout",
                "decay",
                "kmeans_init",
                "kmeans_iters",
                "threshold_ema_dead_code",
                "orthogonal_reg_weight",
                "orthogonal_reg_active_codes_only",
                "orthogonal_reg_max_codes",
            ),
            TRAINING,
        ),
    ),
)
"""The residual vector quantizer: how many codebooks, of how many codes."""

ENCODEC = ConfigTable(
    "audiocraft xp.cfg encodec",
    (
        Checked("autoencoder", ("seanet",), "transformers' EnCodec is SEANet", "seanet", one_of("seanet")),
        Checked(
            "quantizer",
            ("rvq",),
            "transformers' EnCodec quantizes with a residual VQ",
            "rvq",
            one_of("rvq", "no_quant"),
        ),
        Translated("sample_rate", integer(1, 1 << 20), "sampling_rate", 32000),
        Translated("channels", integer(1, 2), None, 1),
        Translated("causal", boolean, None, False),
        Translated("renormalize", boolean, "normalize", False),
        Ignored("renorm", "audiocraft's deprecated name of renormalize"),
    ),
)
"""The compression model around them: rate, channels, renormalisation."""


def _agree(seanet: Translation, encodec: Translation) -> BadConfig | None:
    """The ``encodec`` section repeats the channels and causality that SEANet has; they must agree."""
    for name in ("channels", "causal"):
        if encodec.values[name] != seanet.values[name]:
            expected = f"{seanet.values[name]!r}, as seanet.{name} (one model has one)"
            return BadConfig(ENCODEC.section, name, expected, repr(encodec.values[name]))
    return None


def frame_rate(config: PretrainedConfig) -> int:
    """Frames per second: the rate over the hop (the strides' product), rounded up as transformers does."""
    return math.ceil(int(config.sampling_rate) / math.prod(int(r) for r in config.upsampling_ratios))


def bandwidth(config: PretrainedConfig, n_q: int) -> float:
    """The target bandwidth at which transformers' EnCodec uses ``n_q`` codebooks (log2(bins) bits each)."""
    return n_q * frame_rate(config) * math.log2(int(config.codebook_size)) / 1000


def using(config: PretrainedConfig, n_q: int) -> PretrainedConfig:
    """``config`` for a model that codes with its first ``n_q`` codebooks, as audiocraft's
    ``set_num_codebooks``: its first bandwidth (what transformers' ``encode`` uses unless told) takes
    ``n_q``, its last (what sizes the quantizer) all it holds."""
    held = codebooks(config)
    bandwidths = [bandwidth(config, n) for n in dict.fromkeys((n_q, held))]
    if [round(float(b) * 1000) for b in config.target_bandwidths] == [round(b * 1000) for b in bandwidths]:
        return config
    return type(config).from_dict({**config.to_dict(), "target_bandwidths": bandwidths})


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """``xp.cfg`` (YAML text, as audiocraft's export writes it) -> ``EncodecConfig``; the one target
    bandwidth is what makes transformers use every codebook."""
    cfg = xp_cfg_of(meta)
    if isinstance(cfg, BadConfig):
        return Failure(cfg)

    def built(seanet: Translation, rvq: Translation, encodec: Translation) -> Result[TranslatedConfig, BadConfig]:
        wrong = _agree(seanet, encodec)
        if wrong is not None:
            return Failure(wrong)
        config = EncodecConfig(**seanet.kwargs, **rvq.kwargs, **encodec.kwargs, chunk_length_s=None, overlap=None)
        config.target_bandwidths = [bandwidth(config, rvq.values["n_q"])]
        return Success(TranslatedConfig(config, left_behind((seanet, rvq, encodec))))

    if get(cfg, "compression_model", None) != "encodec":
        found = repr(get(cfg, "compression_model", None))
        return Failure(BadConfig("audiocraft xp.cfg", "compression_model", "'encodec'", found))
    sections = ((SEANET, get(cfg, "seanet", None)), (RVQ, get(cfg, "rvq", None)), (ENCODEC, get(cfg, "encodec", None)))
    return translate_each(sections).bind(lambda read: built(*read))


def xp_cfg_of(meta: Mapping[str, Any]) -> Any:
    """The file's ``xp.cfg``: YAML text (:func:`wmap.yaml_text.read_yaml`: read safely, bounded, its
    interpolations resolved), or an omegaconf config pickled as it is (a solver's own checkpoint), read
    as the same text would be."""
    return read_config(meta.get("xp.cfg"), "xp.cfg")


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """The encodec package's names: :func:`~wmap.models.encodec.encodec_pipeline`, with the time-group
    norms where the config has them."""
    return encodec_pipeline(config, with_norms=config.norm_type == "time_group_norm")


def codebooks(config: PretrainedConfig) -> int:
    """How many codebooks the (one) target bandwidth uses: audiocraft's ``rvq.n_q`` (translate_config
    wrote the bandwidth so)."""
    bits = math.log2(int(config.codebook_size))
    return round(float(config.target_bandwidths[-1]) * 1000 / (frame_rate(config) * bits))


def quantizers(config: PretrainedConfig) -> dict[str, int]:
    """``rvq.n_q``: the codebooks the target bandwidth uses (:func:`codebooks`)."""
    return {"n_q": codebooks(config)}


LAYOUT_BACK = (
    Translated("channels", integer(1, 64), "audio_channels"),
    Translated("causal", boolean, "use_causal_conv"),
)
"""``encodec``'s audio channels and causality, read back only (forward, ``seanet``'s rows say them)."""

XP_CFG = {
    "compression_model": "encodec",
    "seanet": Merged(Back(SEANET.fields, fixed=True), {"norm_params": {}}),
    "rvq": Merged(Back(RVQ.fields), Made(quantizers), {"q_dropout": False}),
    "encodec": Merged(Back(ENCODEC.fields, fixed=True), Back(LAYOUT_BACK)),
    "device": "cpu",
}
"""The sections of ``xp.cfg`` audiocraft's loader builds the model from, the tables read back."""


def transposed(config: PretrainedConfig) -> frozenset[str]:
    """The decoder layers that are transposed convs (``decoder.layers.N``, built on ``meta``): the
    encodec package names them ``convtr.convtr`` where a conv is ``conv.conv``, and the forward rules
    send both to ``conv``, so the way back needs to know which is which."""
    import torch
    from transformers import EncodecModel

    from wmap.layout import build_on_meta

    assert isinstance(config, EncodecConfig)  # the family's config class, checked when it was read
    model = build_on_meta(lambda: EncodecModel(config))
    return frozenset(
        name.rsplit(".", 1)[0] for name, module in model.named_modules() if isinstance(module, torch.nn.ConvTranspose1d)
    )


def audiocraft_names(predicted: Layout, config: PretrainedConfig, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """audiocraft's layout from the reversed rules' names (those under ``prefix``): torch's weight-norm
    hook names (audiocraft's convs use them) and ``convtr.convtr`` where the decoder's layer is a
    transposed conv; other keys as they are."""
    upsampling = {name.split(".")[2] for name in transposed(config)}  # decoder.layers.N.conv -> N
    layout: dict[str, tuple[int, ...]] = {}
    for key, shape in weight_norm_hook_names(predicted).items():
        head, parts = (prefix, key[len(prefix) :].split(".")) if key.startswith(prefix) else ("", [])
        if parts[:2] == ["decoder", "model"] and parts[2] in upsampling and parts[3:5] == ["conv", "conv"]:
            key = head + ".".join([*parts[:3], "convtr", "convtr", *parts[5:]])
        layout[key] = shape
    return layout


def xp_cfg_text(config: PretrainedConfig) -> str:
    """:data:`XP_CFG` as the YAML text audiocraft's export writes."""
    return dump_yaml(written(XP_CFG, config))


def _original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    """audiocraft's layout (:func:`audiocraft_names`) and its ``xp.cfg``."""
    layout = audiocraft_names(predicted_layout(source.pipeline, source.converted), source.config)
    return Success((layout, {"xp.cfg": xp_cfg_text(source.config)}))


def _container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """What ``audiocraft.utils.export.export_encodec`` writes (the version: the audiocraft wmap tests)."""
    return {"best_state": dict(state), "xp.cfg": meta["xp.cfg"], "version": "1.3.0", "exported": True}


ENCODEC_AUDIOCRAFT = ModelSpec(
    **shipped("encodec_audiocraft"),
    config_class=EncodecConfig,
    config_from_checkpoint=translate_config,
    pipeline=pipeline,
    model_class="EncodecModel",
    extras=feature_extractor_files,
    export=Exporter(
        _original, _container, "an audiocraft compression_state_dict.bin (load_compression_model reads it)"
    ),
)
