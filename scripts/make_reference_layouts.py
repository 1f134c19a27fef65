"""Generate the bundled reference layouts (``src/wmap/models/reference/*.json``).

Each is the names and shapes of the *original* implementation at its default
(published) config, built with random weights, plus the checkpoint metadata
(config) the original would save beside them. Needs the ``originals`` extra:

    python scripts/make_reference_layouts.py [MODEL ...]
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import originals  # noqa: E402

OUT = ROOT / "src" / "wmap" / "models" / "reference"

# data2vec-audio base (fairseq examples/data2vec/config/audio/pretraining/base_librispeech.yaml).
DATA2VEC_BASE: dict[str, Any] = {
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    "extractor_mode": "layer_norm",
    "pos_conv_depth": 5,
    "conv_pos": 95,
    "conv_pos_groups": 16,
    "layer_norm_first": False,
}


def _flat(state: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts (data2vec 2.0's ``_ema``) as the dotted keys wmap reads them as."""
    flat: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _entry(source: str, state: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": source,
        "layout": {key: list(value.shape) for key, value in _flat(state).items()},
        "meta": meta,
    }


def encodec(name: str) -> dict[str, Any]:
    model = originals.encodec_original(name)
    return _entry(f"encodec package, {name}, pretrained=False", model.state_dict(), {})


def data2vec_audio() -> dict[str, Any]:
    cfg = originals.data2vec_audio_config(**DATA2VEC_BASE)
    model = originals.data2vec_audio_original(cfg)
    state = model.state_dict()
    return _entry("fairseq data2vec-audio base", state, {"cfg": {"model": originals.as_container(cfg)}})


def data2vec_audio_ctc() -> dict[str, Any]:
    cfg = originals.data2vec_audio_config(**DATA2VEC_BASE)
    with tempfile.TemporaryDirectory() as data:
        model, saved = originals.data2vec_ctc_original(cfg, 32, Path(data))
    return _entry(
        "fairseq Wav2VecCtc around data2vec-audio base, 32 labels", model.state_dict(), {"cfg": {"model": saved}}
    )


# s3prl's published DistilHuBERT (upstream/distiller/config_distilhubert.yaml, the distiller section).
DISTILHUBERT: dict[str, Any] = {
    "extractor_mode": "default",
    "extractor_conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "encoder_layers": 2,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "layer_norm_first": False,
    "final_dim": 768,
    "out_layer_type": "expand-last",
    "n_tasks": 3,
    "task_emb_type": "expand-last",
    "pred_layer_id": [4, 8, 12],
}

# XLS-R 300M encoder (wav2vec2 large, pre-LN) with fairseq xm_transformer's default decoder and adaptor,
# and mBART-50's vocabulary size.
XLSR_300M: dict[str, Any] = {
    **originals.LARGE_ENCODER,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "layer_norm_first": True,
    "conv_bias": True,
    "final_dim": 768,
}
XM_DECODER: dict[str, Any] = {
    "decoder_embed_dim": 1024,
    "decoder_ffn_embed_dim": 4096,
    "decoder_layers": 12,
    "decoder_attention_heads": 16,
    "max_target_positions": 1024,
    "adaptor_n_layers": 3,
}


def distilhubert() -> dict[str, Any]:
    model = originals.distiller_original(DISTILHUBERT)
    meta = {"Config": {"distiller": DISTILHUBERT}}
    return _entry("s3prl DistilHuBERT (DistillerModel)", model.state_dict(), meta)


# WavLM Large (transformers' microsoft/wavlm-large config.json, in unilm's field names).
WAVLM_LARGE: dict[str, Any] = {
    "extractor_mode": "layer_norm",
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "layer_norm_first": True,
    "conv_bias": True,
    "normalize": True,
    "relative_position_embedding": True,
    "num_buckets": 320,
    "max_distance": 800,
    "gru_rel_pos": True,
}


