"""fairseq speech-to-text (``s2t_transformer``) -> Speech2TextForConditionalGeneration: parity with
fairseq's own model on checkpoints its trainer wrote, and the refusals, named."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from tests.helpers import fairseq_sentencepiece, load_pretrained_strictly
from wmap import convert, preview
from wmap.conversion import prepare
from wmap.errors import BadConfig
from wmap.models import get_model

SPEC = get_model("speech_to_text").unwrap()


def _reference() -> tuple[Mapping[str, tuple[int, ...]], dict[str, Any]]:
    layout, meta = SPEC.reference_layout().unwrap()
    return layout, copy.deepcopy(meta)


def _features() -> tuple[torch.Tensor, torch.Tensor]:
    """Two utterances of 8 filter banks, the second padded (50 frames of 64)."""
    torch.manual_seed(0)
    features = torch.randn(2, 64, 8)
    lengths = torch.tensor([64, 50])
    features[1, 50:] = 0.0
    return features, lengths


def _logits_both(original: Any, converted: Any) -> tuple[torch.Tensor, torch.Tensor]:
    features, lengths = _features()
    tokens = torch.tensor([[2, 5, 9, 7, 11], [2, 6, 4, 8, 10]])
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    with torch.no_grad():
        theirs, _ = original(src_tokens=features, src_lengths=lengths, prev_output_tokens=tokens)
        ours = converted(input_features=features, attention_mask=mask, decoder_input_ids=tokens).logits
    return theirs, ours


@pytest.mark.parity
@pytest.mark.parametrize(
    "settings",
    [
        {"share_decoder_input_output_embed": True},
        {"activation_fn": "gelu", "no_scale_embedding": True, "conv_kernel_sizes": "5,3,3"},
    ],
    ids=["shared-relu", "untied-gelu-unscaled-3convs"],
)
def test_a_trainer_checkpoint_converts_with_fairseqs_logits(tmp_path: Path, settings: dict[str, Any]) -> None:
    from transformers import AutoFeatureExtractor, GenerationConfig, Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint

    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", **settings)
    prepared = preview(SPEC, tmp_path / "checkpoint.pt").unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf").unwrap()
    converted = load_pretrained_strictly(Speech2TextForConditionalGeneration, out)
    theirs, ours = _logits_both(original, converted)
    assert theirs.std() > 0.1  # not a vacuous comparison
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert AutoFeatureExtractor.from_pretrained(out).feature_size == 8
    generated = converted.generate(_features()[0], max_new_tokens=4)
    assert generated.shape[0] == 2 and int(generated[0, 0]) == 2  # fairseq's decoder starts from </s>
    decoding = GenerationConfig.from_pretrained(out)
    assert (decoding.suppress_tokens, decoding.min_new_tokens, decoding.num_beams) == ([1], 1, 5)


@pytest.mark.parity
def test_greedy_generation_gives_fairseqs_own_transcripts(tmp_path: Path) -> None:
    """``generate`` on the converted model, with the generation config written beside it (which never
    emits the pad token, as fairseq), against fairseq's ``SequenceGenerator`` (beam 1), token for token
    on a padded batch."""
    from fairseq.data import Dictionary
    from fairseq.sequence_generator import SequenceGenerator
    from transformers import Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint

    torch.manual_seed(1)  # a random model's transcripts are mostly one token repeated: these differ
    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data")
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf").unwrap()
    converted = load_pretrained_strictly(Speech2TextForConditionalGeneration, out)
    features, lengths = _features()
    steps = 12
    generator = SequenceGenerator(
        [original], Dictionary.load(str(tmp_path / "data" / "spm.txt")), beam_size=1, max_len_a=0, max_len_b=steps
    )
    with torch.no_grad():
        found = generator.generate([original], {"net_input": {"src_tokens": features, "src_lengths": lengths}})
    theirs = [hypotheses[0]["tokens"].tolist() for hypotheses in found]
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    ours = converted.generate(features, attention_mask=mask, max_new_tokens=steps, num_beams=1)  # as written
    assert theirs[0] != theirs[1]  # two utterances, two transcripts
    # fairseq ends each with </s> (forced at its length limit); transformers starts each from it
    assert [row[1:] for row in ours.tolist()] == [tokens[:steps] for tokens in theirs]


def _ending_near(token: int, scale: float) -> Any:
    """Makes ``</s>``'s output row ``scale`` times ``token``'s, so that a random model's hypotheses end
    (at several lengths) instead of running to the limit."""

    def adjust(model: Any) -> None:
        rows = model.decoder.output_projection.weight
        rows[2] = rows[token] * scale

    return adjust


@pytest.mark.parity
def test_beam_search_gives_fairseqs_best_transcript_and_score(tmp_path: Path) -> None:
    """``generate`` with the generation config written beside the model (5 beams, scores normalised by
    length, done once 5 hypotheses end) against fairseq's ``SequenceGenerator`` (beam 5, its defaults):
    the same best transcript and score for each utterance of a padded batch, hypotheses ending before the
    limit, and a beam transcript that greedy decoding does not give (the beam matters). Below the best
    the n-best may differ: fairseq adds no more ended hypotheses once it has 5, transformers keeps the 5
    best it has seen."""
    from fairseq.data import Dictionary
    from fairseq.sequence_generator import SequenceGenerator
    from transformers import Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint

    torch.manual_seed(2)  # its token 18 is the one a random model repeats: </s> made close to it
    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", adjust=_ending_near(18, 0.98))
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf").unwrap()
    converted = load_pretrained_strictly(Speech2TextForConditionalGeneration, out)
    features, lengths = _features()
    steps = 12
    dictionary = Dictionary.load(str(tmp_path / "data" / "spm.txt"))
    generator = SequenceGenerator([original], dictionary, beam_size=5, max_len_a=0, max_len_b=steps)
    with torch.no_grad():
        found = generator.generate([original], {"net_input": {"src_tokens": features, "src_lengths": lengths}})
    theirs = [hypotheses[0]["tokens"].tolist() for hypotheses in found]
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    beam = converted.generate(
        features, attention_mask=mask, max_new_tokens=steps, output_scores=True, return_dict_in_generate=True
    )
    ours = [[token for token in row[1:] if token != 1] for row in beam.sequences.tolist()]  # after </s>, no pads
    assert ours == theirs and all(len(tokens) <= steps for tokens in theirs)  # each ended by </s>
    scores = torch.tensor([float(hypotheses[0]["score"]) for hypotheses in found])
    torch.testing.assert_close(beam.sequences_scores, scores, rtol=0, atol=1e-4)
    greedy = converted.generate(features, attention_mask=mask, max_new_tokens=steps, num_beams=1)
    assert [row[1:] for row in greedy.tolist()] != ours


@pytest.mark.parity
def test_the_directory_transcribes_through_pipeline_as_fairseq_generates(tmp_path: Path) -> None:
    """As users run it: ``pipeline("automatic-speech-recognition", model=out)`` on raw audio gives the
    text of fairseq's ``SequenceGenerator`` with its defaults (beam 5, at most 200 tokens) on the
    processor's features, decoded by the sentencepiece model. A random model runs to the length limit,
    so the limit is tested too: transformers' script's ``max_length`` 200 stops a token short (the
    control)."""
    import sentencepiece
    from fairseq.data import Dictionary
    from fairseq.sequence_generator import SequenceGenerator
    from transformers import AutoProcessor, pipeline

    from tests.originals import s2t_checkpoint

    model, pieces = fairseq_sentencepiece(tmp_path / "data")
    torch.manual_seed(3)
    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", vocab=len(pieces) + 4, pieces=pieces)
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf", processor_file=model).unwrap()
    recognizer = pipeline("automatic-speech-recognition", model=str(out))
    processor = AutoProcessor.from_pretrained(out)
    generator = SequenceGenerator([original], Dictionary.load(str(tmp_path / "data" / "spm.txt")), beam_size=5)
    text = sentencepiece.SentencePieceProcessor(model_file=str(model))
    torch.manual_seed(0)
    transcripts = []
    for audio in (torch.randn(8000) * 0.1, torch.randn(12000) * 0.1):
        features = processor(audio.numpy(), sampling_rate=16_000, return_tensors="pt").input_features
        source = {"src_tokens": features, "src_lengths": torch.tensor([features.shape[1]])}
        with torch.no_grad():
            best = generator.generate([original], {"net_input": source})[0][0]["tokens"].tolist()
        transcripts.append(text.decode([token for token in best if token != 2]))
        assert cast(dict[str, Any], recognizer(audio.numpy()))["text"] == transcripts[-1]
        shorter = cast(dict[str, Any], recognizer(audio.numpy(), generate_kwargs={"max_length": 200}))["text"]
        assert shorter != transcripts[-1] and transcripts[-1].startswith(shorter)
    assert transcripts[0] != transcripts[1] and len(transcripts[0]) > 100  # two texts, to the limit


@pytest.mark.parity
def test_a_changed_tensor_changes_the_logits(tmp_path: Path) -> None:
    """The control: the comparison above can fail."""
    from transformers import Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint

    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data")
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf").unwrap()
    converted = load_pretrained_strictly(Speech2TextForConditionalGeneration, out)
    with torch.no_grad():
        bias = converted.model.encoder.layers[1].fc2.bias
        bias.add_(0.1 * torch.randn_like(bias))  # not a constant: the final layer norm would take that away
    theirs, ours = _logits_both(original, converted)
    assert (ours - theirs).abs().max() > 1e-3


@pytest.mark.parity
def test_a_file_with_the_old_args_namespace_converts_too(tmp_path: Path) -> None:
    """fairseq before 0.10 kept the settings in ``args`` (the one layout transformers' script reads)."""
    from transformers import Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint

    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data")
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    legacy = {"args": saved["cfg"]["model"], "model": saved["model"], "optimizer_history": saved["optimizer_history"]}
    torch.save(legacy, tmp_path / "legacy.pt")
    out = convert(SPEC, tmp_path / "legacy.pt", tmp_path / "hf").unwrap()
    theirs, ours = _logits_both(original, load_pretrained_strictly(Speech2TextForConditionalGeneration, out))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_the_reference_layout_plans_clean_and_reads_every_model_field() -> None:
    layout, meta = _reference()
    prepared = prepare(SPEC, layout, meta).unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    config = prepared.config
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.vocab_size) == (256, 12, 6, 10_004)
    assert (config.input_feat_per_channel, config.conv_kernel_sizes, config.num_conv_layers) == (80, [5, 5], 2)
    assert config.tie_word_embeddings and config.scale_embedding
    assert {s.key for s in prepared.plan.skipped} == {"decoder.output_projection.weight", "decoder.version"}


