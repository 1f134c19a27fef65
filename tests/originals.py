"""Builders for the original implementations (the ``originals`` extra), with random weights.

Used by the parity tests (small configs) and by ``scripts/make_reference_layouts.py``
(default configs). Each builder returns the original module in eval mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


def import_encodec() -> Any:
    """Import the original ``encodec`` package.

    ``encodec`` imports torchaudio at import time but uses it only for audio
    file I/O, which nothing here does; the torchaudio wheel pip pulls in is
    broken against torch 2.13. So a minimal stand-in module sits in
    ``sys.modules`` just for the import, and is removed right after (so that
    transformers still sees no torchaudio).
    """
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    had = sys.modules.get("torchaudio")
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        import encodec
    finally:
        if had is None:
            del sys.modules["torchaudio"]
        else:
            sys.modules["torchaudio"] = had
    return encodec


def encodec_original(name: str) -> Any:
    """The original EnCodec model for ``encodec_24khz`` / ``encodec_32khz`` / ``encodec_48khz``."""
    encodec = import_encodec()
    if name == "encodec_24khz":
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    elif name == "encodec_48khz":
        model = encodec.EncodecModel.encodec_model_48khz(pretrained=False)
    elif name == "encodec_32khz":
        # No packaged 32 kHz builder: the SEANet encoder/decoder with the 32 kHz settings.
        from encodec.modules.seanet import SEANetDecoder, SEANetEncoder
        from encodec.quantization.vq import ResidualVectorQuantizer

        ratios = [8, 5, 4, 4]
        common: dict[str, Any] = {
            "channels": 1,
            "n_filters": 64,
            "ratios": ratios,
            "causal": False,
            "true_skip": True,
            "norm": "weight_norm",
        }
        encoder, decoder = SEANetEncoder(**common), SEANetDecoder(**common)
        frame_rate = 32_000 // (8 * 5 * 4 * 4)
        n_q = int(1000 * 2.2 // (frame_rate * 11))  # 11 bits per 2048-entry codebook
        quantizer = ResidualVectorQuantizer(dimension=encoder.dimension, n_q=n_q, bins=2048)
        model = encodec.EncodecModel(
            encoder, decoder, quantizer, target_bandwidths=[2.2], sample_rate=32_000, channels=1, normalize=False
        )
    else:
        raise ValueError(name)
    randomize_buffers(model)
    return model.eval()


def randomize_buffers(model: nn.Module) -> None:
    """Fill float buffers (codebooks, norm stats) with random values so a wrong mapping shows."""
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if buffer.is_floating_point():
                if name.endswith("inited"):
                    buffer.fill_(1.0)
                elif name.endswith(("cluster_size", "running_var")):
                    buffer.uniform_(0.5, 1.5)
                else:
                    buffer.normal_()


def randomize_parameters(model: nn.Module) -> None:
    """Random weights everywhere (fairseq zero-inits some biases; a wrong mapping must show)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("weight_g",)) or "layer_norm" in name or "norm" in name.split(".")[-2:][0]:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.2)


# --- fairseq -----------------------------------------------------------------------------------


SMALL_ENCODER: dict[str, Any] = {
    "encoder_layers": 2,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 4,
    "conv_feature_layers": "[(16, 10, 5)] + [(16, 3, 2)] * 2",
    "extractor_mode": "layer_norm",
}
"""A small fairseq wav2vec2-family encoder: fast to build, every kind of weight present."""

LARGE_ENCODER: dict[str, Any] = {
    "encoder_layers": 24,
    "encoder_embed_dim": 1024,
    "encoder_ffn_embed_dim": 4096,
    "encoder_attention_heads": 16,
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    "extractor_mode": "layer_norm",
}
"""wav2vec2 large / XLS-R 300M sizes (reference layouts and benchmarks)."""


def data2vec_audio_config(**overrides: Any) -> Any:
    """A fairseq ``Data2VecAudioConfig``; small by default for tests."""
    from fairseq.examples.data2vec.models.data2vec_audio import Data2VecAudioConfig

    small: dict[str, Any] = {
        **SMALL_ENCODER,
        "pos_conv_depth": 3,
        "conv_pos": 12,
        "conv_pos_groups": 4,
        "layer_norm_first": False,
    }
    return Data2VecAudioConfig(**{**small, **overrides})


def data2vec_audio_original(cfg: Any) -> Any:
    """fairseq's data2vec-audio (headless) with random weights."""
    from fairseq.examples.data2vec.models.data2vec_audio import Data2VecAudioModel

    model = Data2VecAudioModel(cfg)
    randomize_parameters(model)
    return model.eval()


def as_container(cfg: Any) -> dict[str, Any]:
    """A fairseq dataclass config as the plain containers fairseq's trainer saves."""
    from omegaconf import OmegaConf

    structured = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    out: dict[str, Any] = _resolve(OmegaConf.to_container(structured, resolve=False, enum_to_str=True))
    return out


# Interpolations into other config groups (a trainer resolves them before saving).
KNOWN_INTERPOLATIONS: dict[str, Any] = {
    "${optimization.max_update}": 100_000,
    "${distributed_training.ddp_backend}": "pytorch_ddp",
    "${common.tpu}": False,
    "${task.data}": "",
    "${task.normalize}": False,
    "${optimization.update_freq}": [1],
    "${common.seed}": 1,
    "${checkpoint.save_dir}": "",
    "${model.encoder_embed_dim}": 32,
    "${model.num_heads}": 4,  # data2vec 2.0's image and text modalities (unused for audio)
    "${model.depth}": 2,
}


