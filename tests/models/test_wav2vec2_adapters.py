"""wav2vec2 with adapter layers (fairseq ``layer_type: trf_adp``, the MMS recipe) <-> ``Wav2Vec2ForCTC``
with ``adapter_attn_dim``: a fine-tune fairseq's trainer wrote (one multi-corpus step, so the adapters
ran), converted, in parity with fairseq run on its corpus; back, loaded by fairseq strictly; and the
variants transformers cannot hold refused, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch

from wmap.conversion import convert, preview
from wmap.errors import BadConfig

pytestmark = pytest.mark.parity

ADAPTERS: dict[str, Any] = {
    "extractor_mode": "layer_norm",
    "layer_norm_first": True,
    "conv_bias": True,
    "layer_type": "trf_adp",
    "adp_num": 1,
    "adp_dim": 8,
    "adp_trf_idx": "all",
}
"""A pre-LN (large / MMS-style) encoder with one corpus's adapters on every layer."""


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.originals import ctc_trainer_checkpoint

    torch.manual_seed(0)
    data = tmp_path_factory.mktemp("fairseq")
    ctc_trainer_checkpoint(data / "checkpoint_best.pt", data, family="wav2vec2", **ADAPTERS)
    return data / "checkpoint_best.pt"


def _fairseq(path: Path) -> Any:
    from fairseq import checkpoint_utils
    from fairseq.data.dictionary import Dictionary

    with torch.serialization.safe_globals([Dictionary]):  # the reference trusts the file it just wrote
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(path)], strict=True)
    return models[0].eval()


def _fairseq_logits(model: Any, audio: torch.Tensor) -> torch.Tensor:
    """fairseq's CTC logits for the first corpus (its adapters need the corpus key)."""
    with torch.no_grad():
        out = model(source=audio, padding_mask=None, corpus_key=[0] * len(audio))
        logits: torch.Tensor = model.get_logits(out).transpose(0, 1)
    return logits


def _audio() -> torch.Tensor:
    return torch.randn(2, 4000, generator=torch.Generator().manual_seed(3))


def test_an_adapter_fine_tune_converts_with_the_logits_fairseq_gives(adapted: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCTC, AutoProcessor

    prepared = preview("wav2vec2_ctc", adapted).unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    assert prepared.config.adapter_attn_dim == 8
    assert sum("adapter_layer" in a.target for a in prepared.plan.applied) == 12  # 6 parameters, 2 layers
    out = convert("wav2vec2_ctc", adapted, tmp_path / "hf").unwrap()
    AutoProcessor.from_pretrained(out)
    model = AutoModelForCTC.from_pretrained(out).eval()
    audio = _audio()
    expected = _fairseq_logits(_fairseq(adapted), audio)
    with torch.no_grad():
        ours = model(audio).logits
        for layer in model.wav2vec2.encoder.layers:  # negative control: the adapters change the logits
            layer.adapter_layer = None
        without = model(audio).logits
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert (without - expected).abs().max() > 1e-2


def test_an_adapter_fine_tune_transcribes_through_pipeline_as_fairseq_decodes(adapted: Path, tmp_path: Path) -> None:
    """As users run it: ``pipeline("automatic-speech-recognition", model=out)`` on raw audio gives the
    text of fairseq's greedy decoding (for the corpus), the blank and repeats collapsed."""
    from transformers import AutoProcessor, pipeline

    out = convert("wav2vec2_ctc", adapted, tmp_path / "hf").unwrap()
    recognizer = pipeline("automatic-speech-recognition", model=str(out))
    processor = AutoProcessor.from_pretrained(out)
    texts = []
    for wav in _audio():
        normalised = (wav - wav.mean()) / (wav.var(correction=0) + 1e-7).sqrt()  # the task normalises
        ids = _fairseq_logits(_fairseq(adapted), normalised[None])[0].argmax(-1)
        texts.append(processor.decode(ids))
        assert cast(dict[str, Any], recognizer(wav.numpy()))["text"] == texts[-1]  # one input, one answer
    assert all(len(text) > 3 for text in texts) and texts[0] != texts[1], texts  # not vacuous


def test_the_adapters_are_also_written_as_the_corpus_adapter_file_transformers_loads(
    adapted: Path, tmp_path: Path
) -> None:
    """The task's corpus (``multi_corpus_keys``) names ``adapter.fra.safetensors``: the adapter layers and
    the CTC head, which ``from_pretrained(..., target_lang="fra")`` and ``load_adapter("fra")`` read, as
    on MMS's directories. The control: adapters zeroed give other logits until the file is loaded."""
    from safetensors.torch import load_file
    from transformers import Wav2Vec2ForCTC

    out = convert("wav2vec2_ctc", adapted, tmp_path / "hf").unwrap()
    held = load_file(out / "adapter.fra.safetensors")
    assert len(held) == 14 and all(".adapter_layer." in k or k.startswith("lm_head.") for k in held)
    audio = _audio()
    expected = _fairseq_logits(_fairseq(adapted), audio)
    model = Wav2Vec2ForCTC.from_pretrained(out, target_lang="fra").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(audio).logits, expected, rtol=0, atol=1e-5)
        for name, parameter in model.named_parameters():
            if ".adapter_layer." in name:
                parameter.zero_()
        assert (model(audio).logits - expected).abs().max() > 1e-2
        model.load_adapter("fra")
        torch.testing.assert_close(model(audio).logits, expected, rtol=0, atol=1e-5)
    with pytest.raises(OSError):
        model.load_adapter("eng")