@pytest.mark.parametrize(
    ("changed", "field"),
    [
        ({"encoder_normalize_before": False}, "encoder_normalize_before"),
        ({"decoder_normalize_before": False}, "decoder_normalize_before"),
        ({"conv_version": "convtransformer"}, "conv_version"),
        ({"decoder_embed_dim": 128}, "decoder_embed_dim"),
        ({"decoder_learned_pos": True}, "decoder_learned_pos"),
        ({"encoder_attention_heads": 3}, "encoder_attention_heads"),
        ({"conv_kernel_sizes": "5,x"}, "conv_kernel_sizes"),
        ({"encoder_layers": 11}, "encoder_layers"),
    ],
)
def test_what_speech2text_cannot_hold_is_refused_naming_the_field(changed: dict[str, Any], field: str) -> None:
    layout, meta = _reference()
    meta["cfg"]["model"].update(changed)
    error = prepare(SPEC, layout, meta).failure()
    assert isinstance(error, BadConfig) and field in {error.key, *(e.key for e in error.others)}, error


def test_an_old_namespace_and_a_missing_config_are_read_and_refused() -> None:
    layout, meta = _reference()
    assert prepare(SPEC, layout, {"args": argparse.Namespace(**meta["cfg"]["model"])}).unwrap().plan.is_clean()
    error = prepare(SPEC, layout, {}).failure()
    assert isinstance(error, BadConfig) and error.key == "cfg.model"
    without = {key: shape for key, shape in layout.items() if not key.startswith("decoder.embed_tokens")}
    error = prepare(SPEC, without, meta).failure()
    assert isinstance(error, BadConfig) and error.key == "decoder.embed_tokens.weight", error