def _resolve(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    if isinstance(value, str) and value.startswith("${"):
        if value not in KNOWN_INTERPOLATIONS:
            raise KeyError(f"add a value for the interpolation {value} to KNOWN_INTERPOLATIONS")
        return KNOWN_INTERPOLATIONS[value]
    return value


def data2vec_ctc_original(cfg: Any, vocab_size: int, data_dir: Path) -> tuple[Any, dict[str, Any]]:
    """fairseq ``Wav2VecCtc`` around a data2vec-audio encoder; also returns its saved ``cfg.model``."""
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig, Wav2VecCtc, Wav2VecEncoder
    from omegaconf import OmegaConf

    w2v_args = OmegaConf.create(
        {
            "task": {"_name": "audio_pretraining", "data": str(data_dir), "normalize": False},
            "model": {**as_container(cfg), "_name": "data2vec_audio"},
        }
    )
    ctc_cfg = Wav2Vec2CtcConfig(w2v_args=w2v_args, normalize=False, data=str(data_dir), apply_mask=False)
    encoder = Wav2VecEncoder(ctc_cfg, output_size=vocab_size)
    model = Wav2VecCtc(ctc_cfg, encoder)
    randomize_parameters(model)
    return model.eval(), as_container(ctc_cfg)


def save_fairseq_checkpoint(path: Path, model_cfg: dict[str, Any], model: nn.Module) -> Path:
    """Write ``{"cfg": {"model": ...}, "model": state_dict}`` as fairseq's trainer does (plain containers)."""
    torch.save({"args": None, "cfg": {"model": model_cfg}, "model": model.state_dict()}, path)
    return path


# --- s3prl -------------------------------------------------------------------------------------


def distiller_config(**overrides: Any) -> dict[str, Any]:
    """An s3prl distiller config dict (as saved under ``Config.distiller``); small by default."""
    small: dict[str, Any] = {
        "extractor_mode": "default",
        "extractor_conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 2",
        "conv_pos": 12,
        "conv_pos_groups": 4,
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 4,
        "final_dim": 24,
        "n_tasks": 3,
        "pred_layer_id": [1, 2, 2],
        "task_emb_type": "expand-last",
        "out_layer_type": "expand-last",
    }
    return {**small, **overrides}


def distiller_original(config: dict[str, Any]) -> Any:
    """s3prl's ``DistillerModel`` with random weights."""
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    model = DistillerModel(DistillerConfig(config))
    randomize_parameters(model)
    return model.eval()


def wavlm_original(cfg: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """unilm's ``WavLM`` (s3prl's copy of ``WavLM.py``) for ``cfg``, with random weights, and the whole
    ``WavLMConfig`` as its released files hold it (every field, the defaults filled)."""
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    config = WavLMConfig(cfg)
    model = WavLM(config)
    randomize_parameters(model)
    return model.eval(), dict(vars(config))


def save_wavlm_checkpoint(path: Path, cfg: dict[str, Any], model: nn.Module) -> Path:
    """Write the file as WavLM's are published (``{"cfg", "model"}``): what unilm's README and s3prl's
    ``wavlm_local`` load, ``WavLM(WavLMConfig(checkpoint["cfg"]))`` then ``load_state_dict``, strictly."""
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    return path


def save_s3prl_checkpoint(path: Path, config: dict[str, Any], model: nn.Module) -> Path:
    """Write the checkpoint as s3prl's pre-training runner saves a distiller's: the runner's state (the
    optimizer's, after an update, the step, its arguments), then the distiller's weights and config."""
    import argparse

    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for parameter in model.parameters():  # a zero gradient: Adam's state filled, the weights as they are
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    model.zero_grad(set_to_none=True)
    torch.save(
        {
            "Optimizer": optimizer.state_dict(),
            "Step": 200000,
            "Args": argparse.Namespace(mode="train", upstream="distiller", seed=1337),
            "Config": {"distiller": config, "task": {"sequence_length": 250000}},
            "Distiller": model.state_dict(),
        },
        path,
    )
    return path


def wav2vec2_config(**overrides: Any) -> Any:
    """A fairseq ``Wav2Vec2Config`` (pre-training); small by default."""
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

    small: dict[str, Any] = {
        **SMALL_ENCODER,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "layer_norm_first": True,
        "conv_bias": True,
        "final_dim": 16,
    }
    return Wav2Vec2Config(**{**small, **overrides})


def xm_transformer_original(w2v_cfg: Any, data_dir: Path, *, vocab: int = 40, **overrides: Any) -> tuple[Any, Any]:
    """fairseq's ``XMTransformerModel`` (wav2vec2 encoder + conv adaptor + transformer decoder).

    Returns the model and its ``args`` namespace (the legacy config fairseq saves for it).
    """
    import argparse

    from fairseq.data import Dictionary
    from fairseq.models.speech_to_text.xm_transformer import XMTransformerModel
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2AsrConfig
    from omegaconf import OmegaConf

    dictionary = Dictionary()
    for i in range(vocab - len(dictionary)):
        dictionary.add_symbol(f"tok{i}")
    asr = as_container(Wav2Vec2AsrConfig())
    w2v_args = OmegaConf.create(
        {
            "task": {"_name": "audio_pretraining", "data": str(data_dir), "normalize": False},
            "model": {**as_container(w2v_cfg), "_name": "wav2vec2"},
        }
    )
    settings: dict[str, Any] = {
        **asr,
        "w2v_path": None,
        "w2v_args": w2v_args,
        "data": str(data_dir),
        "normalize": False,
        "apply_mask": False,
        "encoder_embed_dim": w2v_cfg.encoder_embed_dim,
        "decoder_embed_dim": w2v_cfg.encoder_embed_dim,
        "decoder_ffn_embed_dim": 48,
        "decoder_layers": 2,
        "decoder_attention_heads": 4,
        "decoder_normalize_before": True,
        "decoder_learned_pos": True,
        "layernorm_embedding": True,
        "max_target_positions": 64,
        "share_decoder_input_output_embed": True,
        "adaptor_n_layers": 2,
        "adaptor_kernel_size": 3,
        "adaptor_stride": 2,
        "adaptor_proj": False,
        "encoder_proj": False,
        "load_pretrained_decoder_from": None,
        "load_pretrained_encoder_from": None,
        "activation_fn": "gelu",
    }
    settings.update(overrides)
    args = argparse.Namespace(**settings)
    task = argparse.Namespace(target_dictionary=dictionary, source_dictionary=None, multitask_tasks={})
    model = XMTransformerModel.build_model(args, task)
    randomize_parameters(model)
    return model.eval(), args


def save_xm_checkpoint(path: Path, args: Any, model: nn.Module, *, legacy_args: bool = False) -> Path:
    """As fairseq saves it: ``cfg.model`` as plain containers, or (older files) an ``args`` namespace."""
    import argparse

    from omegaconf import OmegaConf

    plain = {
        key: (OmegaConf.to_container(value, resolve=False) if OmegaConf.is_config(value) else value)
        for key, value in vars(args).items()
    }
    plain["w2v_args"] = _resolve(plain["w2v_args"])
    state = {key: value for key, value in model.state_dict().items()}
    if legacy_args:
        torch.save({"args": argparse.Namespace(**plain), "model": state}, path)
    else:
        torch.save({"cfg": {"model": plain}, "model": state}, path)
    return path


# --- fairseq trainer checkpoints -----------------------------------------------------------------

LETTERS = [
    "|",
    "E",
    "T",
    "A",
    "O",
    "N",
    "I",
    "H",
    "S",
    "R",
    "D",
    "L",
    "U",
    "M",
    "W",
    "C",
    "F",
    "G",
    "Y",
    "P",
    "B",
    "V",
    "K",
    "'",
    "X",
    "J",
    "Q",
    "Z",
]
"""fairseq's letter vocabulary for English CTC (``dict.ltr.txt``), most frequent first."""


def write_letter_dictionary(data_dir: Path) -> Path:
    """``dict.ltr.txt`` as fairseq's wav2vec2 fine-tuning recipe writes it (symbol, count)."""
    path = data_dir / "dict.ltr.txt"
    path.write_text("".join(f"{symbol} {1000 - i}\n" for i, symbol in enumerate(LETTERS)))
    return path


def _named(config: Any, name: str) -> Any:
    config._name = name
    return config


TRAINED_ENCODER: dict[str, Any] = {
    "dropout": 0.05,
    "attention_dropout": 0.02,
    "activation_dropout": 0.03,
    "dropout_input": 0.04,
    "encoder_layerdrop": 0.07,
    "conv_bias": True,
}
"""Settings a fine-tuned encoder carries (none at transformers' defaults, so a lost one shows)."""


def trained_encoder(family: str) -> dict[str, Any]:
    """:data:`TRAINED_ENCODER` as ``family``'s config spells it (data2vec 2.0's own names)."""
    if family != "data2vec_multi":
        return TRAINED_ENCODER
    return {
        "encoder_dropout": 0.05,
        "attention_dropout": 0.02,
        "activation_dropout": 0.03,
        "dropout_input": 0.04,
        "layerdrop": 0.07,
    }


def fix_hubert_ctc_config() -> None:
    """fairseq#4917's one-field fix, in this process, on the reference side only: fairseq 0.12's
    ``HubertCtcConfig`` lacks the ``autoregressive`` field its ``HubertEncoder`` reads, so no
    ``HubertCtc`` can be built or loaded (fairseq#4916). Checkpoints are saved without the field,
    as real ones are; wmap never needs it."""
    from fairseq.models.hubert import hubert_asr

    config = hubert_asr.HubertAsrConfig
    if "autoregressive" in config.__dataclass_fields__:
        return
    field: Any = dataclasses.field(default=False)
    field.name, field.type = "autoregressive", bool
    field._field_type = dataclasses._FIELD  # type: ignore[attr-defined]
    for cls in (config, hubert_asr.HubertCtcConfig):
        cls.__dataclass_fields__["autoregressive"] = field
        cls.__annotations__["autoregressive"] = bool
        cls.autoregressive = False


@contextlib.contextmanager
def conformer_fix() -> Iterator[None]:
    """fairseq 0.12.3 cannot build or run its own conformer: ``TransformerEncoder.__init__`` calls
    ``build_encoder_layer(args, layer_idx=...)``, which ``ConformerEncoder`` does not accept
    (fairseq#5174, fixed upstream by #5176), and ``TransformerEncoder.forward`` passes
    ``corpus_key=`` to ``ConformerEncoder.extract_features``, which it does not accept (fairseq#5386).
    While this runs (reference side only: wmap never imports fairseq) both accept and ignore the
    extra keyword; they are restored after."""
    from fairseq.models.wav2vec.wav2vec2 import ConformerEncoder

    build, extract = ConformerEncoder.build_encoder_layer, ConformerEncoder.extract_features

    def build_layer(self: Any, args: Any, **ignored: Any) -> Any:
        return build(self, args)

    def extract_features(self: Any, x: Any, padding_mask: Any = None, tgt_layer: Any = None, **ignored: Any) -> Any:
        return extract(self, x, padding_mask, tgt_layer)

    ConformerEncoder.build_encoder_layer = build_layer
    ConformerEncoder.extract_features = extract_features
    try:
        yield
    finally:
        ConformerEncoder.build_encoder_layer = build
        ConformerEncoder.extract_features = extract


CONFORMER: dict[str, Any] = {
    "layer_type": "conformer",
    "attn_type": "espnet",
    "depthwise_conv_kernel_size": 7,
    "layer_norm_first": True,
}
"""A small conformer's own settings (with :data:`SMALL_ENCODER`'s sizes; ``pos_enc_type`` apart)."""


def encoder_config(family: str, **overrides: Any) -> Any:
    """A small fairseq encoder config of ``family`` (data2vec_audio, wav2vec2, hubert, data2vec_multi:
    data2vec 2.0, whose audio modality's settings are ``overrides["audio"]``)."""
    if family == "data2vec_audio":
        return data2vec_audio_config(**overrides)
    if family == "data2vec_multi":
        return data2vec2_config(**overrides)
    settings: dict[str, Any] = {**SMALL_ENCODER, "conv_pos": 16, "conv_pos_groups": 4, **overrides}
    if family == "wav2vec2":
        from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config

        return Wav2Vec2Config(**settings)
    from fairseq.models.hubert.hubert import HubertConfig

    return HubertConfig(**{"final_dim": 8, "label_rate": 50.0, **settings})


def _pretraining_task(family: str, data_dir: Path, normalize: bool) -> dict[str, Any]:
    if family == "hubert":
        (data_dir / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(20)))
        return {
            "_name": "hubert_pretraining",
            "data": str(data_dir),
            "label_dir": str(data_dir),
            "labels": ["km"],
            "label_rate": 50.0,
            "normalize": normalize,
        }
    return {"_name": "audio_pretraining", "data": str(data_dir), "normalize": normalize}


def ctc_trainer_checkpoint(
    path: Path,
    data_dir: Path,
    *,
    family: str = "data2vec_audio",
    normalize: bool = True,
    then: Path | None = None,
    lr: float = 1e-4,
    **encoder: Any,
) -> Any:
    """A fine-tuned CTC checkpoint (data2vec-audio, wav2vec 2.0 or HuBERT encoder) written by
    fairseq's own ``Trainer``, trained at ``lr`` on data in ``data_dir``; with ``then``, the next
    step's checkpoint too (one more update).

    The task (``audio_finetuning``, letters) is built from its cfg by ``tasks.setup_task``; the model
    by the task; one real training step with the CTC criterion and Adam fills the optimizer state;
    ``Trainer.save_checkpoint`` writes it through ``checkpoint_utils.torch_persistent_save``, with
    ``task_state`` (the pickled target ``Dictionary``), ``last_optimizer_state``,
    ``optimizer_history`` and ``extra_state``. Returns the trainer's task.
    """
    import fairseq.examples.data2vec.models.data2vec_audio  # noqa: F401 - registers data2vec_audio
    from fairseq import tasks
    from fairseq.criterions.ctc import CtcCriterionConfig
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.hubert.hubert_asr import HubertCtcConfig
    from fairseq.models.wav2vec.wav2vec2_asr import Wav2Vec2CtcConfig
    from fairseq.optim.adam import FairseqAdamConfig
    from fairseq.optim.lr_scheduler.fixed_schedule import FixedLRScheduleConfig
    from fairseq.tasks.audio_finetuning import AudioFinetuningConfig
    from fairseq.trainer import Trainer
    from omegaconf import OmegaConf

    if family == "hubert":
        fix_hubert_ctc_config()
    if family == "data2vec_multi":
        import_data2vec2()  # registers data2vec_multi
    write_letter_dictionary(data_dir)
    corpus = {"multi_corpus_keys": "fra", "multi_corpus_sampling_weights": "1.0"}  # adapters run per corpus
    adapters = corpus if encoder.get("layer_type") == "trf_adp" else {}
    task_cfg = _named(
        AudioFinetuningConfig(data=str(data_dir), labels="ltr", normalize=normalize, **adapters), "audio_finetuning"
    )
    w2v_args = OmegaConf.create(
        {
            "task": _pretraining_task(family, data_dir, normalize),
            "model": {
                **as_container(encoder_config(family, **{**trained_encoder(family), **encoder})),
                "_name": family,
            },
        }
    )
    ctc_config, name = (HubertCtcConfig, "hubert_ctc") if family == "hubert" else (Wav2Vec2CtcConfig, "wav2vec_ctc")
    # fairseq builds the encoder with the wrapper's layer kind and adapters: the wrapper names the encoder's
    replaced = ("layer_type", "adp_num", "adp_dim", "adp_act_fn", "adp_trf_idx")  # fairseq's args_replacement
    layers = {name: encoder[name] for name in replaced if name in encoder}
    model_cfg = _named(
        ctc_config(
            **layers,
            w2v_args=w2v_args,
            w2v_path=str(data_dir / "pretrained.pt"),  # where fine-tuning started (not read again)
            normalize=normalize,
            data=str(data_dir),
            final_dropout=0.06,
        ),
        name,
    )
    cfg = OmegaConf.structured(
        FairseqConfig(
            task=task_cfg,
            model=model_cfg,
            criterion=_named(CtcCriterionConfig(), "ctc"),
            optimizer=_named(FairseqAdamConfig(), "adam"),
            lr_scheduler=_named(FixedLRScheduleConfig(), "fixed"),
        )
    )
    cfg.common.cpu = True
    cfg.optimization.lr = [lr]
    cfg.optimization.max_update = 100
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    randomize_parameters(model)
    with torch.no_grad():  # as a trained model: norms near identity, the blank often, never pad/eos/unk
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) and module.weight is not None:
                module.weight.uniform_(0.8, 1.2)
                module.bias.normal_(0.0, 0.05)
        model.w2v_encoder.proj.bias[0] += 1.0
        model.w2v_encoder.proj.bias[1:4] = -30.0
    criterion = task.build_criterion(cfg.criterion)
    trainer = Trainer(cfg, task, model, criterion)
    dictionary = task.target_dictionary
    target = torch.tensor([[dictionary.index(c) for c in "HE|SAW"], [dictionary.index(c) for c in "IT|IS|"]])
    sample = {
        "id": torch.tensor([0, 1]),
        "net_input": {
            "source": torch.randn(2, 4000),
            "padding_mask": torch.zeros(2, 4000, dtype=torch.bool),
            **({"corpus_key": [0, 0]} if encoder.get("layer_type") == "trf_adp" else {}),  # a multi-corpus batch
        },
        "target": target,
        "target_lengths": torch.tensor([6, 6]),
        "ntokens": 12,
    }
    for step, saved_to in enumerate((path, then) if then is not None else (path,), start=1):
        trainer.train_step([sample])
        trainer.consolidate_optimizer()  # as checkpoint_utils.save_checkpoint does first
        iterator = {"version": 2, "epoch": 1, "iterations_in_epoch": step, "shuffle": True}
        trainer.save_checkpoint(str(saved_to), {"train_iterator": iterator})
    if family == "hubert":  # saved as real files are: without the field the fix added
        saved = torch.load(path, weights_only=False)
        saved["cfg"]["model"].pop("autoregressive", None)
        torch.save(saved, path)
    return task