def test_the_way_back_loads_in_fairseq_strictly_with_every_tensor_and_the_same_logits(
    adapted: Path, tmp_path: Path
) -> None:
    from wmap.way_back import export

    hf = convert("wav2vec2_ctc", adapted, tmp_path / "hf").unwrap()
    (tmp_path / "back").mkdir()
    out = export("wav2vec2_ctc", hf, tmp_path / "back" / "checkpoint.pt").unwrap()
    saved = torch.load(adapted, weights_only=False)  # the test trusts the files it wrote
    exported = torch.load(out, weights_only=False)
    assert exported["model"].keys() == saved["model"].keys()
    assert all(torch.equal(exported["model"][k], v) for k, v in saved["model"].items())
    task = exported["cfg"]["task"]  # the corpus the adapter file names, as the forward direction read it
    assert (task["multi_corpus_keys"], task["multi_corpus_sampling_weights"]) == ("fra", "1.0")
    again = convert("wav2vec2_ctc", out, tmp_path / "again").unwrap()
    assert (again / "adapter.fra.safetensors").read_bytes() == (hf / "adapter.fra.safetensors").read_bytes()
    for cfg in (exported["cfg"]["model"], exported["cfg"]["model"]["w2v_args"]["model"]):
        assert {k: cfg[k] for k in ("layer_type", "adp_num", "adp_dim", "adp_act_fn")} == {
            "layer_type": "trf_adp",
            "adp_num": 1,
            "adp_dim": 8,
            "adp_act_fn": "relu",
        }
    audio = _audio()
    torch.testing.assert_close(
        _fairseq_logits(_fairseq(out), audio), _fairseq_logits(_fairseq(adapted), audio), rtol=0, atol=0
    )


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("adp_num", 2, "adp_num"),
        ("adp_act_fn", "gelu", "adp_act_fn"),
        ("adp_trf_idx", "some", "adp_trf_idx"),
        ("adp_trf_idx", "0:2:0", "adp_trf_idx"),  # fairseq's range() of step 0 raises: no internal error here
        ("layer_norm_first", False, "layer_type"),
    ],
)
def test_adapters_transformers_cannot_hold_are_refused_naming_the_field(
    adapted: Path, tmp_path: Path, field: str, value: object, named: str
) -> None:
    """Several corpora's adapters (transformers holds one per layer), another activation, layers named
    otherwise than fairseq reads them, adapters in a post-LN encoder (``layer_type``, the reason naming
    the norm)."""
    saved = torch.load(adapted, weights_only=False)
    encoder = {**saved["cfg"]["model"]["w2v_args"]["model"], field: value}
    model = {**saved["cfg"]["model"], "w2v_args": {**saved["cfg"]["model"]["w2v_args"], "model": encoder}}
    torch.save({**saved, "cfg": {**saved["cfg"], "model": model}}, tmp_path / "odd.pt")
    error = preview("wav2vec2_ctc", tmp_path / "odd.pt").failure()
    assert isinstance(error, BadConfig), error
    assert [named] == [error.key, *(other.key for other in error.others)], error
    assert field in error.expected or field == named, error