def _unilm(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    """A unilm ``WavLM`` of ``cfg``, and the whole ``cfg`` its files hold."""
    model, saved = originals.wavlm_original(cfg)
    return _entry(source, model.state_dict(), {"cfg": saved})


# UniSpeech-SAT Base+ (transformers' microsoft/unispeech-sat-base-plus config.json, in unilm's field
# names, as s3prl's converted checkpoint keeps it: a WavLM without the relative position bias).
UNISPEECH_SAT_BASE_PLUS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "layer_norm_first": False,
    "conv_bias": False,
    "normalize": False,
    "relative_position_embedding": False,
    "gru_rel_pos": False,
}


def wav2vec2_mbart() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        model, args = originals.xm_transformer_original(
            originals.wav2vec2_config(**XLSR_300M), Path(data), vocab=250054, **XM_DECODER
        )
        path = Path(data) / "xm.pt"
        originals.save_xm_checkpoint(path, args, model)
        saved = torch.load(path, weights_only=False)
    layout = {key: list(value.shape) for key, value in saved["model"].items()}
    return {
        "source": "fairseq xm_transformer: XLS-R 300M + adaptor + 12-layer decoder, mBART-50 vocabulary",
        "layout": layout,
        "meta": {"cfg": saved["cfg"]},
    }


# wav2vec 2.0 / HuBERT base (fairseq examples/wav2vec/config/pretraining/wav2vec2_base_librispeech.yaml,
# examples/hubert/config/pretrain/hubert_base_librispeech.yaml).
BASE_ENCODER: dict[str, Any] = {
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    "extractor_mode": "default",
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "final_dim": 256,
}
WAV2VEC2_BASE: dict[str, Any] = {**BASE_ENCODER, "latent_vars": 320, "latent_groups": 2, "quantize_targets": True}


def _saved(write: Callable[[Path, Path], Any], source: str) -> dict[str, Any]:
    """The names, shapes and ``cfg`` of a checkpoint the fixture writes as fairseq's trainer does."""
    with tempfile.TemporaryDirectory() as data:
        path = Path(data) / "checkpoint.pt"
        write(path, Path(data))
        saved = torch.load(path, weights_only=False)
    return _entry(source, saved["model"], {"cfg": {"model": saved["cfg"]["model"], "task": saved["cfg"]["task"]}})


def _ctc(family: str) -> dict[str, Any]:
    settings = {k: v for k, v in BASE_ENCODER.items() if k != "final_dim"}
    return _saved(
        lambda path, data: originals.ctc_trainer_checkpoint(path, data, family=family, normalize=False, **settings),
        f"fairseq {family} base fine-tuned for CTC (letters), as its Trainer saves it",
    )


# openai-whisper base (whisper/__init__.py's published "base" checkpoint dims).
WHISPER_BASE: dict[str, int] = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 512,
    "n_audio_head": 8,
    "n_audio_layer": 6,
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 512,
    "n_text_head": 8,
    "n_text_layer": 6,
}


def whisper() -> dict[str, Any]:
    model = originals.whisper_original(WHISPER_BASE)
    return _entry("openai-whisper base (Whisper(ModelDimensions))", model.state_dict(), {"dims": WHISPER_BASE})


# wav2vec 2.0 Conformer large, relative positions (fairseq examples/wav2vec/config/pretraining/
# wav2vec2_conformer_large_librivox.yaml).
CONFORMER_LARGE: dict[str, Any] = {
    **originals.LARGE_ENCODER,
    **originals.CONFORMER,
    "pos_enc_type": "rel_pos",
    "depthwise_conv_kernel_size": 31,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "conv_bias": True,
    "final_dim": 768,
}


def _conformer(write: Callable[[Path, Path], Any], source: str) -> dict[str, Any]:
    with originals.conformer_fix():
        return _saved(write, source)