def data2vec_ctc_trainer_checkpoint(path: Path, data_dir: Path, *, normalize: bool = True, **encoder: Any) -> Any:
    """:func:`ctc_trainer_checkpoint` with a data2vec-audio encoder."""
    return ctc_trainer_checkpoint(path, data_dir, family="data2vec_audio", normalize=normalize, **encoder)


def save_as_trainer(path: Path, cfg: Any, model: Any, task: Any, optimizer: Any, criterion: str) -> None:
    """What fairseq's ``Trainer.save_checkpoint`` writes, through its own
    ``checkpoint_utils.torch_persistent_save``: ``cfg`` (model and task) as plain containers, the
    model's state, the task's (its pickled label dictionaries), the optimizer's, one update's history."""
    from fairseq import checkpoint_utils
    from omegaconf import OmegaConf

    history = [{"criterion_name": criterion, "optimizer_name": "Adam", "num_updates": 1}]
    checkpoint_utils.torch_persistent_save(
        {
            "args": None,
            "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "model": model.state_dict(),
            "task_state": task.state_dict(),
            "last_optimizer_state": optimizer.state_dict(),
            "optimizer_history": history,
            "extra_state": {"train_iterator": {"epoch": 1}},
        },
        str(path),
    )


def s2t_checkpoint(
    path: Path,
    data_dir: Path,
    *,
    vocab: int = 30,
    features: int = 8,
    pieces: list[str] | None = None,
    arch: str = "s2t_transformer_s",
    adjust: Callable[[Any], None] | None = None,
    **args: Any,
) -> Any:
    """A fairseq speech-to-text checkpoint as ``fairseq-train --task speech_to_text`` saves it: the data
    directory fairseq's recipes prepare (``config.yaml`` and the target dictionary), the command line
    parsed by fairseq's own parser into its legacy namespace (``cfg.model``, every setting mixed in),
    the task and model built from it, one optimizer's state. ``args``: command-line settings by their
    ``dest`` (``encoder_layers=2``; ``True`` for a switch); ``pieces``: a sentencepiece model's pieces
    (the dictionary's symbols, as fairseq's ``gen_vocab`` writes them), else ``vocab`` made-up ones;
    ``adjust``: changes the random weights in place before the file is written."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    data_dir.mkdir(parents=True, exist_ok=True)
    symbols = pieces if pieces is not None else [f"\u2581w{i}" for i in range(vocab - 4)]
    (data_dir / "spm.txt").write_text("".join(f"{symbol} 1\n" for symbol in symbols))
    (data_dir / "config.yaml").write_text(
        f"vocab_filename: spm.txt\ninput_feat_per_channel: {features}\ninput_channels: 1\n"
        "bpe_tokenizer:\n  bpe: sentencepiece\n  sentencepiece_model: spm.model\n"
        "transforms:\n  '*':\n  - utterance_cmvn\n"
    )
    settings: dict[str, Any] = {
        "encoder_layers": 2,
        "decoder_layers": 2,
        "encoder_embed_dim": 16,
        "encoder_ffn_embed_dim": 32,
    }
    settings |= {"decoder_ffn_embed_dim": 32, "encoder_attention_heads": 4, "decoder_attention_heads": 4}
    settings |= {"conv_channels": 24, "dropout": 0.0, **args}
    command = [str(data_dir), "--task", "speech_to_text", "--arch", arch, "--optimizer", "adam", "--lr", "1e-3"]
    command += ["--criterion", "label_smoothed_cross_entropy", "--max-tokens", "1000"]
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        command += [flag] if value is True else [flag, str(value)]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), command))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    randomize_parameters(model)
    if adjust is not None:
        with torch.no_grad():
            adjust(model)
    optimizer = torch.optim.Adam(model.parameters())
    save_as_trainer(path, cfg, model, task, optimizer, "label_smoothed_cross_entropy")
    return model.eval()


def wav2vec2_pretraining_checkpoint(path: Path, data_dir: Path, **overrides: Any) -> Any:
    """A fairseq wav2vec 2.0 pre-training checkpoint: the ``audio_pretraining`` task built from its cfg,
    the model (quantizer, ``project_q``, ``final_proj``) built by the task, one real Adam step on the
    contrastive loss of fairseq's own ``wav2vec`` criterion, saved with ``torch_persistent_save`` and the
    task's state. Returns the model (eval mode)."""
    from fairseq import tasks
    from fairseq.criterions.wav2vec_criterion import Wav2vecCriterion
    from omegaconf import OmegaConf

    settings = {"final_dim": 12, "latent_vars": 7, "latent_groups": 2, "quantize_targets": True, **overrides}
    model_cfg = _named(encoder_config("wav2vec2", **settings), "wav2vec2")
    task_cfg = OmegaConf.create(_pretraining_task("wav2vec2", data_dir, False))
    task = tasks.setup_task(task_cfg)
    model = task.build_model(OmegaConf.structured(model_cfg))
    randomize_parameters(model)
    model.train()
    criterion = Wav2vecCriterion(task, infonce=True)
    corpus = {"corpus_key": [0, 0]} if settings.get("layer_type") == "trf_adp" else {}  # adapters run per corpus
    sample = {"id": torch.tensor([0, 1]), "net_input": {"source": torch.randn(2, 16000), **corpus}}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-9)
    loss, _, _ = criterion(model, sample)
    loss.backward()
    optimizer.step()
    both = OmegaConf.create({"model": OmegaConf.structured(model_cfg), "task": task_cfg})
    save_as_trainer(path, both, model, task, optimizer, "Wav2vecCriterion")
    return model.eval()


