"""fairseq speech-to-text (wav2vec2 encoder + conv adaptor + transformer decoder, ``xm_transformer``)
-> ``SpeechEncoderDecoderModel(Wav2Vec2Model, MBartForCausalLM)``.

Variants without an exact equivalent in transformers are refused by the plan,
naming the keys: an encoder projection without the layer norm the adapter
expects, the adaptor's extra projection layers or input layer norm, a
stacked positional conv, a post-LN decoder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success
from transformers import (
    GenerationConfig,
    MBartConfig,
    PretrainedConfig,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
)

from wmap.errors import BadConfig
from wmap.io import staged_copy
from wmap.models.base import ModelSpec, register
from wmap.models.source_config import encoder_kwargs, fairseq_model_config, field, require_ints
from wmap.models.wav2vec2_family import (
    PRETRAINING_HEADS,
    PROJECTIONS,
    TRANSFORMER_LAYERS,
    WEIGHT_NORM_POS_CONV,
    feature_extractor,
)
from wmap.pipeline import first_match, scoped, seq, when
from wmap.transforms import PARAMS, Layout, Transform, refuse, rename, route_weight_norm, skip, tie

SOURCE = "fairseq cfg.model (xm_transformer)"
W2V = "encoder.w2v_encoder.w2v_model"
EMBED = "decoder.embed_tokens.weight"
POSITIONS = "decoder.embed_positions.weight"
MBART50_EN_XX = 250004
"""The seed's ``forced_bos_token_id`` (``en_XX`` in mBART-50's vocabulary)."""


def encoder_config(model: object, layout: Layout) -> Result[Wav2Vec2Config, BadConfig]:
    """The wav2vec2 encoder (``w2v_args.model``) and the adaptor -> ``Wav2Vec2Config``."""
    w2v = field(field(model, "w2v_args", None), "model", None)
    source = SOURCE + ".w2v_args.model"
    if w2v is None:
        return Failure(BadConfig(SOURCE, "w2v_args", "the wav2vec2 encoder config; or pass --config", "missing"))
    shared = encoder_kwargs(source, w2v, "conv_feature_layers")
    if isinstance(shared, Failure):
        return Failure(shared.failure())
    kwargs = shared.unwrap()
    n_adapter = int(field(model, "adaptor_n_layers", 3))
    kernel = int(field(model, "adaptor_kernel_size", 3))
    if n_adapter and kernel != 3:
        return Failure(BadConfig(SOURCE, "adaptor_kernel_size", "3 (Wav2Vec2's adapter pads by 1)", str(kernel)))
    hidden = kwargs["hidden_size"]
    return Success(
        Wav2Vec2Config(
            **kwargs,
            conv_bias=bool(field(w2v, "conv_bias", False)),
            feat_extract_norm="layer" if field(w2v, "extractor_mode", "default") == "layer_norm" else "group",
            num_conv_pos_embeddings=int(field(w2v, "conv_pos", 128)),
            num_conv_pos_embedding_groups=int(field(w2v, "conv_pos_groups", 16)),
            do_stable_layer_norm=bool(field(w2v, "layer_norm_first", False)),
            add_adapter=n_adapter > 0,
            num_adapter_layers=max(n_adapter, 1),
            adapter_kernel_size=kernel,
            adapter_stride=int(field(model, "adaptor_stride", 2)),
            output_hidden_size=layout.get("encoder.w2v_encoder.proj.weight", (hidden,))[0],
            layerdrop=0.0,
        )
    )


def decoder_config(model: object, layout: Layout) -> Result[MBartConfig, BadConfig]:
    """fairseq's transformer decoder -> ``MBartConfig`` (vocabulary and positions from the weights)."""
    found = require_ints(
        SOURCE, model, ("decoder_embed_dim", "decoder_layers", "decoder_ffn_embed_dim", "decoder_attention_heads")
    )
    if isinstance(found, Failure):
        return Failure(found.failure())
    ints = found.unwrap()
    if EMBED not in layout:
        return Failure(BadConfig("checkpoint", EMBED, "the decoder's token embedding", "missing"))
    vocab = layout[EMBED][0]
    positions = layout.get(POSITIONS, (int(field(model, "max_target_positions", 1024)) + 2,))[0] - 2
    return Success(
        MBartConfig(
            vocab_size=vocab,
            d_model=ints["decoder_embed_dim"],
            decoder_layers=ints["decoder_layers"],
            decoder_ffn_dim=ints["decoder_ffn_embed_dim"],
            decoder_attention_heads=ints["decoder_attention_heads"],
            encoder_layers=0,
            max_position_embeddings=positions,
            activation_function=str(field(model, "activation_fn", "gelu")),
            scale_embedding=not bool(field(model, "no_scale_embedding", False)),
            tie_word_embeddings=bool(field(model, "share_decoder_input_output_embed", False)),
            is_decoder=True,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            decoder_layerdrop=0.0,
        )
    )


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[PretrainedConfig, BadConfig]:
    """The composite config, with the token ids and processor hints the seed sets."""
    model = fairseq_model_config(meta)
    if model is None:
        return Failure(BadConfig("checkpoint", "cfg.model", "a fairseq config (cfg or args); or pass --config", "none"))
    encoder = encoder_config(model, layout)
    if isinstance(encoder, Failure):
        return Failure(encoder.failure())
    decoder = decoder_config(model, layout)
    if isinstance(decoder, Failure):
        return Failure(decoder.failure())
    dec = decoder.unwrap()
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder.unwrap(), dec)
    config.pad_token_id, config.bos_token_id, config.eos_token_id = 1, 0, 2
    config.decoder_start_token_id = 2  # the seed: tokenizer.eos_token_id
    config.feature_extractor_type = "wav2vec2"
    config.tokenizer_class = "mbart50"
    return Success(config)