# data2vec 2.0 audio base (fairseq examples/data2vec/config/v2/base_audio_only_task.yaml), without
# ALiBi (which Data2VecAudio cannot represent: the released model is refused, naming the field).
DATA2VEC2_BASE_AUDIO: dict[str, Any] = {
    "feature_encoder_spec": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]",
    "conv_pos_depth": 5,
    "conv_pos_width": 95,
    "conv_pos_groups": 16,
    "prenet_depth": 0,
    "mask_prob": 0.5,
    "use_alibi_encoder": False,
}


DATA2VEC2_BASE: dict[str, Any] = {"depth": 12, "embed_dim": 768, "num_heads": 12, "mlp_ratio": 4.0, "layerdrop": 0.05}


# DAC 44 kHz (descript-audio-codec's DAC defaults, the released 44khz model's kwargs).
DAC_44KHZ: dict[str, Any] = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": None,
    "decoder_dim": 1536,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 44100,
}


# MusicGen's 32 kHz EnCodec (audiocraft's config/model/encodec/encodec_large_nq4_s640.yaml).
MUSICGEN_ENCODEC: dict[str, Any] = {
    "encodec": {**originals.AUDIOCRAFT_ENCODEC["encodec"], "sample_rate": 32000},
    "seanet": {**originals.AUDIOCRAFT_ENCODEC["seanet"], "dimension": 128, "n_filters": 64, "ratios": [8, 5, 4, 4]},
    "rvq": {**originals.AUDIOCRAFT_ENCODEC["rvq"], "n_q": 4, "bins": 2048},
}


def encodec_audiocraft() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        path = Path(data) / "compression_state_dict.bin"
        originals.audiocraft_encodec_file(path, MUSICGEN_ENCODEC)
        saved = torch.load(path, weights_only=True)
    meta = {k: v for k, v in saved.items() if k != "best_state"}
    return _entry("audiocraft EnCodec 32 kHz (MusicGen's), as audiocraft's export writes it", saved["best_state"], meta)


# MusicGen small (audiocraft's config/model/lm/musicgen_lm.yaml with model_scale small; t5-base).
MUSICGEN_SMALL: dict[str, Any] = {
    "transformer_lm": {
        **originals.MUSICGEN_LM["transformer_lm"],
        "dim": 1024,
        "num_heads": 16,
        "num_layers": 24,
        "hidden_scale": 4,
        "card": 2048,
        "custom": True,
    },
    "conditioners": {
        "description": {
            "model": "t5",
            "t5": {"name": "t5-base", "finetune": False, "word_dropout": 0.3, "normalize_text": False},
        }
    },
    "classifier_free_guidance": {"training_dropout": 0.1, "inference_coef": 3.0},
}


def _audiocraft_lm(
    sections: dict[str, Any], t5_fields: dict[str, Any], encodec: dict[str, Any], source: str
) -> dict[str, Any]:
    """An audiocraft LM family's three parts (names and shapes; T5 as transformers names it, on
    ``meta``), under the prefixes the family reads them with."""
    from unittest import mock

    from omegaconf import OmegaConf
    from transformers import T5Config, T5EncoderModel

    audiocraft = originals.import_audiocraft()
    conditioners = sys.modules["audiocraft.modules.conditioners"]
    t5_config = T5Config.from_dict(t5_fields)
    with torch.device("meta"):
        t5 = T5EncoderModel(t5_config)
    cfg = OmegaConf.create({**originals.MUSICGEN_LM, **sections})
    stand_in = T5EncoderModel(
        T5Config(d_model=t5_config.d_model, d_ff=8, num_layers=1, num_heads=1, d_kv=4, vocab_size=8)
    )
    with (  # audiocraft loads T5 from the Hub: a thin stand-in (its weights are not in the LM's file)
        mock.patch.object(conditioners.T5EncoderModel, "from_pretrained", lambda *a, **k: stand_in),
        mock.patch.object(conditioners.T5Tokenizer, "from_pretrained", lambda *a, **k: None),
    ):
        lm = audiocraft.models.builders.get_lm_model(cfg)
    layout = {f"lm.{k}": list(v.shape) for k, v in lm.state_dict().items()}
    del lm
    with tempfile.TemporaryDirectory() as data:
        path = Path(data) / "compression_state_dict.bin"
        originals.audiocraft_encodec_file(path, encodec)
        saved = torch.load(path, weights_only=True)
    layout |= {f"compression.{k}": list(v.shape) for k, v in saved["best_state"].items()}
    layout |= {
        f"text_encoder.{k}": list(v.shape) for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"
    }
    meta = {
        "lm": {"xp.cfg": OmegaConf.to_yaml(cfg), "version": "1.3.0", "exported": True},
        "compression": {k: v for k, v in saved.items() if k != "best_state"},
        "text_encoder": t5_config.to_dict(),
    }
    return {"source": source, "layout": layout, "meta": meta}