def hubert_checkpoint(path: Path, data_dir: Path, **overrides: Any) -> Any:
    """A fairseq HuBERT pre-training checkpoint: the ``hubert_pretraining`` task built from its cfg
    (its label dictionary ``dict.km.txt`` read from the label directory), the model built by the task,
    saved with ``checkpoint_utils.torch_persistent_save`` with the task's ``state_dict()`` (the pickled
    label ``Dictionary``) as ``task_state`` and a real Adam state. Returns the model (eval mode)."""
    from fairseq import tasks
    from fairseq.models.hubert.hubert import HubertConfig
    from fairseq.tasks.hubert_pretraining import HubertPretrainingConfig
    from omegaconf import OmegaConf

    (data_dir / "dict.km.txt").write_text("".join(f"{i} 1\n" for i in range(20)))
    task_cfg = HubertPretrainingConfig(data=str(data_dir), label_dir=str(data_dir), labels=["km"], label_rate=50.0)
    task_cfg._name = "hubert_pretraining"
    settings: dict[str, Any] = {
        **SMALL_ENCODER,
        "extractor_mode": "default",
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "final_dim": 8,
        "label_rate": 50.0,  # in a trainer's cfg, an interpolation into the task
        **overrides,
    }
    model_cfg = HubertConfig(**settings)
    model_cfg._name = "hubert"
    task = tasks.setup_task(OmegaConf.structured(task_cfg))
    model = task.build_model(OmegaConf.structured(model_cfg))
    randomize_parameters(model)
    model.train()
    features = model(torch.randn(2, 4000), features_only=True)["x"]
    loss = features.float().pow(2).mean()  # one real step, so the optimizer holds Adam's moments
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-9)
    loss.backward()
    optimizer.step()
    both = OmegaConf.create({"model": OmegaConf.structured(model_cfg), "task": OmegaConf.structured(task_cfg)})
    save_as_trainer(path, both, model, task, optimizer, "HubertCriterion")
    return model.eval()