def test_a_file_lacking_adapters_its_config_names_is_refused_not_given_zeros(adapted: Path, tmp_path: Path) -> None:
    """``adp_trf_idx: all`` with layer 0's adapter missing from the file: fairseq could not load it, so
    the config is refused against the file, naming the field; a layer the range leaves out is made."""
    saved = torch.load(adapted, weights_only=False)
    kept = {k: v for k, v in saved["model"].items() if "layers.0.adapter_layer" not in k}
    torch.save({**saved, "model": kept}, tmp_path / "lacking.pt")
    error = preview("wav2vec2_ctc", tmp_path / "lacking.pt").failure()
    assert isinstance(error, BadConfig) and error.key == "adp_trf_idx" and "[1]" in error.message, error
    encoder = {**saved["cfg"]["model"]["w2v_args"]["model"], "adp_trf_idx": "1:2"}
    model = {**saved["cfg"]["model"], "w2v_args": {**saved["cfg"]["model"]["w2v_args"], "model": encoder}}
    torch.save({**saved, "model": kept, "cfg": {**saved["cfg"], "model": model}}, tmp_path / "ranged.pt")
    assert preview("wav2vec2_ctc", tmp_path / "ranged.pt").unwrap().plan.is_clean()


def test_a_range_over_every_layer_is_every_layer(adapted: Path, tmp_path: Path) -> None:
    """fairseq's ``adp_trf_idx`` is ``range(start, stop)``: one that holds every layer converts."""
    saved = torch.load(adapted, weights_only=False)
    encoder = {**saved["cfg"]["model"]["w2v_args"]["model"], "adp_trf_idx": "0:2"}
    model = {**saved["cfg"]["model"], "w2v_args": {**saved["cfg"]["model"]["w2v_args"], "model": encoder}}
    torch.save({**saved, "cfg": {**saved["cfg"], "model": model}}, tmp_path / "range.pt")
    assert preview("wav2vec2_ctc", tmp_path / "range.pt").unwrap().plan.is_clean()


@pytest.mark.parametrize(
    ("shard", "pre_ln"), [(None, True), ("20KB", True), (None, False)], ids=["default", "sharded", "post-LN"]
)
def test_an_adapter_model_saved_by_transformers_goes_back_to_fairseq_with_its_logits(
    tmp_path: Path, shard: str | None, pre_ln: bool
) -> None:
    """A ``Wav2Vec2ForCTC`` with ``adapter_attn_dim`` as ``save_pretrained`` writes it (default and
    sharded; the MMS adapter recipe's kind): the export builds fairseq's adapter layers, loads strictly
    and gives its logits. A post-LN model holds no adapters whatever ``adapter_attn_dim`` says: it goes
    back with plain transformer layers."""
    from tests.helpers import hub_directory
    from wmap.way_back import export

    model = hub_directory(
        "wav2vec2_ctc", tmp_path / "hf", max_shard_size=shard, adapter_attn_dim=8, do_stable_layer_norm=pre_ln
    )
    assert any("adapter_layer" in name for name, _ in model.named_parameters()) == pre_ln
    (tmp_path / "back").mkdir()
    out = export("wav2vec2_ctc", tmp_path / "hf", tmp_path / "back" / "checkpoint.pt").unwrap()
    cfg = torch.load(out, weights_only=False)["cfg"]
    assert cfg["model"]["layer_type"] == ("trf_adp" if pre_ln else "transformer")
    assert "multi_corpus_keys" not in cfg["task"]  # no adapter file: no corpus named
    audio = _audio()
    with torch.no_grad():
        expected = model(audio).logits
    assert expected.std() > 0.01  # not vacuous
    torch.testing.assert_close(_fairseq_logits(_fairseq(out), audio), expected, rtol=0, atol=1e-5)