def musicgen() -> dict[str, Any]:
    return _audiocraft_lm(
        MUSICGEN_SMALL, T5_BASE, MUSICGEN_ENCODEC, "audiocraft MusicGen small (LM, 32 kHz EnCodec) and t5-base"
    )


# AudioGen medium (audiocraft's config/model/lm/audiogen_lm.yaml, model_scale medium; t5-large) and its
# 16 kHz EnCodec (config/model/encodec/encodec_audiogen_16khz.yaml).
AUDIOGEN_MEDIUM: dict[str, Any] = {
    "transformer_lm": {**MUSICGEN_SMALL["transformer_lm"], "dim": 1536, "num_heads": 24, "num_layers": 48},
    "conditioners": {
        "description": {
            "model": "t5",
            "t5": {"name": "t5-large", "finetune": False, "word_dropout": 0.0, "normalize_text": False},
        }
    },
    "classifier_free_guidance": {"training_dropout": 0.1, "inference_coef": 3.0},
}
AUDIOGEN_ENCODEC: dict[str, Any] = {
    "encodec": {**originals.AUDIOCRAFT_ENCODEC["encodec"], "sample_rate": 16000},
    "seanet": {**originals.AUDIOCRAFT_ENCODEC["seanet"], "dimension": 128, "n_filters": 64, "ratios": [8, 5, 4, 2]},
    "rvq": {**originals.AUDIOCRAFT_ENCODEC["rvq"], "n_q": 4, "bins": 2048},
}


def audiogen() -> dict[str, Any]:
    t5_large = {**T5_BASE, "d_model": 1024, "d_ff": 4096, "num_layers": 24, "num_heads": 16}
    return _audiocraft_lm(
        AUDIOGEN_MEDIUM, t5_large, AUDIOGEN_ENCODEC, "audiocraft AudioGen medium (LM, 16 kHz EnCodec) and t5-large"
    )


T5_BASE: dict[str, Any] = {
    "model_type": "t5",
    "d_model": 768,
    "d_ff": 3072,
    "d_kv": 64,
    "num_layers": 12,
    "num_heads": 12,
    "vocab_size": 32128,
    "relative_attention_num_buckets": 32,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "relu",
    "architectures": ["T5ForConditionalGeneration"],
}
"""t5-base's config.json (the fields that shape it)."""


def dac() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        path = Path(data) / "dac.pth"
        originals.dac_checkpoint(path, **DAC_44KHZ)
        saved = torch.load(path, weights_only=True)
    return _entry(
        "descript-audio-codec DAC 44 kHz, DAC.save(package=False)", saved["state_dict"], {"metadata": saved["metadata"]}
    )


# fairseq's LibriSpeech ASR recipe (examples/speech_to_text/docs/librispeech_example.md): s2t_transformer_s,
# a 10,000-piece unigram vocabulary, 80 filter banks, shared input/output embeddings.
S2T_SMALL: dict[str, Any] = {
    "encoder_layers": 12,
    "decoder_layers": 6,
    "encoder_embed_dim": 256,
    "encoder_ffn_embed_dim": 2048,
    "decoder_ffn_embed_dim": 2048,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "conv_channels": 1024,
    "dropout": 0.1,
    "share_decoder_input_output_embed": True,
}