# --- openai-whisper ------------------------------------------------------------------------------


def whisper_original(dims: dict[str, int]) -> Any:
    """openai's ``Whisper`` with random weights (its encoder's sinusoids as openai computes them)."""
    from whisper.model import ModelDimensions, Whisper

    model = Whisper(ModelDimensions(**dims))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("ln.weight") or "_ln." in name or name.endswith("ln_post.weight"):
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.2)
    return model.eval()


def save_whisper_checkpoint(path: Path, model: Any, dtype: torch.dtype = torch.float16) -> Path:
    """As openai's released checkpoints: ``dims`` and a float16 ``model_state_dict``."""
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"dims": dataclasses.asdict(model.dims), "model_state_dict": state}, path)
    return path


# --- fairseq data2vec 2.0 (examples/data2vec/models/data2vec2.py) --------------------------------


class _Anything(types.ModuleType):
    """A stand-in module whose every attribute is an inert class: what data2vec 2.0's image and text
    modalities import from torchvision, PIL and timm at module level, never used for audio."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package: its submodules are stand-ins too

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {"__init__": lambda self, *args, **kwargs: None})


class _Mlp(nn.Module):
    """timm's ``Mlp`` as data2vec 2.0's blocks use it: fc1, activation, dropout, fc2, dropout."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Any = nn.GELU,
        drop: float = 0.0,
        **ignored: Any,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features or in_features)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features or in_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return out


