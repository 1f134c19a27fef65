"""audiocraft MusicGen -> ``MusicgenForConditionalGeneration`` (with its processor and generation
config), from the directory ``MusicGen.get_pretrained(path)`` reads (or a training run's checkpoint)
and its T5 text encoder.

An audiocraft MusicGen is three parts in two files and one name: ``state_dict.bin`` (the LM, with the
projection of the text encoder's states into the LM: ``condition_provider...output_proj``),
``compression_state_dict.bin`` (its EnCodec) and, by name only, the T5 the LM was conditioned on
(audiocraft downloads it; its weights are in neither file). :mod:`wmap.models.musicgen_parts` reads
the three as one source (the T5 from ``--text-encoder`` or the Hugging Face cache). The plan shows
each part under its own prefix (``lm.``, ``compression.``, ``text_encoder.``): what comes from where.

The LM's ``xp.cfg`` is read by tables (every field of ``transformer_lm`` accounted for; the codebook
pattern, the conditioners and the fuser checked to be what transformers' MusicGen computes: the delay
pattern, one T5 description through cross-attention); the compression model's by
:mod:`wmap.models.encodec_audiocraft`; the text encoder's ``config.json`` as transformers reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import attrs
from returns.result import Failure, Result, Success
from transformers import (
    EncodecConfig,
    GenerationConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    PretrainedConfig,
    T5Config,
)

from wmap.config_back import Back, Made, Merged, Slot, filled, written
from wmap.config_fields import (
    PROBABILITY,
    Checked,
    Composite,
    ConfigTable,
    Decided,
    Ignored,
    Joint,
    Translated,
    Translation,
    boolean,
    divides,
    fixed_back,
    get,
    ignore_all,
    integer,
    left_behind,
    number,
    optional,
    text,
    translate_each,
)
from wmap.errors import BadConfig, Disagrees
from wmap.io import (
    parse_json,
    save_processor,
)
from wmap.models import encodec_audiocraft
from wmap.models.base import (
    Exporter,
    ExportSource,
    ModelSpec,
    TranslatedConfig,
    Writer,
    config_from_dict,
    shipped,
    writing,
)
from wmap.models.musicgen_parts import (
    COMPRESSION_FILE,
    LM_FILE,
    PRETRAINED,
    T5_NEEDED,
    TEXT_ENCODER,
    TEXT_ENCODER_FROM,
    read_parts,
)
from wmap.pipeline import first_match, scoped, seq
from wmap.reverse import predicted_layout
from wmap.transforms import PARAMS, Layout, Transform, rename, route_weight_norm, skip, split, tie
from wmap.yaml_text import dump_yaml

_E = TypeVar("_E")

SOURCE = "audiocraft xp.cfg transformer_lm"
TRAINING = "training-only setting (initialisation, learning rate, checkpointing)"


def _listed(value: object) -> Result[Any, str]:
    """A list of names (omegaconf's list read as a plain one)."""
    return Success([str(v) for v in value]) if isinstance(value, list | tuple) else Failure("a list of names")


def _anything(value: object) -> Result[Any, str]:
    return Success(value)


def feed_forward(values: Mapping[str, Any]) -> dict[str, int]:
    """The feed-forward width: ``hidden_scale`` times the model's."""
    return {"ffn_dim": int(values["hidden_scale"] * values["dim"])}


def feed_forward_back(decoder: Any) -> dict[str, float]:
    scale = decoder.ffn_dim / decoder.hidden_size
    return {"hidden_scale": int(scale) if float(scale).is_integer() else scale}


def codebook_ids(card: int) -> dict[str, int]:
    """The codebooks' size (audiocraft's ``card``); the special token (start and padding) is the next
    id (audiocraft's embeddings hold one more row)."""
    return {"vocab_size": card, "pad_token_id": card, "bos_token_id": card}


def attention_dropout(values: Mapping[str, Any]) -> dict[str, float]:
    """The attention's dropout: the layers' own where ``attention_dropout`` is unset (audiocraft's)."""
    found = values["attention_dropout"]
    return {"attention_dropout": values["dropout"] if found is None else found}


def attention_dropout_back(decoder: Any) -> dict[str, float]:
    return {"attention_dropout": float(decoder.attention_dropout)}


TRANSFORMER_LM = ConfigTable(
    SOURCE,
    (
        Translated("dim", integer(1, 65536), "hidden_size"),
        Translated("num_heads", integer(1, 1024), "num_attention_heads", fits=divides("dim")),
        Translated("num_layers", integer(1, 1024), "num_hidden_layers"),
        Joint("hidden_scale", number(0.0, 1024.0), feed_forward, feed_forward_back, 4),
        Translated("n_q", integer(1, 64), "num_codebooks", 8),
        Composite("card", integer(2, 1 << 20), codebook_ids, lambda decoder: decoder.vocab_size, 1024),
        Translated("dropout", PROBABILITY, "dropout", 0.0),
        Joint("attention_dropout", optional(PROBABILITY), attention_dropout, attention_dropout_back, None),
        Checked("activation", ("gelu",), "transformers' MusicGen uses GELU", "gelu", text),
        Checked("norm_first", (True,), "transformers' MusicGen normalises before each block", False),
        Checked("norm", ("layer_norm",), "transformers' MusicGen has layer norms", "layer_norm", text),
        Checked("bias_ff", (False,), "transformers' MusicGen feed-forward layers have no bias", True),
        Checked("bias_attn", (False,), "transformers' MusicGen attention projections have no bias", True),
        Checked("bias_proj", (False,), "transformers' MusicGen output heads have no bias", True),
        Checked("causal", (True,), "transformers' MusicGen decoder is causal", False),
        Checked(
            "past_context",
            (None,),
            "transformers' MusicGen attends to all the past",
            None,
            optional(integer(0, 1 << 30)),
        ),
        Checked("layer_scale", (None,), "transformers' MusicGen has no layer scale", None, optional(number(-1e9, 1e9))),
        Checked("positional_embedding", ("sin",), "transformers' MusicGen adds sinusoidal positions", "sin", text),
        Checked("xpos", (False,), "transformers' MusicGen has no xpos", False),
        Checked("qk_layer_norm", (False,), "transformers' MusicGen has no query/key norms", False),
        Checked("qk_layer_norm_cross", (False,), "transformers' MusicGen has no query/key norms", False),
        Checked(
            "kv_repeat", (1,), "transformers' MusicGen has as many key/value heads as query heads", 1, integer(1, 64)
        ),
        Checked(
            "max_period", (10000,), "transformers' MusicGen's positions have period 10000", 10000, integer(1, 1 << 30)
        ),
        Checked("positional_scale", (1.0,), "transformers' MusicGen adds positions unscaled", 1.0, number(0.0, 1e9)),
        Decided("custom", "audiocraft's own attention or torch's (under mha.): the rules take either name"),
        Ignored("memory_efficient", "the attention kernel (xformers): the same computation"),
        Ignored("attention_as_float32", "a numerical detail of audiocraft's attention kernel"),
        Ignored("cross_attention", "set by the fuser (checked: the description through cross-attention)"),
        Ignored("two_step_cfg", "how audiocraft batches classifier-free guidance: the same result"),
        Decided("q_modeling", "the codebook pattern's modeling when it has none (checked with it)"),
        *ignore_all(
            ("emb_lr", "weight_init", "depthwise_init", "zero_bias_init", "checkpointing", "lr", "weight_decay"),
            TRAINING,
        ),
    ),
)
"""audiocraft's ``transformer_lm`` section: LMModel's and StreamingTransformer's arguments."""

DELAY = ConfigTable(
    "audiocraft xp.cfg codebooks_pattern",
    (
        Checked(
            "modeling",
            ("delay",),
            "transformers' MusicGen models the codebooks with a delay pattern",
            "delay",
            optional(text),
        ),
        Translated("delay", _anything, None, {}),
    ),
)
CONDITIONING = ConfigTable(
    "audiocraft xp.cfg fuser",
    (
        Checked(
            "cross",
            (["description"],),
            "transformers' MusicGen conditions on one text description, by cross-attention",
            [],
            _listed,
        ),
        *(
            Checked(name, ([],), "transformers' MusicGen conditions by cross-attention only", [], _listed)
            for name in ("sum", "prepend", "input_interpolate")
        ),
        Checked(
            "cross_attention_pos_emb", (False,), "transformers' MusicGen adds no positions to the condition", False
        ),
        Ignored("cross_attention_pos_emb_scale", "used only with positions on the condition (checked off)"),
    ),
)
STEREO = ConfigTable(
    "audiocraft xp.cfg interleave_stereo_codebooks",
    (
        Translated("use", boolean, None, False),
        Checked(
            "per_timestep",
            (False,),
            "transformers' stereo MusicGen interleaves the two channels' codebooks, not their time steps",
            False,
            boolean,
        ),
        Ignored("downsample", "an early stereo setting audiocraft's own export drops"),
    ),
)
"""Stereo (absent: mono): audiocraft wraps the mono compression model to code each channel, their
codebooks interleaved (left, right for each); transformers' MusicGen does so with ``audio_channels`` 2."""


CODEBOOKS_USED = ConfigTable(
    "audiocraft xp.cfg",
    (Translated("compression_model_n_q", optional(integer(1, 64)), None, None),),
)
"""How many of the compression model's codebooks the LM models (audiocraft's ``set_num_codebooks`` on
the compression model it loads; unset: all of them)."""


def channels(stereo: Translation) -> int:
    """Audio channels of the LM's codes: 2 where they interleave a stereo pair's."""
    return 2 if stereo.values["use"] else 1


def delay_steps(codebooks: int, pair: int) -> list[int]:
    """The delay pattern transformers applies, by codebook: one step per codebook of each of the ``pair``
    channels (``0, 1, 2, 3`` mono; ``0, 0, 1, 1, ...`` stereo)."""
    return [step for step in range(codebooks // pair) for _ in range(pair)]


DEFAULT_GUIDANCE = 3.0
"""audiocraft's coefficient where a config has none."""

GUIDANCE = ConfigTable(
    "audiocraft xp.cfg classifier_free_guidance",
    (
        Translated("inference_coef", number(0.0, 1000.0), None, DEFAULT_GUIDANCE),
        Ignored("training_dropout", "training-only: how often the condition was dropped"),
    ),
)


def _conditioner(cfg: object) -> BadConfig | None:
    """One conditioner, the text description by T5 (a melody's chroma, a LUT: another model)."""
    conditioners = get(cfg, "conditioners", None)
    names = [str(name) for name in conditioners] if isinstance(conditioners, Mapping) else []
    model = get(get(conditioners, "description", None), "model", None)
    if names != ["description"] or model != "t5":
        expected = "one 'description' conditioner of model t5 (MusicGen's; a melody's chroma is another model)"
        return BadConfig("audiocraft xp.cfg", "conditioners", expected, f"{names} ({model})")
    if get(cfg, "lm_model", None) != "transformer_lm":
        return BadConfig("audiocraft xp.cfg", "lm_model", "'transformer_lm'", repr(get(cfg, "lm_model", None)))
    return None


def _delays(lm: Translation, delay: Translation, stereo: Translation) -> BadConfig | None:
    """The delay pattern transformers applies: one step per codebook (each channel's: ``0, 0, 1, 1, ...``
    in stereo), nothing flattened or empty first."""
    n_q, settings, pair = lm.values["n_q"], delay.values["delay"], channels(stereo)
    if n_q % pair:
        return BadConfig(TRANSFORMER_LM.section, "n_q", "an even number: a stereo pair's codebooks", str(n_q))
    expected = delay_steps(n_q, pair)
    delays = get(settings, "delays", None)
    if delays is not None and _listed(delays).value_or(None) != [str(n) for n in expected]:
        each = "codebook" if pair == 1 else "codebook of each channel"
        return BadConfig(DELAY.section, "delay.delays", f"{expected} (one step per {each})", str(delays))
    for name in ("flatten_first", "empty_initial"):
        if get(settings, name, 0) != 0:
            return BadConfig(
                DELAY.section, f"delay.{name}", "0 (transformers' delay pattern)", str(get(settings, name))
            )
    return None


def decoder_config(lm: Translation, stereo: Translation) -> MusicgenDecoderConfig:
    """The LM -> ``MusicgenDecoderConfig`` (GELU: the only activation its table accepts), mono or stereo."""
    return MusicgenDecoderConfig(**lm.kwargs, activation_function="gelu", audio_channels=channels(stereo))


PROJECTION = "lm.condition_provider.conditioners.description.output_proj.weight"
"""The LM's projection of the text encoder's states (its input width is the text encoder's)."""


_C = TypeVar("_C", bound=PretrainedConfig)


def config_json(found: object, where: str, config_class: type[_C], why: str) -> Result[_C, BadConfig]:
    """A part's transformers ``config.json`` (the T5's, a named EnCodec's) as ``config_class``, whose
    ``model_type`` it must be (``why``: what needs it)."""
    model_type = str(config_class.model_type)
    if not isinstance(found, Mapping) or found.get("model_type") != model_type:
        kind = found.get("model_type") if isinstance(found, Mapping) else type(found).__name__
        return Failure(BadConfig(where, "model_type", f"{model_type!r} ({why})", repr(kind)))
    return config_from_dict(config_class, found).alt(
        lambda detail: BadConfig(where, "config", f"a {model_type} config", detail)
    )


def _text_encoder_config(found: object) -> Result[T5Config, BadConfig]:
    return config_json(found, f"{TEXT_ENCODER} config.json", T5Config, "audiocraft conditions MusicGen on T5")


def audio_encoder_config(meta: Mapping[str, Any]) -> Result[TranslatedConfig, BadConfig]:
    """The compression model's config: its ``xp.cfg`` read by :mod:`~wmap.models.encodec_audiocraft`, or
    the ``config.json`` of the transformers EnCodec the file names (:func:`named_encodec`)."""
    if PRETRAINED not in meta:
        return encodec_audiocraft.translate_config(meta, {})
    where = f"{meta[PRETRAINED]} config.json"
    return config_json(meta.get("config"), where, EncodecConfig, "MusicGen's audio encoder").map(TranslatedConfig)


def _composite(parts: tuple[Any, ...], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """``MusicgenConfig`` of the three, where they fit together: the LM's codebooks are the compression
    model's (as many, or the first ``compression_model_n_q``; as large), its projection takes the text
    encoder's width. Where the LM uses fewer codebooks than the compression model holds, the audio
    encoder's first bandwidth (what transformers encodes a prompt at) takes that many."""
    reads, audio, t5 = parts
    lm, *_, codebooks_used, stereo = reads
    decoder = decoder_config(lm, stereo)
    held = encodec_audiocraft.codebooks(audio.config)
    used = codebooks_used.values["compression_model_n_q"] or held
    if used > held:
        expected = f"at most {held} (the compression model's codebooks)"
        return Failure(BadConfig(CODEBOOKS_USED.section, "compression_model_n_q", expected, str(used)))
    codebooks = used * decoder.audio_channels
    if (decoder.num_codebooks, decoder.vocab_size) != (codebooks, audio.config.codebook_size):
        each = "" if decoder.audio_channels == 1 else ", for each of the two channels"
        whose = "the compression model's" if used == held else "compression_model_n_q's"
        expected = f"{codebooks} codebooks of {audio.config.codebook_size} ({whose}{each})"
        found = f"n_q {decoder.num_codebooks}, card {decoder.vocab_size}"
        return Failure(BadConfig(SOURCE, "n_q, card", expected, found))
    width = layout.get(PROJECTION, (0, t5.d_model))[1]
    if width != t5.d_model:
        expected = f"{width} (the width the LM's projection takes)"
        return Failure(BadConfig(f"{TEXT_ENCODER} config.json", "d_model", expected, str(t5.d_model)))
    encoder = encodec_audiocraft.using(audio.config, used)
    config = MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=encoder.to_dict(), decoder=decoder.to_dict())
    ignored = left_behind(reads) + audio.ignored  # the audio part: translated on its own
    return Success(TranslatedConfig(config, ignored))


def _lm_sections(cfg: object) -> Result[tuple[Translation, ...], BadConfig]:
    wrong = _conditioner(cfg)
    if wrong is not None:
        return Failure(wrong)
    sections = (
        (TRANSFORMER_LM, get(cfg, "transformer_lm", None)),
        (DELAY, get(cfg, "codebooks_pattern", None)),
        (CONDITIONING, get(cfg, "fuser", None)),
        (GUIDANCE, get(cfg, "classifier_free_guidance", None)),
        (CODEBOOKS_USED, {"compression_model_n_q": get(cfg, "compression_model_n_q", None)}),
        (STEREO, get(cfg, "interleave_stereo_codebooks", None) or {}),  # absent: mono (audiocraft's hasattr)
    )
    read = translate_each(sections)
    wrong = read.map(lambda found: _delays(found[0], found[1], found[-1])).value_or(None)
    return Failure(wrong) if wrong is not None else read


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """The three parts' configs (the LM's ``xp.cfg``, the compression model's, the text encoder's
    ``config.json``), joined into one ``MusicgenConfig``."""
    cfg = lm_xp_cfg_of(meta)
    lm = Failure(cfg) if isinstance(cfg, BadConfig) else _lm_sections(cfg)
    audio = audio_encoder_config(meta.get("compression") or {})
    t5 = _text_encoder_config(meta.get("text_encoder"))
    parts: Result[tuple[Any, ...], BadConfig] = Result.do(
        (sections, encoder, text) for sections in lm for encoder in audio for text in t5
    )
    return parts.bind(lambda found: _composite(found, layout))


def _coefficient(value: object) -> float:
    """``value`` as a guidance coefficient where it is a number, else :data:`DEFAULT_GUIDANCE`."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else DEFAULT_GUIDANCE


def lm_xp_cfg_of(meta: Mapping[str, Any]) -> Any:
    """The LM's ``xp.cfg`` as read (:func:`~wmap.models.encodec_audiocraft.xp_cfg_of`: a mapping, or the
    :class:`BadConfig` that says why not)."""
    return encodec_audiocraft.xp_cfg_of(meta.get("lm") or {})


def guidance(cfg: object) -> float:
    """The LM's classifier-free guidance coefficient at inference, from its read ``xp.cfg``
    (:data:`DEFAULT_GUIDANCE` where it has none)."""
    return _coefficient(get(get(cfg, "classifier_free_guidance", None), "inference_coef", DEFAULT_GUIDANCE))


def segment_duration(cfg: object) -> float | None:
    """The LM's training segment in seconds (``dataset.segment_duration``: audiocraft's ``max_duration``),
    where its read ``xp.cfg`` has a positive number there."""
    found = get(get(cfg, "dataset", None), "segment_duration", None)
    number_ = isinstance(found, int | float) and not isinstance(found, bool) and 0 < found < 1e6
    return float(found) if number_ else None


def _attention(source: str, target: str) -> tuple[Transform, ...]:
    """audiocraft's fused attention -> q, k, v and out projections."""
    return (
        split(f"{source}.in_proj_weight", tuple(f"{target}.{p}_proj.weight" for p in "qkv")),
        rename(f"{source}.out_proj", f"{target}.out_proj", PARAMS),
    )


LAYER = (
    *(
        rule
        for inner in (".mha", "")  # torch's attention (custom: false, the way back's names) or audiocraft's own
        for rule in (
            *_attention(f"self_attn{inner}", "self_attn"),
            *_attention(f"cross_attention{inner}", "encoder_attn"),
        )
    ),
    rename("linear1", "fc1", PARAMS),
    rename("linear2", "fc2", PARAMS),
    rename("norm1", "self_attn_layer_norm", PARAMS),
    rename("norm_cross", "encoder_attn_layer_norm", PARAMS),
    rename("norm2", "final_layer_norm", PARAMS),
)
"""audiocraft's ``StreamingTransformerLayer`` -> transformers' ``MusicgenDecoderLayer``: the attention
under either name a file holds (the way back writes the name the original's layout has)."""

LM = (
    rename("emb.*", "model.decoder.embed_tokens.*", PARAMS),
    rename("linears.*", "lm_heads.*", PARAMS),
    rename("out_norm", "model.decoder.layer_norm", PARAMS),
    scoped("transformer.layers.*", "model.decoder.layers.*", first_match("MusicGen layer", LAYER)),
)
"""audiocraft's ``LMModel`` -> transformers' ``MusicgenForCausalLM`` (the composite's ``decoder``)."""

TEXT_ENCODER_RULES = (
    tie("shared", "shared", "encoder.embed_tokens"),
    rename("encoder", "encoder"),
)
"""A transformers T5 encoder's names as they are (the token embedding also the encoder's, tied)."""


AS_SAVED = first_match(
    "transformers EnCodec", tuple(rename(part, part) for part in ("encoder", "decoder", "quantizer"))
)
"""A transformers EnCodec's names as they are (one a compression file names: :func:`named_encodec`)."""


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Each part under its prefix: the LM as the decoder (its projection of the text encoder's states
    as ``enc_to_dec_proj``), the compression model as the audio encoder, the text encoder as it is."""
    assert isinstance(config, MusicgenConfig)  # the family's config class, checked when it was read
    assert isinstance(config.audio_encoder, PretrainedConfig)  # MusicgenConfig builds its sub-configs
    named = PRETRAINED in (meta.get("compression") or {})
    audio = AS_SAVED if named else encodec_audiocraft.pipeline(config.audio_encoder, meta)
    parts = (
        rename("lm.condition_provider.conditioners.description.output_proj", "enc_to_dec_proj", PARAMS),
        scoped("lm", "decoder", first_match("MusicGen LM", LM)),
        scoped("compression", "audio_encoder", audio),
        scoped("text_encoder", "text_encoder", first_match("T5 encoder", TEXT_ENCODER_RULES)),
    )
    return seq(first_match("MusicGen", parts), route_weight_norm())


@attrs.frozen
class Sampling:
    """How audiocraft's generation wrapper samples by default (its ``set_generation_params``): top-k 250,
    guided by the LM's coefficient, for ``seconds`` of audio at most audiocraft's ``max_duration`` (the
    LM's training segment, ``dataset.segment_duration``). ``longest``: the length is that ``max_duration``,
    ``seconds`` where the config has none (MusicGen: 30, as transformers' own MusicGen checkpoints, whose
    runs had 30 s segments; audiocraft's wrapper defaults to 15); else ``seconds`` (AudioGen: 5, its
    wrapper's default)."""

    seconds: float
    longest: bool = False

    def length(self, cfg: object) -> float:
        """Seconds of audio generated by default, from the LM's training segment where its read ``xp.cfg``
        has one."""
        segment = segment_duration(cfg)
        if segment is None:
            return self.seconds
        return segment if self.longest else min(self.seconds, segment)

    def generation_config(self, config: PretrainedConfig, meta: Mapping[str, Any]) -> GenerationConfig:
        """From the special token (audiocraft's ``card``), as audiocraft samples."""
        special, cfg = int(config.decoder.pad_token_id), lm_xp_cfg_of(meta)
        return GenerationConfig(
            decoder_start_token_id=special,
            pad_token_id=special,
            do_sample=True,
            top_k=250,
            guidance_scale=guidance(cfg),
            max_length=round(self.length(cfg) * float(config.audio_encoder.frame_rate)),
        )

    def processor_files(
        self, config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
    ) -> Result[Writer, BadConfig]:
        """``MusicgenProcessor`` (the text encoder directory's tokenizer, an EnCodec feature extractor at
        the compression model's rate) and the generation settings."""
        from transformers import AutoTokenizer, EncodecFeatureExtractor

        folder = file or meta.get(TEXT_ENCODER_FROM)
        if folder is None:
            return Failure(BadConfig("audiocraft LM", TEXT_ENCODER, T5_NEEDED, "none"))
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as error:  # a directory without tokenizer files, of many kinds
            detail = " ".join(str(error).split())[:120]
            return Failure(BadConfig(str(folder), "tokenizer", "the T5 tokenizer's files", detail))
        audio = config.audio_encoder  # a stereo MusicGen takes two channels, each coded by the mono EnCodec
        extractor = EncodecFeatureExtractor(
            feature_size=int(config.decoder.audio_channels), sampling_rate=int(audio.sampling_rate)
        )
        processor = partial(save_processor, "MusicgenProcessor", extractor, tokenizer)
        return Success(writing(processor, self.generation_config(config, meta).save_pretrained))

    def generation_only(
        self, config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None
    ) -> Result[Writer, BadConfig]:
        """``--no-processor``: the generation settings alone."""
        return Success(self.generation_config(config, meta).save_pretrained)


T5_NAMES: Mapping[tuple[int, int, int, str], str] = {
    (512, 6, 2048, "relu"): "t5-small",
    (768, 12, 3072, "relu"): "t5-base",
    (1024, 24, 4096, "relu"): "t5-large",
    (1024, 24, 16384, "relu"): "t5-3b",
    (1024, 24, 65536, "relu"): "t5-11b",
    (512, 8, 1024, "gated-gelu"): "google/flan-t5-small",
    (768, 12, 2048, "gated-gelu"): "google/flan-t5-base",
    (1024, 24, 2816, "gated-gelu"): "google/flan-t5-large",
    (2048, 24, 5120, "gated-gelu"): "google/flan-t5-xl",
    (4096, 24, 10240, "gated-gelu"): "google/flan-t5-xxl",
}
"""The T5s audiocraft's conditioner can name (its ``MODELS``), by what shapes them: (width, layers,
feed-forward width, feed-forward kind). audiocraft loads the T5 by name, so the way back names the one
the directory's text encoder is; a text encoder that is none of them cannot be named."""

SKIPPED_T5 = "audiocraft loads the T5 by name (conditioners.description.t5.name): its weights are not in its files"


def t5_name(config: PretrainedConfig) -> Result[str, BadConfig]:
    """The name audiocraft loads ``config``'s text encoder by (:data:`T5_NAMES`)."""
    t5 = config.text_encoder
    shape = (int(t5.d_model), int(t5.num_layers), int(t5.d_ff), str(t5.feed_forward_proj))
    if shape in T5_NAMES:
        return Success(T5_NAMES[shape])
    expected = (
        "a T5 audiocraft can name (d_model, num_layers, d_ff, feed_forward_proj of "
        + ", ".join(T5_NAMES.values())
        + ")"
    )
    return Failure(Disagrees("config.json", "text_encoder", expected, str(shape)))  # a refusal: exit 1


def delays_back(config: PretrainedConfig) -> dict[str, Any]:
    """The delay pattern's steps, by codebook (:func:`delay_steps`), nothing before the first."""
    decoder = config.decoder
    return {"delays": delay_steps(int(decoder.num_codebooks), int(decoder.audio_channels)), **NOTHING_FIRST}


def stereo_back(config: PretrainedConfig) -> bool:
    """Whether the codebooks interleave two channels."""
    return int(config.decoder.audio_channels) == 2


def codebooks_used(config: PretrainedConfig) -> int | None:
    """``compression_model_n_q``: the codebooks the LM uses of each channel, where not all the compression
    model holds (else ``None``)."""
    used = int(config.decoder.num_codebooks) // int(config.decoder.audio_channels)
    return None if used == encodec_audiocraft.codebooks(config.audio_encoder) else used


NOTHING_FIRST = {"flatten_first": 0, "empty_initial": 0}
NO_TEXT_AUGMENTATION = {"word_dropout": 0.0, "normalize_text": False}


T5_NAME = Slot("the name audiocraft loads the text encoder by (t5_name)")
GUIDANCE_COEFFICIENT = Slot("the classifier-free guidance coefficient of the generation settings")
SECONDS = Slot("the training segment in seconds: the generation length")

LM_XP_CFG = {
    "lm_model": "transformer_lm",
    "device": "cpu",
    "dtype": "float32",
    "dataset": {"segment_duration": SECONDS},
    "transformer_lm": Merged(Back(TRANSFORMER_LM.fields, of="decoder", fixed=True), {"custom": False}),
    "codebooks_pattern": {**fixed_back(DELAY.fields), "delay": Made(delays_back)},
    "conditioners": {
        "description": {"model": "t5", "t5": {"name": T5_NAME, "finetune": False, **NO_TEXT_AUGMENTATION}}
    },
    "fuser": {**fixed_back(CONDITIONING.fields), "cross_attention_pos_emb_scale": 1},
    "attribute_dropout": {},
    "classifier_free_guidance": {"training_dropout": 0.0, "inference_coef": GUIDANCE_COEFFICIENT},
    "interleave_stereo_codebooks": {**fixed_back(STEREO.fields), "use": Made(stereo_back)},
    "compression_model_n_q": Made(codebooks_used),
}
"""The LM's ``xp.cfg`` sections audiocraft's ``load_lm_model`` builds from: the tables read back (the
checked single values, the translated ones; what the tables ignore at audiocraft's defaults), torch's
attention (``custom: false``: the names the rules write back), the T5 by name (:data:`T5_NAME`)."""


GENERATION = "generation_config.json"


def _generation_settings(files: Mapping[str, str]) -> Mapping[str, Any]:
    """The directory's generation settings (``generation_config.json``, read once); none where it has no
    readable ones."""
    try:
        found = parse_json(files[GENERATION])
    except (KeyError, ValueError):
        return {}
    return found if isinstance(found, Mapping) else {}


def _seconds_of(settings: Mapping[str, Any], config: PretrainedConfig, otherwise: float) -> float:
    """The generation length in seconds (``max_length`` frames), ``otherwise`` where the settings have none:
    the LM's training segment the way back writes (audiocraft's ``max_duration``)."""
    frames = settings.get("max_length")
    if not isinstance(frames, int) or isinstance(frames, bool) or frames <= 0:
        return otherwise
    return round(frames / float(config.audio_encoder.frame_rate), 3)


def _part(state: Mapping[str, Any], part: str) -> dict[str, Any]:
    head = part + "."
    return {key[len(head) :]: tensor for key, tensor in state.items() if key.startswith(head)}


def _exported(state: dict[str, Any], cfg: str) -> dict[str, Any]:
    """What audiocraft's ``export_lm`` / ``export_encodec`` write (the version: the audiocraft wmap tests)."""
    return {"best_state": state, "xp.cfg": cfg, "version": "1.3.0", "exported": True}


def exporter(sampling: Sampling) -> Exporter:
    """Back to the directory ``MusicGen.get_pretrained(path)`` reads: ``state_dict.bin`` (the file named)
    and ``compression_state_dict.bin`` beside it; the T5 is named in the LM's ``xp.cfg``, not written."""

    def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        config = source.config

        def described(t5: str) -> tuple[Layout, dict[str, Any]]:
            audio = config.audio_encoder
            predicted = predicted_layout(source.pipeline, source.converted)
            layout = encodec_audiocraft.audiocraft_names(predicted, audio, "compression.")
            settings = _generation_settings(source.files)
            seconds = _seconds_of(settings, config, sampling.seconds)
            scale = _coefficient(settings.get("guidance_scale", DEFAULT_GUIDANCE))
            lm = dump_yaml(
                filled(written(LM_XP_CFG, config), {T5_NAME: t5, GUIDANCE_COEFFICIENT: scale, SECONDS: seconds})
            )
            return layout, {"lm": lm, "compression": encodec_audiocraft.xp_cfg_text(audio)}

        return t5_name(config).map(described)

    def container(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
        return _exported(_part(state, "lm"), meta["lm"])

    def beside(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
        return {COMPRESSION_FILE: _exported(_part(state, "compression"), meta["compression"])}

    return Exporter(
        original,
        container,
        f"audiocraft's {LM_FILE} and {COMPRESSION_FILE} beside it (MusicGen.get_pretrained reads the directory)",
        reads=(GENERATION,),
        beside=beside,
        way_back_only=lambda config: (skip("text_encoder", SKIPPED_T5),),
        leaves_out="the T5 text encoder (audiocraft loads it by the name in xp.cfg), the processor files and "
        "the generation settings but the guidance coefficient",
    )


def audiocraft_lm(name: str, sampling: Sampling) -> ModelSpec:
    """An audiocraft text-to-audio LM family (MusicGen, AudioGen: one ``LMModel``, T5 through
    cross-attention, an EnCodec) -> ``MusicgenForConditionalGeneration``."""
    return ModelSpec(
        **shipped(name),
        config_class=MusicgenConfig,
        config_from_checkpoint=translate_config,
        pipeline=pipeline,
        model_class="MusicgenForConditionalGeneration",
        reads=read_parts,
        extras=sampling.processor_files,
        without_processor=sampling.generation_only,
        takes_file=f"{TEXT_ENCODER}: {T5_NEEDED}",
        export=exporter(sampling),
    )


MUSICGEN = audiocraft_lm("musicgen", Sampling(30.0, longest=True))
AUDIOGEN = audiocraft_lm("audiogen", Sampling(5.0))
"""transformers has no AudioGen class: AudioGen's LM is audiocraft's ``LMModel``, as MusicGen's, so
``MusicgenForConditionalGeneration`` computes it (tested against audiocraft's own)."""