def encoder_rules(model: object) -> tuple[Transform, ...]:
    """The wav2vec2 encoder under fairseq's prefix, and the adaptor (with refusals)."""
    adaptor_proj = bool(field(model, "adaptor_proj", False))
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
            *PROJECTIONS,
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
    shared = bool(field(model, "share_decoder_input_output_embed", False))
    pre_ln = bool(field(model, "decoder_normalize_before", False))
    out = "decoder.model.decoder"
    return (
        when(
            "share_decoder_input_output_embed",
            shared,
            tie("decoder.embed_tokens", f"{out}.embed_tokens", "decoder.lm_head"),
            rename("decoder.embed_tokens", f"{out}.embed_tokens", PARAMS),
        ),
        when(
            "share_decoder_input_output_embed",
            shared,
            skip("decoder.output_projection", "the same tensor as embed_tokens (tied); lm_head is fed from it"),
            rename("decoder.output_projection", "decoder.lm_head", PARAMS),
        ),
        skip("decoder.version", "fairseq's checkpoint format marker, not a weight"),
        when(
            "not decoder_normalize_before",
            not pre_ln,
            refuse("decoder.layers", "post-LN decoder (decoder_normalize_before false); MBart is pre-LN"),
        ),
        rename("decoder.embed_positions", f"{out}.embed_positions", PARAMS),
        rename("decoder.layernorm_embedding", f"{out}.layernorm_embedding", PARAMS),
        rename("decoder.layers", f"{out}.layers"),
        rename("decoder.layer_norm", f"{out}.layer_norm", PARAMS),
    )


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """Encoder, adaptor and decoder rules, then weight-norm routing for the positional conv."""
    model = fairseq_model_config(meta)
    return seq(
        first_match("wav2vec2 + mbart", (*encoder_rules(model), *decoder_rules(model))),
        route_weight_norm(),
    )


def generation_config(config: PretrainedConfig) -> GenerationConfig:
    """The seed's generation settings (transformers 5 keeps them out of the model config).

    ``forced_bos_token_id`` is mBART-50's ``en_XX`` only where the vocabulary has it.
    """
    vocab = int(getattr(getattr(config, "decoder", None), "vocab_size", 0))
    return GenerationConfig(
        decoder_start_token_id=2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        forced_eos_token_id=2,
        forced_bos_token_id=MBART50_EN_XX if vocab > MBART50_EN_XX else None,
    )


def write_extras(config: PretrainedConfig, out_dir: Path) -> None:
    """The wav2vec2 feature extractor (16 kHz, with attention mask) and the generation config."""
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(out_dir)
    generation_config(config).save_pretrained(out_dir)


def load_tokenizer(path: Path) -> Result[Callable[[Path], None], BadConfig]:
    """``MBart50Tokenizer`` from a sentencepiece model (the seed's ``dict_path``), checked before writing."""
    where = str(path)
    if not path.is_file():
        return Failure(BadConfig(where, "--tokenizer", "an existing sentencepiece model file", "no such file"))
    try:
        from transformers import MBart50Tokenizer

        # transformers 5 converts a sentencepiece model found under its conventional name in a directory.
        with staged_copy(path, "sentencepiece.bpe.model") as staging:
            tokenizer = MBart50Tokenizer.from_pretrained(staging)
    except ImportError as error:
        return Failure(
            BadConfig(where, "--tokenizer", "sentencepiece installed (pip install 'wmap[tokenizer]')", str(error))
        )
    except Exception as error:
        return Failure(BadConfig(where, "--tokenizer", "a sentencepiece model file", " ".join(str(error).split())))
    if (tokenizer.pad_token_id, tokenizer.eos_token_id) != (1, 2):
        found = f"pad/eos = {tokenizer.pad_token_id}/{tokenizer.eos_token_id}"
        return Failure(BadConfig(where, "--tokenizer", "fairseq's pad/eos ids 1/2 (as the config has)", found))

    def write(out_dir: Path) -> None:
        tokenizer.save_pretrained(out_dir)

    return Success(write)


WAV2VEC2_MBART = register(
    ModelSpec(
        name="wav2vec2_mbart",
        source="fairseq xm_transformer: wav2vec2 encoder + conv adaptor + transformer decoder",
        target="transformers SpeechEncoderDecoderModel(Wav2Vec2Model, MBartForCausalLM)",
        config_class=SpeechEncoderDecoderConfig,
        config_from_checkpoint=translate_config,
        pipeline=pipeline,
        model_class=SpeechEncoderDecoderModel,
        write_extras=write_extras,
        load_tokenizer=load_tokenizer,
    )
)