@pytest.mark.parity
def test_with_its_sentencepiece_model_the_directory_is_a_processor(tmp_path: Path) -> None:
    from transformers import AutoProcessor

    from tests.originals import s2t_checkpoint

    model, pieces = fairseq_sentencepiece(tmp_path / "data")
    s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", vocab=len(pieces) + 4, pieces=pieces)
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf", processor_file=model).unwrap()
    loaded = AutoProcessor.from_pretrained(out)
    assert type(loaded).__name__ == "Speech2TextProcessor"
    ids = loaded.tokenizer("speech to text").input_ids
    sp = __import__("sentencepiece").SentencePieceProcessor(model_file=str(model))
    assert ids == [*sp.encode("speech to text"), 2]  # fairseq's indices are the model's; </s> closes
    assert loaded.tokenizer.decode(ids, skip_special_tokens=True) == "speech to text"
    features = loaded(torch.randn(16_000).numpy(), sampling_rate=16_000, return_tensors="pt").input_features
    assert features.shape[-1] == 8


MUSTC = ("pt", "fr", "ru", "nl", "ro", "it", "es", "de")


@pytest.mark.parity
def test_a_multilingual_model_translates_into_the_language_forced_as_fairseq_does(tmp_path: Path) -> None:
    """A multilingual model's dictionary holds MuST-C's target language tags (``<lang:de>``; fairseq's
    ``prepend_tgt_lang_tag``): the tokenizer knows them (``lang_code_to_id``, at fairseq's indices), and
    ``generate(forced_bos_token_id=...)`` gives what fairseq's ``SequenceGenerator`` gives with the tag
    as its prefix, token for token, for two languages (which differ: the tag is what is compared). A
    dictionary whose tags are not where the sentencepiece model has them is refused: transformers forces
    the model's id."""
    from fairseq.data import Dictionary
    from fairseq.sequence_generator import SequenceGenerator
    from transformers import AutoProcessor, Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint

    tags = tuple(f"<lang:{language}>" for language in MUSTC)
    model, pieces = fairseq_sentencepiece(tmp_path / "data", pieces=48, special=tags)
    torch.manual_seed(4)
    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", vocab=len(pieces) + 4, pieces=pieces)
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf", processor_file=model).unwrap()
    converted = load_pretrained_strictly(Speech2TextForConditionalGeneration, out)
    tokenizer = AutoProcessor.from_pretrained(out).tokenizer
    dictionary = Dictionary.load(str(tmp_path / "data" / "spm.txt"))
    assert {code: dictionary.index(f"<lang:{code}>") for code in MUSTC} == tokenizer.lang_code_to_id
    features, lengths = _features()
    mask = (torch.arange(64)[None, :] < lengths[:, None]).long()
    generator = SequenceGenerator([original], dictionary, beam_size=1, max_len_a=0, max_len_b=8)
    source = {"net_input": {"src_tokens": features, "src_lengths": lengths}}
    outputs = []
    for code in ("de", "fr"):
        tag = tokenizer.lang_code_to_id[code]
        prefix = torch.full((2, 1), tag)
        with torch.no_grad():
            found = generator.generate([original], source, prefix_tokens=prefix)
        theirs = [hypotheses[0]["tokens"].tolist() for hypotheses in found]
        ours = converted.generate(features, attention_mask=mask, max_new_tokens=8, num_beams=1, forced_bos_token_id=tag)
        assert [row[1:] for row in ours.tolist()] == [tokens[:8] for tokens in theirs]
        outputs.append(theirs)
    assert outputs[0] != outputs[1] and all(row[0] == tokenizer.lang_code_to_id["de"] for row in outputs[0])
    listed = (tmp_path / "data" / "spm.txt").read_text().splitlines()
    first, second = listed.index("<lang:pt> 1"), listed.index("<lang:fr> 1")
    listed[first], listed[second] = listed[second], listed[first]  # the dictionary's order, not the model's
    (tmp_path / "data" / "spm.txt").write_text("\n".join(listed) + "\n")
    error = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "other", processor_file=model).failure()
    assert isinstance(error, BadConfig) and error.key == "--tokenizer", error
    assert "<lang:pt> at the dictionary's index" in error.message
    assert not (tmp_path / "other").exists()


