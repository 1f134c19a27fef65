"""fairseq speech-to-text (``s2t_transformer``: a Conv1d subsampler, a pre-LN transformer encoder and
decoder, sinusoidal positions) -> ``Speech2TextForConditionalGeneration``.

transformers' own script reads only the old ``args`` namespace (a file fairseq 0.10 or later saves has
``args: None`` and the settings under ``cfg.model``), takes the activation as ReLU and both layer-norm
orders as pre-LN whatever the file says. Here ``cfg.model`` (or ``args``) is read by one table: what
``Speech2TextConfig`` cannot hold is refused, naming the field (a post-LN encoder or decoder, learned
or no positions, the ``convtransformer`` Conv2d subsampler, two widths). fairseq's legacy model keeps
every training setting in that same namespace, so fields the table does not know are not listed.
The processor: ``Speech2TextFeatureExtractor`` (log-mel filter banks, as many bins as the model's
input channels, utterance CMVN as fairseq's recipes), and, given the sentencepiece model
(``--tokenizer``), ``Speech2TextTokenizer`` from it and the fairseq dictionary fairseq's data preparation
writes beside it (the same name, ``.txt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig, Speech2TextConfig

from wmap.config_back import Back, Merged, written
from wmap.config_fields import (
    PROBABILITY,
    Checked,
    Composite,
    ConfigTable,
    Derived,
    Ignored,
    Translated,
    Translation,
    boolean,
    divides,
    integer,
    one_of,
    optional,
    translate,
)
from wmap.errors import BadConfig
from wmap.fairseq import NO_CONFIG, TRAINING_ONLY, activation, fairseq_model_config, layers_agree
from wmap.fairseq.decoder import (
    NEGATIVE,
    decoder_tensors,
    plain_decoder_fields,
    transformer_decoder_rules,
    vocabulary_size,
)
from wmap.fairseq.dictionary import SPECIALS, STAND_INS, dict_file_text
from wmap.fairseq.export import DATA, fairseq_layout, trainer_file
from wmap.fairseq.processor import FEATURES, VOCAB, extractor_settings, vocabulary_dictionary
from wmap.models.base import Exporter, ExportSource, ModelSpec, TranslatedConfig, shipped
from wmap.models.speech_to_text_processor import DATA_CONFIG, S2T_DATA, feature_extractor, generation, processor
from wmap.pipeline import first_match
from wmap.transforms import PARAMS, Layout, Transform, rename, skip

SOURCE = "fairseq cfg.model (s2t_transformer)"
ONE_WIDTH = "Speech2Text has one width, d_model (encoder_embed_dim)"


def kernel_sizes(value: object) -> Result[Any, str]:
    """fairseq's ``conv_kernel_sizes``: 1 to 16 comma-separated kernel sizes (``"5,5"``)."""
    parts = value.split(",") if isinstance(value, str) and len(value) < 256 else []
    if not 0 < len(parts) <= 16 or not all(p.strip().isdigit() and 0 < int(p) <= 4096 for p in parts):
        return Failure("1 to 16 comma-separated kernel sizes ('5,5')")
    return Success(tuple(int(p) for p in parts))


def subsampler(kernels: tuple[int, ...]) -> dict[str, Any]:
    """The subsampler's convs: their kernel sizes and how many."""
    return {"conv_kernel_sizes": list(kernels), "num_conv_layers": len(kernels)}


def subsampler_back(config: Any) -> str:
    return ",".join(str(int(k)) for k in config.conv_kernel_sizes)


def _width(values: Mapping[str, Any]) -> Any:
    return values["encoder_embed_dim"]


WIDTH = integer(1, 65536)