def test_a_layer_fairseq_left_without_an_adapter_gets_one_of_zeros_and_goes_back_with_it(tmp_path: Path) -> None:
    """``adp_trf_idx: 1:2`` builds layer 0 without an adapter; transformers gives every layer one. The
    plan makes layer 0's of zeros (named, with the reason), which adds nothing: fairseq's logits within
    1e-5. The way back gives every layer an adapter (``all``), layer 0's zeros: fairseq loads it
    strictly and gives the original's logits."""
    from tests.originals import ctc_trainer_checkpoint
    from wmap.way_back import export

    torch.manual_seed(0)
    ctc_trainer_checkpoint(tmp_path / "ranged.pt", tmp_path, family="wav2vec2", **{**ADAPTERS, "adp_trf_idx": "1:2"})
    saved = torch.load(tmp_path / "ranged.pt", weights_only=False)
    assert not any("layers.0.adapter_layer" in k for k in saved["model"])  # as fairseq built it
    plan = preview("wav2vec2_ctc", tmp_path / "ranged.pt").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert sorted(m.target.split("adapter_layer.")[1] for m in plan.made if "layers.0.adapter_layer" in m.target) == [
        "linear_1.bias",
        "linear_1.weight",
        "linear_2.bias",
        "linear_2.weight",
        "norm.bias",
        "norm.weight",
    ]
    assert not any("layers.1.adapter_layer" in m.target for m in plan.made)
    out = convert("wav2vec2_ctc", tmp_path / "ranged.pt", tmp_path / "hf").unwrap()
    from transformers import Wav2Vec2ForCTC

    model = Wav2Vec2ForCTC.from_pretrained(out).eval()
    audio = _audio()
    expected = _fairseq_logits(_fairseq(tmp_path / "ranged.pt"), audio)
    with torch.no_grad():
        torch.testing.assert_close(model(audio).logits, expected, rtol=0, atol=1e-5)
    (tmp_path / "back").mkdir()
    back = export("wav2vec2_ctc", out, tmp_path / "back" / "checkpoint.pt").unwrap()
    exported = torch.load(back, weights_only=False)
    assert exported["cfg"]["model"]["adp_trf_idx"] == "all"
    assert not exported["model"]["w2v_encoder.w2v_model.encoder.layers.0.adapter_layer.W_b"].any()
    assert all(torch.equal(exported["model"][k], v) for k, v in saved["model"].items())
    torch.testing.assert_close(_fairseq_logits(_fairseq(back), audio), expected, rtol=0, atol=1e-5)


def test_a_pre_trained_encoder_with_adapters_converts_with_fairseq_s_features(tmp_path: Path) -> None:
    """The same table and rules for ``Wav2Vec2ForPreTraining``: the encoder's output for the corpus as
    fairseq computes it, within 1e-5, and back, loaded strictly with every tensor."""
    from transformers import Wav2Vec2ForPreTraining

    from tests.helpers import load_pretrained_strictly
    from tests.originals import wav2vec2_pretraining_checkpoint
    from wmap.way_back import export

    adapters = {k: v for k, v in ADAPTERS.items() if k != "conv_bias"}
    original = wav2vec2_pretraining_checkpoint(tmp_path / "w2v.pt", tmp_path, **adapters)
    out = convert("wav2vec2", tmp_path / "w2v.pt", tmp_path / "hf").unwrap()
    ported = load_pretrained_strictly(Wav2Vec2ForPreTraining, out)
    assert ported.config.adapter_attn_dim == 8
    audio = _audio()
    with torch.no_grad():
        theirs = original.extract_features(audio, padding_mask=None, mask=False, corpus_key=[0, 0])["x"]
        ours = ported.wav2vec2(audio).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    (tmp_path / "back").mkdir()
    back = export("wav2vec2", out, tmp_path / "back" / "checkpoint.pt").unwrap()
    saved = torch.load(tmp_path / "w2v.pt", weights_only=False)["model"]
    exported = torch.load(back, weights_only=True)["model"]
    assert exported.keys() == saved.keys() and all(torch.equal(exported[k], v) for k, v in saved.items())