CMVN_ONLY = "transforms:\n  '*':\n  - utterance_cmvn\n"


@pytest.mark.parity
@pytest.mark.parametrize(
    "normalisation",
    [
        CMVN_ONLY + "utterance_cmvn:\n  norm_vars: false\n",
        "transforms:\n  _train: [utterance_cmvn, specaugment]\n  _eval: []\n",
        "feature_transforms:\n  '*': [utterance_cmvn]\n",
        "transforms:\n  '*': [utterance_cmvn]\nutterance_cmvn: {norm_means: false}\n",
    ],
    ids=["means-only", "none-at-inference", "feature-transforms", "variances-only"],
)
def test_the_data_config_beside_the_tokenizer_normalises_as_fairseq_does(tmp_path: Path, normalisation: str) -> None:
    """The task's ``config.yaml`` beside the sentencepiece model says how fairseq normalises the filter
    banks at inference: the converted feature extractor's features are fairseq's own transforms (its
    data config reader, its ``utterance_cmvn``) of the same filter banks; the way back writes a
    ``config.yaml`` fairseq reads as the same transforms."""
    import numpy as np
    from fairseq.data.audio.data_cfg import S2TDataConfig
    from fairseq.data.audio.feature_transforms import CompositeAudioFeatureTransform
    from transformers import AutoFeatureExtractor, Speech2TextFeatureExtractor

    from tests.originals import s2t_checkpoint
    from wmap import export

    model, pieces = fairseq_sentencepiece(tmp_path / "data")
    s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", vocab=len(pieces) + 4, pieces=pieces)
    data = tmp_path / "data" / "config.yaml"
    data.write_text(f"vocab_filename: spm.txt\ninput_feat_per_channel: 8\n{normalisation}")
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf", processor_file=model).unwrap()
    torch.manual_seed(0)
    audio = (torch.randn(16_000) * 0.1).numpy()
    banks = Speech2TextFeatureExtractor(feature_size=8, num_mel_bins=8, do_ceptral_normalize=False)
    raw = banks(audio, sampling_rate=16_000).input_features[0]

    def fairseqs(config: Path) -> Any:
        transforms = S2TDataConfig(config).get_feature_transforms("test", False)
        composite = CompositeAudioFeatureTransform.from_config_dict(transforms)  # None: no transform
        return raw.astype(np.float64) if composite is None else composite(raw.astype(np.float64))

    ours = AutoFeatureExtractor.from_pretrained(out)(audio, sampling_rate=16_000).input_features[0]
    assert np.abs(ours - fairseqs(data)).max() < 1e-4
    assert np.abs(raw).mean() > 1.0  # the banks are far from normalised: each setting shows
    (tmp_path / "back").mkdir()
    back = export(SPEC, out, tmp_path / "back" / "checkpoint.pt").unwrap()
    assert np.abs(fairseqs(back.parent / "config.yaml") - fairseqs(data)).max() == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("transforms:\n  '*': [global_cmvn]\nglobal_cmvn: {stats_npz_path: stats.npz}\n", "transforms"),
        ("feature_transforms:\n  _eval: [utterance_cmvn, delta_deltas]\n", "feature_transforms"),
        ("input_feat_per_channel: 40\n", "input_feat_per_channel"),
        ("use_audio_input: true\n", "use_audio_input"),
        ("", "config.yaml"),
        ("- utterance_cmvn\n", "config.yaml"),
    ],
)
def test_a_data_config_the_feature_extractor_cannot_follow_is_refused_naming_it(
    tmp_path: Path, data: str, field: str
) -> None:
    """Global CMVN, another transform, filter banks of another size than the model's, the waveform as
    input, an empty file or a list: refused before anything is written, naming the data config's field."""
    from tests.helpers import reference_checkpoint

    model, _ = fairseq_sentencepiece(tmp_path / "data", pieces=40)
    checkpoint = reference_checkpoint(tmp_path / "checkpoint.pt", "speech_to_text")
    (tmp_path / "data" / "config.yaml").write_text(
        "input_feat_per_channel: 80\n" * ("input_feat" not in data and ":" in data) + data
    )
    refused = convert(SPEC, checkpoint, tmp_path / "hf", processor_file=model)
    error = refused.failure()
    assert isinstance(error, BadConfig) and error.key == field and "config.yaml" in error.message, error
    assert not (tmp_path / "hf").exists()