S2T_TRANSFORMER = ConfigTable(
    SOURCE,
    (
        Translated("encoder_embed_dim", WIDTH, "d_model", 512),
        Translated("encoder_layers", integer(1, 512), "encoder_layers", 12),
        Translated("encoder_ffn_embed_dim", integer(1, 262144), "encoder_ffn_dim", 2048),
        Translated(
            "encoder_attention_heads", integer(1, 1024), "encoder_attention_heads", 8, fits=divides("encoder_embed_dim")
        ),
        Derived("decoder_embed_dim", WIDTH, _width, ONE_WIDTH, None),
        Derived("decoder_input_dim", optional(WIDTH), _width, ONE_WIDTH, None),
        Derived("decoder_output_dim", optional(WIDTH), _width, ONE_WIDTH, None),
        Translated("decoder_layers", integer(1, 512), "decoder_layers", 6),
        Translated("decoder_ffn_embed_dim", integer(1, 262144), "decoder_ffn_dim", 2048),
        Translated(
            "decoder_attention_heads", integer(1, 1024), "decoder_attention_heads", 8, fits=divides("encoder_embed_dim")
        ),
        Translated("activation_fn", activation, "activation_function", "relu"),
        Translated("no_scale_embedding", NEGATIVE, "scale_embedding", False),
        Translated("share_decoder_input_output_embed", boolean, "tie_word_embeddings", False),
        Translated("max_source_positions", integer(1, 10**7), "max_source_positions", 6000),
        Translated("max_target_positions", integer(1, 10**7), "max_target_positions", 1024),
        Translated("input_feat_per_channel", integer(1, 4096), "input_feat_per_channel", 80),
        Translated("input_channels", integer(1, 64), "input_channels", 1),
        Translated("conv_channels", integer(2, 65536), "conv_channels", 1024),
        Composite("conv_kernel_sizes", kernel_sizes, subsampler, subsampler_back, "5,5"),
        Checked(
            "conv_version",
            ("s2t_transformer",),
            "Speech2Text's subsampler is the Conv1d one; convtransformer's Conv2d has no counterpart",
            "s2t_transformer",
            one_of("s2t_transformer", "convtransformer"),
        ),
        Ignored("conv_out_channels", "the convtransformer Conv2d's channels (checked: not used)"),
        Translated("dropout", PROBABILITY, "dropout", 0.1),
        Translated("attention_dropout", PROBABILITY, "attention_dropout", 0.1),
        Translated("activation_dropout", PROBABILITY, "activation_dropout", 0.1),
        Translated("decoder_layerdrop", PROBABILITY, "decoder_layerdrop", 0.0),
        Checked("encoder_normalize_before", (True,), "Speech2Text's encoder is pre-LN (a final layer norm)", True),
        Checked("decoder_normalize_before", (True,), "Speech2Text's decoder is pre-LN (a final layer norm)", True),
        Checked("decoder_learned_pos", (False,), "Speech2Text's positions are sinusoidal", False),
        Checked("layernorm_embedding", (False,), "Speech2Text's decoder has no embedding layer norm", False),
        Checked("cross_self_attention", (False,), "Speech2Text's decoder attends to itself, then the encoder", False),
        *plain_decoder_fields("Speech2Text"),
        Ignored("ctc_weight", "the auxiliary CTC loss's weight: its projection (encoder.ctc_proj) is skipped"),
        Ignored("encoder_freezing_updates", TRAINING_ONLY + " (updates before the encoder trains)"),
        Ignored("quant_noise_pq", TRAINING_ONLY + " (quantization noise)"),
        Ignored("load_pretrained_encoder_from", "where training loaded a pre-trained encoder; the file holds it"),
        Ignored("tgt_dict_size", "the target dictionary's size again (the embedding's rows say it)"),
    ),
)
"""fairseq ``s2t_transformer``'s model arguments (its ``add_args`` and ``base_architecture``) for
``Speech2TextConfig``: the subsampler, the two stacks, positions and embeddings, dropouts."""

FAIRSEQ_IDS: dict[str, Any] = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "decoder_start_token_id": 2}
"""fairseq's dictionary ids; its decoder starts from ``</s>``."""


def translate_config(meta: Mapping[str, Any], layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    """``cfg.model`` (or ``args``) by its table, checked against the file's layers; the vocabulary from
    the decoder's embedding. fairseq's legacy namespace mixes in every training setting: unknown fields
    are not listed."""
    model = fairseq_model_config(meta)
    if model is None:
        return Failure(NO_CONFIG)
    return translate(S2T_TRANSFORMER, model, report_unknown=False).bind(partial(_built, layout=layout))


def _built(read: Translation, layout: Layout) -> Result[TranslatedConfig, BadConfig]:
    section, values = S2T_TRANSFORMER.section, read.values
    wrong = layers_agree(section, layout, "encoder.transformer_layers", values["encoder_layers"]) or layers_agree(
        section, layout, "decoder.layers", values["decoder_layers"], "decoder_layers"
    )
    if wrong is not None:
        return Failure(wrong)
    return vocabulary_size(layout).map(partial(_config, read))


def _config(read: Translation, rows: int) -> TranslatedConfig:
    return TranslatedConfig(Speech2TextConfig(**read.kwargs, vocab_size=rows, **FAIRSEQ_IDS), read.ignored)


ENCODER = (
    rename("encoder.subsample.conv_layers", "model.encoder.conv.conv_layers"),
    rename("encoder.transformer_layers", "model.encoder.layers"),
    rename("encoder.layer_norm", "model.encoder.layer_norm", PARAMS),
    skip("encoder.ctc_proj", "the auxiliary CTC loss's projection (ctc_weight): training only"),
    skip("encoder.version", "fairseq's checkpoint format marker, not a weight"),
)
"""The subsampler, the encoder layers (BART's names already) and the final norm."""


def pipeline(config: PretrainedConfig, meta: Mapping[str, Any]) -> Transform:
    """The encoder's rules and fairseq's (pre-LN: the config checked it) transformer decoder under
    ``model.decoder``, its output projection tied as the config says."""
    decoder = transformer_decoder_rules(
        bool(config.tie_word_embeddings), True, "model.decoder", "lm_head", "Speech2Text"
    )
    return first_match("speech_to_text", (*ENCODER, *decoder))


S2T_ARCH = {"_name": "s2t_transformer", "arch": "s2t_transformer"}
"""What the way back's ``cfg.model`` always is beyond the table: the architecture."""

DICTIONARY = "dict.txt"
COPIED = "copied"
S2T_TASK = {"_name": "speech_to_text", "task": "speech_to_text", "data": DATA, "config_yaml": DATA_CONFIG}
"""fairseq's (legacy) ``speech_to_text`` task over the data directory written beside the file."""


S2T_CFG = {"model": Merged(Back(S2T_TRANSFORMER.fields, fixed=True), S2T_ARCH), "task": S2T_TASK}
"""The file's ``cfg``: ``cfg.model`` from the same table read back (its single allowed values among
them), the task over the folder the file is written to."""


SENTENCEPIECE = "sentencepiece.bpe.model"
"""Where ``Speech2TextTokenizer`` keeps the sentencepiece model in a directory."""

SENTENCEPIECE_BESIDE = "spm.model"
"""Its name in the data directory written beside the file (``config.yaml``'s ``bpe_tokenizer``)."""


def data_config(config: PretrainedConfig, features: str, sentencepiece: bool) -> Result[str, BadConfig]:
    """The task's ``config.yaml``: the dictionary, the input's channels, the feature extractor's CMVN as
    fairseq's ``utterance_cmvn`` transform (whose ``norm_means``/``norm_vars`` it is), and the
    sentencepiece model copied beside it where the directory has one (what fairseq's ``generate`` encodes
    and decodes text with)."""
    settings = extractor_settings(features, FEATURES, "a Speech2TextFeatureExtractor config (JSON)")
    return settings.map(partial(_data_config, config, sentencepiece=sentencepiece))


DATA_CONFIG_BACK = Merged({"vocab_filename": DICTIONARY}, Back(S2T_DATA.fields, fixed=True))
"""The task's ``config.yaml`` from the feature extractor's settings: the data config's table read back."""

SENTENCEPIECE_BACK = {"bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": SENTENCEPIECE_BESIDE}}
"""Where the directory has a sentencepiece model: the one copied beside the file."""