class _DropPath(nn.Identity):
    """timm's stochastic depth, an identity in eval (and drop-path rates are 0 here)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()


class _Stand_ins(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds any module under ``roots`` not otherwise installed, as an :class:`_Anything`."""

    def __init__(self, roots: frozenset[str]) -> None:
        self.roots = roots

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] in self.roots and name not in sys.modules:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return _Anything(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_data2vec2() -> Any:
    """fairseq's data2vec 2.0 module, imported on the reference side with the shims it needs here:
    fairseq's package directory on ``sys.path`` (the module imports ``examples.…``); stand-ins for
    torchvision, PIL, torchaudio and timm (the image and text modalities import them; audio uses
    none), except timm's ``Mlp`` and ``DropPath``, which the blocks use (small real ones); and
    dataclasses defaulting to ``unsafe_hash=True`` during the import (the examples' configs have
    mutable defaults that Python 3.11 refuses). Registers ``data2vec_multi`` with fairseq."""
    import os

    import fairseq

    root = os.path.dirname(fairseq.__file__)
    if root not in sys.path:
        sys.path.insert(0, root)
    roots = frozenset({"torchvision", "PIL", "torchaudio", "timm"})
    stand_ins = _Stand_ins(roots - _installed(roots))
    vit = types.ModuleType("timm.models.vision_transformer")
    vit.__dict__.update(Mlp=_Mlp, DropPath=_DropPath, PatchEmbed=object, Block=object)
    original = dataclasses.dataclass

    def hashable(cls: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("unsafe_hash", True)
        return original(cls, **kwargs) if cls is not None else (lambda c: original(c, **kwargs))

    dataclasses.dataclass = hashable
    sys.meta_path.insert(0, stand_ins)
    try:
        if "timm" in stand_ins.roots:
            importlib.import_module("timm.models")
            sys.modules["timm.models.vision_transformer"] = vit
            setattr(sys.modules["timm.models"], "vision_transformer", vit)  # noqa: B010 - a stand-in module
        return importlib.import_module("examples.data2vec.models.data2vec2")
    finally:
        dataclasses.dataclass = original
        sys.meta_path.remove(stand_ins)


def _installed(roots: frozenset[str]) -> frozenset[str]:
    """Those of ``roots`` already imported for real: a stand-in must not shadow them."""
    return frozenset(name for name in roots if name in sys.modules and not isinstance(sys.modules[name], _Anything))


DATA2VEC2_AUDIO: dict[str, Any] = {
    "feature_encoder_spec": "[(16, 10, 5)] + [(16, 3, 2)] * 2",
    "conv_pos_width": 12,
    "conv_pos_depth": 3,
    "conv_pos_groups": 4,
    "prenet_depth": 0,
    "use_alibi_encoder": False,
}
"""A small data2vec 2.0 audio encoder, otherwise as the released base (no ALiBi: see the family)."""


def data2vec2_config(audio: dict[str, Any] | None = None, **model: Any) -> Any:
    """A small ``Data2VecMultiConfig`` (omegaconf) for the audio modality, its interpolations set as a
    trainer resolves them."""
    from omegaconf import OmegaConf

    data2vec2 = import_data2vec2()
    settings = {"depth": 2, "num_heads": 4, "embed_dim": 32, "mlp_ratio": 2.0, "norm_eps": 1e-5, **model}
    cfg = OmegaConf.structured(data2vec2.Data2VecMultiConfig(**settings))
    cfg._name = "data2vec_multi"
    cfg.supported_modality = "AUDIO"
    cfg.ema_anneal_end_step = cfg.max_update = 100
    cfg.seed = 1
    for key, value in {**DATA2VEC2_AUDIO, **(audio or {})}.items():
        cfg.modalities.audio[key] = value
    cfg.modalities.audio.num_alibi_heads = cfg.num_heads
    cfg.modalities.audio.model_depth = cfg.depth
    return cfg


def data2vec2_checkpoint(path: Path, data_dir: Path, *, audio: dict[str, Any] | None = None, **model: Any) -> Any:
    """A fairseq data2vec 2.0 audio pre-training checkpoint: the ``audio_pretraining`` task built from
    its cfg, ``data2vec_multi`` built by the task (with its EMA teacher, whose parameters its
    ``state_dict`` nests as ``_ema``, and the pre-training decoder), saved with
    ``checkpoint_utils.torch_persistent_save`` as fairseq's trainer saves (cfg as plain containers,
    ``task_state``, an optimizer state). Returns the model (eval mode)."""
    from fairseq import tasks
    from omegaconf import OmegaConf

    cfg = data2vec2_config(audio, **model)
    task_cfg = OmegaConf.create(_pretraining_task("wav2vec2", data_dir, True))
    task = tasks.setup_task(task_cfg)
    model_ = task.build_model(cfg)
    randomize_parameters(model_)
    with torch.no_grad():
        for module in model_.modules():
            if isinstance(module, nn.LayerNorm) and module.weight is not None:
                module.weight.uniform_(0.8, 1.2)
    optimizer = torch.optim.Adam(model_.parameters(), lr=1e-9)
    model_(torch.randn(2, 4000), features_only=True, mask=False)["x"].pow(2).mean().backward()
    optimizer.step()
    save_as_trainer(path, OmegaConf.create({"model": cfg, "task": task_cfg}), model_, task, optimizer, "ModelCriterion")
    return model_.eval()


# --- descript-audio-codec (DAC) ------------------------------------------------------------------

DAC_STAND_INS = frozenset(
    {
        "torchaudio",
        "librosa",
        "soundfile",
        "pyloudnorm",
        "ffmpy",
        "IPython",
        "matplotlib",
        "pystoi",
        "torch_stoi",
        "flatten_dict",
        "markdown2",
        "randomname",
        "tensorboard",
        "julius",
    }
)
"""What descript-audiotools imports at module level for audio I/O, metrics and logging: nothing DAC's
model uses. Stand-ins (:class:`_Anything`) while ``dac`` is imported; ``torch.utils.tensorboard`` too."""


def import_dac() -> Any:
    """descript-audio-codec's ``DAC`` class, imported with :data:`DAC_STAND_INS` (installed
    ``--no-deps``: its declared torchaudio is broken against torch 2.13)."""
    if "dac" in sys.modules:
        return sys.modules["dac"].DAC
    stand_ins = _Stand_ins(DAC_STAND_INS - _installed(DAC_STAND_INS))
    board = types.ModuleType("torch.utils.tensorboard")
    board.__dict__["SummaryWriter"] = object
    sys.modules.setdefault("torch.utils.tensorboard", board)
    sys.meta_path.insert(0, stand_ins)
    try:
        dac = importlib.import_module("dac")
    finally:
        sys.meta_path.remove(stand_ins)
    return dac.DAC


DAC_SMALL: dict[str, Any] = {
    "encoder_dim": 8,
    "encoder_rates": [2, 4],
    "decoder_dim": 32,
    "decoder_rates": [4, 2],
    "n_codebooks": 3,
    "codebook_size": 16,
    "codebook_dim": 4,
    "sample_rate": 16000,
}
"""A small DAC: two strides each way, three codebooks."""


def dac_checkpoint(path: Path, **kwargs: Any) -> Any:
    """A random DAC saved as ``DAC.save(path, package=False)`` writes it. Returns the model (eval)."""
    model = import_dac()(**{**DAC_SMALL, **kwargs})
    randomize_parameters(model)
    model.save(str(path), package=False)
    return model.eval()


# --- audiocraft (MusicGen / AudioGen and their EnCodec) ------------------------------------------

AUDIOCRAFT_STAND_INS = frozenset(
    {
        "av",
        "torchaudio",
        "librosa",
        "gradio",
        "spacy",
        "torchtext",
        "torchvision",
        "demucs",
        "torchmetrics",
        "pesq",
        "pystoi",
        "xformers",
    }
)
"""What audiocraft imports at module level for audio I/O, text processing, metrics and its demos: nothing
its models use (xformers: only the LM's memory-efficient attention, not the compression model).
Stand-ins (:class:`_Anything`) while ``audiocraft`` is imported (installed ``--no-deps``: it pins
torch 2.1)."""


def import_audiocraft() -> Any:
    """audiocraft's ``models`` package (builders, loaders) and ``utils.export``, imported with
    :data:`AUDIOCRAFT_STAND_INS`."""
    stand_ins = _Stand_ins(AUDIOCRAFT_STAND_INS - _installed(AUDIOCRAFT_STAND_INS))
    sys.meta_path.insert(0, stand_ins)
    try:
        importlib.import_module("audiocraft.models.builders")
        importlib.import_module("audiocraft.models.loaders")
        importlib.import_module("audiocraft.utils.export")
    finally:
        sys.meta_path.remove(stand_ins)
    return sys.modules["audiocraft"]


AUDIOCRAFT_ENCODEC: dict[str, Any] = {
    "compression_model": "encodec",
    "device": "cpu",
    "dataset": {"segment_duration": 1.0, "batch_size": 64},
    "optim": {"optimizer": "adam", "lr": 3e-4, "epochs": 200},
    "sample_rate": 16000,
    "channels": 1,
    "encodec": {  # interpolations, as audiocraft's config/model/encodec/default.yaml writes them
        "autoencoder": "seanet",
        "quantizer": "rvq",
        "sample_rate": "${sample_rate}",
        "channels": "${channels}",
        "causal": False,
        "renormalize": False,
    },
    "seanet": {
        "dimension": 16,
        "channels": "${channels}",
        "causal": "${encodec.causal}",
        "n_filters": 4,
        "n_residual_layers": 1,
        "ratios": [4, 2],
        "activation": "ELU",
        "activation_params": {"alpha": 1.0},
        "norm": "weight_norm",
        "norm_params": {},
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 7,
        "dilation_base": 2,
        "pad_mode": "constant",
        "true_skip": True,
        "compress": 2,
        "lstm": 2,
        "disable_norm_outer_blocks": 0,
        "encoder": {},
        "decoder": {"trim_right_ratio": 1.0},
    },
    "rvq": {
        "n_q": 4,
        "q_dropout": False,
        "bins": 64,
        "decay": 0.99,
        "kmeans_init": True,
        "kmeans_iters": 50,
        "threshold_ema_dead_code": 2,
        "orthogonal_reg_weight": 0.0,
        "orthogonal_reg_active_codes_only": False,
    },
}
"""A small audiocraft EnCodec config (the sections ``get_compression_model`` reads), as MusicGen's 32 kHz
one is shaped: weight norm, constant padding, a residual shortcut, two LSTM layers, 4 codebooks. The
rate, the channels and causality are interpolations (``${sample_rate}``), as in audiocraft's own config
files: its solver keeps them so and its export writes them unresolved (``OmegaConf.to_yaml``)."""


def audiocraft_encodec_file(path: Path, sections: dict[str, Any] | None = None) -> Any:
    """An audiocraft EnCodec built by ``builders.get_compression_model`` from its config, with random
    weights and initialised codebooks, saved as a solver's checkpoint and exported by audiocraft's own
    ``utils.export.export_encodec`` (``best_state``, ``xp.cfg`` YAML, ``version``, ``exported``).
    Returns the model (eval)."""
    from omegaconf import OmegaConf

    audiocraft = import_audiocraft()
    cfg = OmegaConf.create({**AUDIOCRAFT_ENCODEC, **(sections or {})})
    model = audiocraft.models.builders.get_compression_model(cfg)
    randomize_parameters(model)
    randomize_buffers(model)
    for layer in model.quantizer.vq.layers:
        layer._codebook.inited.fill_(1.0)
    solver = path.with_name("checkpoint.th")
    # the solver's cfg as plain containers: audiocraft's export reads it with torch.load's default, which
    # under torch >= 2.6 refuses an omegaconf object; the exported xp.cfg is YAML text either way
    torch.save({"best_state": {"model": model.state_dict()}, "xp.cfg": OmegaConf.to_container(cfg)}, solver)
    audiocraft.utils.export.export_encodec(solver, path)
    return model.eval()


def audiocraft_solver_file(path: Path, cfg: Any, model: Any) -> dict[str, torch.Tensor]:
    """An audiocraft solver's ``checkpoint.th`` as its training loop saves it: flashy's state manager over
    the solver's registered states (``history``, ``xp.cfg`` as the omegaconf config itself, ``xp.sig``,
    ``best_state``, ``fsdp_best_state``, the live ``model`` and ``optimizer``, as the compression and
    MusicGen solvers' ``build_model`` register them), written by audiocraft's ``save_checkpoint``. The best
    state is registered, then the live model takes an optimizer step, so the two differ. Returns the best
    state (a copy)."""
    import types

    flashy = importlib.import_module("flashy")
    best_states = importlib.import_module("audiocraft.utils.best_state")
    checkpoints = importlib.import_module("audiocraft.utils.checkpoint")
    base: Any = flashy.BaseSolver

    class Solver(base):  # type: ignore[misc]  # its state as BaseSolver's, without an XP to run in
        def __init__(self) -> None:
            self.stateful = flashy.state.StateManager()
            history = [{"train": {"loss": 1.0}, "valid": {"loss": 0.9}}]  # dora's link keeps it
            self.xp = types.SimpleNamespace(cfg=cfg, sig="0a1b2c3d", link=types.SimpleNamespace(history=history))
            self.register_stateful("history")
            self.register_stateful("xp.cfg", "xp.sig", write_only=True)
            self.best_state = best_states.BestStateDictManager()
            self.fsdp_best_state: dict[str, Any] = {}
            self.register_stateful("best_state", "fsdp_best_state")
            self.model = model
            self.optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
            self.register_stateful("model", "optimizer")
            self.best_state.register("model", model)

    solver = Solver()
    best = {key: tensor.clone() for key, tensor in solver.best_state.state_dict()["model"].items()}
    loss = sum(p.float().pow(2).sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    solver.optimizer.step()
    checkpoints.save_checkpoint(solver.state_dict(), path)
    return best


def audiocraft_solver_checkpoint(path: Path) -> tuple[Any, Any]:
    """An audiocraft compression solver's ``checkpoint.th`` (:func:`audiocraft_solver_file`) of an EnCodec
    with random weights. Returns (the model with the best weights, the live model), eval."""
    from omegaconf import OmegaConf

    audiocraft = import_audiocraft()
    cfg = OmegaConf.create(AUDIOCRAFT_ENCODEC)
    model = audiocraft.models.builders.get_compression_model(cfg)
    randomize_parameters(model)
    randomize_buffers(model)
    for layer in model.quantizer.vq.layers:
        layer._codebook.inited.fill_(1.0)
    best = audiocraft.models.builders.get_compression_model(cfg)
    best.load_state_dict(audiocraft_solver_file(path, cfg, model))
    return best.eval(), model.eval()


MUSICGEN_LM: dict[str, Any] = {
    "lm_model": "transformer_lm",
    "device": "cpu",
    "dtype": "float32",
    "dataset": {"segment_duration": 10.0, "batch_size": 16, "num_workers": 4},
    "optim": {"optimizer": "adamw", "lr": 1e-4, "epochs": 100, "updates_per_epoch": 2000, "ema": {"use": False}},
    "schedule": {"lr_scheduler": "cosine", "cosine": {"warmup": 4000, "lr_min_ratio": 0.0}},
    "logging": {"log_tensorboard": False, "log_wandb": False},
    "transformer_lm": {
        "dim": 16,
        "num_heads": 2,
        "num_layers": 2,
        "hidden_scale": 2,
        "n_q": 4,
        "card": 64,
        "dropout": 0.0,
        "emb_lr": None,
        "activation": "gelu",
        "norm_first": True,
        "bias_ff": False,
        "bias_attn": False,
        "bias_proj": False,
        "past_context": None,
        "causal": True,
        "custom": False,
        "memory_efficient": False,
        "attention_as_float32": False,
        "layer_scale": None,
        "positional_embedding": "sin",
        "xpos": False,
        "checkpointing": "none",
        "weight_init": None,
        "depthwise_init": None,
        "zero_bias_init": False,
        "norm": "layer_norm",
        "cross_attention": False,
        "qk_layer_norm": False,
        "qk_layer_norm_cross": False,
        "attention_dropout": None,
        "kv_repeat": 1,
        "two_step_cfg": False,
    },
    "codebooks_pattern": {
        "modeling": "delay",
        "delay": {"delays": [0, 1, 2, 3], "flatten_first": 0, "empty_initial": 0},
    },
    "conditioners": {
        "description": {
            "model": "t5",
            "t5": {"name": "t5-small", "finetune": False, "word_dropout": 0.0, "normalize_text": False},
        }
    },
    "fuser": {
        "cross_attention_pos_emb": False,
        "cross_attention_pos_emb_scale": 1,
        "sum": [],
        "prepend": [],
        "cross": ["description"],
        "input_interpolate": [],
    },
    "attribute_dropout": {},
    "classifier_free_guidance": {"training_dropout": 0.0, "inference_coef": 3.0},
}
"""A MusicGen LM's xp.cfg, shrunk (4 codebooks of 32 codes, 2 layers of width 16), as MusicGen's solver
keeps it; conditioned on text by T5 through cross-attention; with the training sections a run's config
holds (its data, optimiser, schedule, logging), which another run of a sweep changes."""

T5_SMALL_WIDTH = 512
"""t5-small's width, which audiocraft's conditioner projects from (its ``MODELS_DIMS``)."""


def t5_directory(path: Path, *, as_t5_small: bool = False) -> Path:
    """A T5 text encoder as transformers saves it (random, t5-small's width, one thin layer; or shaped as
    t5-small is, with ``as_t5_small``, so that audiocraft can name it), with a tokenizer (a small Unigram
    vocabulary): what a user names with ``--text-encoder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    if as_t5_small:
        config = T5Config(d_model=T5_SMALL_WIDTH, d_ff=2048, num_layers=6, num_heads=8, d_kv=64, vocab_size=64)
    else:
        config = T5Config(d_model=T5_SMALL_WIDTH, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=64)
    T5EncoderModel(config).eval().save_pretrained(path)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [(f"\u2581{word}", -1.0) for word in ("a", "calm", "piano", "loud", "drum", "song", "with")]
    pieces += [(letter, -2.0) for letter in "abcdefghijklmnopqrstuvwxyz"]
    unigram = Tokenizer(models.Unigram(pieces, unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    T5Tokenizer(tokenizer_object=unigram, eos_token="</s>", unk_token="<unk>", pad_token="<pad>").save_pretrained(path)
    return path


def audiocraft_lm(cfg: Any) -> Any:
    """audiocraft's LM built by ``get_lm_model`` from ``cfg``, random weights. audiocraft's T5 conditioner
    loads T5 from the Hub when built: here a random T5 of t5-small's width stands in (its weights are in
    no file audiocraft writes; only the projection is)."""
    from unittest import mock

    from transformers import T5Config, T5EncoderModel

    audiocraft = import_audiocraft()
    conditioners = sys.modules["audiocraft.modules.conditioners"]
    t5 = T5EncoderModel(T5Config(d_model=T5_SMALL_WIDTH, d_ff=8, num_layers=1, num_heads=1, d_kv=4, vocab_size=8))
    with (
        mock.patch.object(conditioners.T5EncoderModel, "from_pretrained", lambda *a, **k: t5),
        mock.patch.object(conditioners.T5Tokenizer, "from_pretrained", lambda *a, **k: None),
    ):
        lm = audiocraft.models.builders.get_lm_model(cfg)
    randomize_parameters(lm)
    return lm


def musicgen_run_checkpoint(path: Path, compression_model_checkpoint: str) -> Any:
    """A MusicGen fine-tune's ``checkpoint.th`` as audiocraft's MusicGen solver saves it
    (:func:`audiocraft_solver_file`): its ``xp.cfg`` names the compression model it trained with
    (``compression_model_checkpoint``), which the file does not hold. Returns the LM with the best
    weights, eval."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({**MUSICGEN_LM, "compression_model_checkpoint": compression_model_checkpoint})
    lm = audiocraft_lm(cfg)
    lm.load_state_dict(audiocraft_solver_file(path, cfg, lm))
    return lm.eval()


def musicgen_directory(path: Path, lm_sections: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """An audiocraft MusicGen directory as ``MusicGen.get_pretrained(path)`` reads it: ``state_dict.bin``
    (the LM, exported by audiocraft's ``export_lm`` from a solver checkpoint) and
    ``compression_state_dict.bin`` (its EnCodec, by ``export_encodec``), random weights (the LM:
    :func:`audiocraft_lm`). Returns (lm, compression model), eval."""
    from omegaconf import OmegaConf

    audiocraft = import_audiocraft()
    path.mkdir(parents=True, exist_ok=True)
    compression = audiocraft_encodec_file(path / "compression_state_dict.bin")
    cfg = OmegaConf.create({**MUSICGEN_LM, **(lm_sections or {})})
    lm = audiocraft_lm(cfg)
    solver = path / "lm_checkpoint.th"
    torch.save(
        {"best_state": {"model": lm.state_dict()}, "fsdp_best_state": None, "xp.cfg": OmegaConf.to_container(cfg)},
        solver,
    )
    audiocraft.utils.export.export_lm(solver, path / "state_dict.bin")
    solver.unlink()
    (path / "checkpoint.th").unlink(missing_ok=True)
    return lm.eval(), compression