def test_a_tokenizer_that_does_not_fit_is_refused_before_writing(tmp_path: Path) -> None:
    from tests.helpers import reference_checkpoint

    checkpoint = reference_checkpoint(tmp_path / "checkpoint.pt", "speech_to_text")
    model, _ = fairseq_sentencepiece(tmp_path / "data")
    error = convert(SPEC, checkpoint, tmp_path / "hf", processor_file=model).failure()
    assert isinstance(error, BadConfig) and error.key == "symbols" and "10004" in error.message, error
    error = convert(SPEC, checkpoint, tmp_path / "hf", processor_file=tmp_path / "no.model").failure()
    assert "no.model" in error.message and "no such file" in error.message, error
    (tmp_path / "data" / "spm.txt").unlink()
    error = convert(SPEC, checkpoint, tmp_path / "hf", processor_file=model).failure()
    assert "spm.txt" in error.message and "--tokenizer" in error.message, error
    assert not (tmp_path / "hf").exists()


def _fairseq_loads(path: Path) -> Any:
    """fairseq's own loader on an exported file: the task from the data beside it, the model strictly;
    and the task's text encoder (the sentencepiece model the data names) round-trips a sentence."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], strict=True)
    assert len(task.target_dictionary) == models[0].decoder.embed_tokens.num_embeddings
    text = task.build_bpe(None)
    assert text.decode(text.encode("speech to text")) == "speech to text"
    return models[0].eval()


@pytest.mark.parity
def test_the_way_back_gives_fairseq_its_own_file_again(tmp_path: Path) -> None:
    """original -> convert -> export: fairseq's loader reads the file with the dict.txt and config.yaml
    written beside it, every tensor as it was, the same logits."""
    from transformers import Speech2TextForConditionalGeneration

    from tests.originals import s2t_checkpoint
    from tests.test_cli import wmap
    from wmap import export

    model, pieces = fairseq_sentencepiece(tmp_path / "data")
    original = s2t_checkpoint(tmp_path / "checkpoint.pt", tmp_path / "data", vocab=len(pieces) + 4, pieces=pieces)
    out = convert(SPEC, tmp_path / "checkpoint.pt", tmp_path / "hf", processor_file=model).unwrap()
    shown = wmap("preview", "--reverse", "speech_to_text", str(out))
    assert shown.returncode == 0 and "also written beside the file: dict.txt, config.yaml, spm.model" in shown.stdout
    (tmp_path / "back").mkdir()
    back = export(SPEC, out, tmp_path / "back" / "checkpoint.pt").unwrap()
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        "checkpoint.pt",
        "config.yaml",
        "dict.txt",
        "spm.model",
    ]
    assert (tmp_path / "back" / "dict.txt").read_text() == (tmp_path / "data" / "spm.txt").read_text()
    assert (tmp_path / "back" / "spm.model").read_bytes() == model.read_bytes()
    loaded = _fairseq_loads(back)
    mine, theirs = original.state_dict(), loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    converted = load_pretrained_strictly(Speech2TextForConditionalGeneration, out)
    first, _ = _logits_both(original, converted)
    again, _ = _logits_both(loaded, converted)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


@pytest.mark.parity
@pytest.mark.parametrize(
    "saved", [{}, {"max_shard_size": "20KB"}, {"dtype": torch.float16}], ids=["default", "sharded", "fp16"]
)
def test_a_transformers_model_goes_back_to_a_file_fairseq_runs(tmp_path: Path, saved: dict[str, Any]) -> None:
    """A user's fine-tune as ``save_pretrained`` writes it (untied, GELU, unscaled) exports to a file
    fairseq's loader reads, with the transformers model's logits."""
    from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

    from wmap import export

    model_file, pieces = fairseq_sentencepiece(tmp_path / "spm")
    settings: dict[str, Any] = {"d_model": 16, "encoder_layers": 2, "decoder_layers": 2}
    settings |= {"encoder_ffn_dim": 32, "decoder_ffn_dim": 32}
    settings |= {
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "conv_channels": 24,
        "conv_kernel_sizes": [5, 3],
    }
    settings |= {
        "input_feat_per_channel": 8,
        "activation_function": "gelu",
        "scale_embedding": False,
        "tie_word_embeddings": False,
    }
    config = Speech2TextConfig(**settings, vocab_size=len(pieces) + 4, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    hf = Speech2TextForConditionalGeneration(config).eval()
    with torch.no_grad():  # trained-looking values: no zero biases, no unit norms, logits far from zero
        for parameter in hf.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    dtype = saved.pop("dtype", None)
    if dtype is not None:
        hf = hf.to(dtype)
    hf.save_pretrained(tmp_path / "hf", **saved)
    from wmap.models.speech_to_text_processor import processor

    processor(config, {}, model_file).unwrap()(tmp_path / "hf")
    (tmp_path / "back").mkdir()
    back = export(SPEC, tmp_path / "hf", tmp_path / "back" / "checkpoint.pt").unwrap()
    loaded = _fairseq_loads(back).float()
    # as saved (float16 upcast), positions made in float32 again as fairseq makes them
    reloaded = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    theirs, ours = _logits_both(loaded, reloaded)
    assert theirs.std() > 0.3  # not a vacuous comparison
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_a_directory_without_its_tokenizer_has_no_dictionary_to_go_back_with(tmp_path: Path) -> None:
    from tests.helpers import reference_checkpoint
    from wmap import export

    checkpoint = reference_checkpoint(tmp_path / "checkpoint.pt", "speech_to_text")
    bare = convert(SPEC, checkpoint, tmp_path / "bare", processor=False).unwrap()
    assert sorted(p.name for p in bare.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    out = convert(SPEC, checkpoint, tmp_path / "hf").unwrap()
    error = export(SPEC, out, tmp_path / "back.pt").failure()
    assert "vocab.json" in error.message, error
    assert not (tmp_path / "back.pt").exists() and not (tmp_path / "dict.txt").exists()