def _data_config(config: PretrainedConfig, settings: Any, sentencepiece: bool) -> str:
    # what the directory's file leaves out is what the forward direction's extractor would hold
    extractor = SimpleNamespace(**{**feature_extractor(config).to_dict(), **settings})
    tree = Merged(DATA_CONFIG_BACK, SENTENCEPIECE_BACK) if sentencepiece else DATA_CONFIG_BACK
    return str(yaml.safe_dump(written(tree, extractor), sort_keys=False))


def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    """fairseq's names (the rules reversed), its ``cfg``, and the data its task reads: the dictionary
    (from ``vocab.json``: fairseq's own indices) and ``config.yaml``."""
    size, sentencepiece = int(source.config.vocab_size), SENTENCEPIECE in source.listed
    copied = {SENTENCEPIECE_BESIDE: SENTENCEPIECE} if sentencepiece else {}
    return Result.do(
        (
            fairseq_layout(source, mask=False),
            {"cfg": written(S2T_CFG, source.config), DICTIONARY: words, DATA_CONFIG: data, COPIED: copied},
        )
        for words in vocabulary_dictionary(source.files[VOCAB], size, SPECIALS)
        for data in data_config(source.config, source.files[FEATURES], sentencepiece)
    )


def copied_files(meta: Mapping[str, Any]) -> dict[str, str]:
    """The sentencepiece model, copied into the data directory where the directory has one."""
    return dict(meta[COPIED])


def trainer_checkpoint(state: Mapping[str, Any], meta: Mapping[str, Any], where: Path) -> dict[str, Any]:
    """fairseq's trainer file: the ``cfg`` (its data directory the file's folder), the state dict with
    the decoder's marker and tied projection."""
    cfg = meta["cfg"]
    return trainer_file(cfg, decoder_tensors(state, cfg), "label_smoothed_cross_entropy", where.parent)


def data_files(meta: Mapping[str, Any]) -> dict[str, str]:
    """Beside the file, its task's data directory: ``dict.txt`` and ``config.yaml``."""
    return {DICTIONARY: dict_file_text(meta[DICTIONARY]), DATA_CONFIG: meta[DATA_CONFIG]}


EXPORTER = Exporter(
    original,
    trainer_checkpoint,
    "a fairseq s2t_transformer checkpoint, with its task's data beside it (dict.txt, config.yaml, spm.model: "
    "load_model_ensemble_and_task and fairseq's generate read them)",
    reads=(VOCAB, FEATURES),
    companions=data_files,
    copied=copied_files,
)

SPEECH_TO_TEXT = ModelSpec(
    **shipped("speech_to_text"),
    stand_ins=STAND_INS,
    config_class=Speech2TextConfig,
    config_from_checkpoint=translate_config,
    pipeline=pipeline,
    model_class="Speech2TextForConditionalGeneration",
    extras=processor,
    without_processor=generation,
    takes_file="--tokenizer: the sentencepiece model (spm_*.model; its fairseq dictionary, spm_*.txt, beside it)",
    export=EXPORTER,
)