def speech_to_text() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        path = Path(data) / "checkpoint.pt"
        originals.s2t_checkpoint(path, Path(data) / "data", vocab=10_004, features=80, **S2T_SMALL)
        saved = torch.load(path, weights_only=False)
    model = {key: value for key, value in vars(saved["cfg"]["model"]).items() if not isinstance(value, tuple)}
    source = "fairseq s2t_transformer_s, LibriSpeech ASR recipe (10,000 unigram pieces), as its Trainer saves it"
    return _entry(source, saved["model"], {"cfg": {"model": model}})


BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "dac": dac,
    "encodec_audiocraft": encodec_audiocraft,
    "musicgen": musicgen,
    "audiogen": audiogen,
    "data2vec2_audio_ctc": lambda: _saved(
        lambda path, data: originals.ctc_trainer_checkpoint(
            path, data, family="data2vec_multi", audio=DATA2VEC2_BASE_AUDIO, **DATA2VEC2_BASE
        ),
        "fairseq data2vec 2.0 audio base (without ALiBi) fine-tuned for CTC (letters), as its Trainer saves it",
    ),
    "data2vec2_audio": lambda: _saved(
        lambda path, data: originals.data2vec2_checkpoint(path, data, audio=DATA2VEC2_BASE_AUDIO, **DATA2VEC2_BASE),
        "fairseq data2vec 2.0 audio base pre-training (without ALiBi)",
    ),
    "wav2vec2_conformer": lambda: _conformer(
        lambda path, data: originals.wav2vec2_pretraining_checkpoint(
            path, data, **CONFORMER_LARGE, latent_vars=320, latent_groups=2
        ),
        "fairseq wav2vec 2.0 Conformer large (rel_pos) pre-training",
    ),
    "wav2vec2_conformer_ctc": lambda: _conformer(
        lambda path, data: originals.ctc_trainer_checkpoint(
            path,
            data,
            family="wav2vec2",
            normalize=True,
            **{k: v for k, v in CONFORMER_LARGE.items() if k != "final_dim"},
        ),
        "fairseq wav2vec 2.0 Conformer large (rel_pos) fine-tuned for CTC (letters), as its Trainer saves it",
    ),
    "whisper": whisper,
    "wav2vec2": lambda: _saved(
        lambda path, data: originals.wav2vec2_pretraining_checkpoint(path, data, **WAV2VEC2_BASE),
        "fairseq wav2vec 2.0 base pre-training",
    ),
    "wav2vec2_ctc": lambda: _ctc("wav2vec2"),
    "hubert": lambda: _saved(
        lambda path, data: originals.hubert_checkpoint(path, data, **BASE_ENCODER), "fairseq HuBERT base pre-training"
    ),
    "hubert_ctc": lambda: _ctc("hubert"),
    "distilhubert": distilhubert,
    "wavlm": lambda: _unilm(WAVLM_LARGE, "unilm WavLM Large"),
    "unispeech_sat": lambda: _unilm(UNISPEECH_SAT_BASE_PLUS, "UniSpeech-SAT Base+ (s3prl's WavLM without the bias)"),
    "wav2vec2_mbart": wav2vec2_mbart,
    "speech_to_text": speech_to_text,
    "encodec_24khz": lambda: encodec("encodec_24khz"),
    "encodec_32khz": lambda: encodec("encodec_32khz"),
    "encodec_48khz": lambda: encodec("encodec_48khz"),
    "data2vec_audio": data2vec_audio,
    "data2vec_audio_ctc": data2vec_audio_ctc,
}


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names or list(BUILDERS):
        data = BUILDERS[name]()
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        print(f"{path.relative_to(ROOT)}: {len(data['layout'])} keys")


if __name__ == "__main__":
    main(sys.argv[1:])
