"""WavLM (unilm's ``WavLM.py``, s3prl's copy) <-> ``WavLMModel``, and UniSpeech-SAT (s3prl's WavLM
without the bias) <-> ``UniSpeechSatModel``: parity in both encoder styles, the feature extractor as
users load it, the refusals, and the way back into s3prl's own loaders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoFeatureExtractor, UniSpeechSatModel, WavLMModel

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.errors import BadConfig

ATOL = 1e-5

BASE_STYLE: dict[str, Any] = {"extractor_mode": "default", "layer_norm_first": False, "conv_bias": False}
LARGE_STYLE: dict[str, Any] = {"extractor_mode": "layer_norm", "layer_norm_first": True, "conv_bias": True}


NO_BIAS: dict[str, Any] = {"relative_position_embedding": False, "gru_rel_pos": False}
"""What makes s3prl's WavLM UniSpeech-SAT."""

FAMILIES = {"wavlm": ({}, WavLMModel), "unispeech_sat": (NO_BIAS, UniSpeechSatModel)}


def small_cfg(**changes: Any) -> dict[str, Any]:
    """A tiny WavLM with the relative position bias and its gate (as every released WavLM has them);
    the conv width differs from the encoder's, so the file has ``post_extract_proj``."""
    return {
        "encoder_layers": 2,
        "encoder_embed_dim": 32,
        "encoder_ffn_embed_dim": 64,
        "encoder_attention_heads": 4,
        "conv_feature_layers": "[(48, 10, 5)] + [(48, 3, 2)]",
        "conv_pos": 8,
        "conv_pos_groups": 4,
        "relative_position_embedding": True,
        "num_buckets": 16,
        "max_distance": 64,
        "gru_rel_pos": True,
        **changes,
    }


def saved(tmp_path: Path, **changes: Any) -> tuple[Any, Path]:
    from tests.originals import save_wavlm_checkpoint, wavlm_original

    model, cfg = wavlm_original(small_cfg(**changes))
    return model, save_wavlm_checkpoint(tmp_path / "wavlm.pt", cfg, model)


def features(model: Any, x: torch.Tensor) -> torch.Tensor:
    """unilm's output: the last layer (after the final norm when pre-LN), as its README extracts it."""
    with torch.no_grad():
        out: torch.Tensor = model.extract_features(x)[0]
    return out


@pytest.mark.parity
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("style", [BASE_STYLE, LARGE_STYLE], ids=["base", "large"])
def test_parity_with_unilm_wavlm(family: str, style: dict[str, Any], tmp_path: Path) -> None:
    kind, model_class = FAMILIES[family]
    original, checkpoint = saved(tmp_path, **style, **kind, normalize=style is LARGE_STYLE)
    plan = preview(family, checkpoint).unwrap().plan
    assert plan.is_clean() and not plan.skipped, plan.problems(limit=5)
    out = convert(family, checkpoint, tmp_path / "hf").unwrap()
    ported = load_pretrained_strictly(model_class, out)
    assert ported.config.do_stable_layer_norm is style["layer_norm_first"]

    x = torch.randn(2, 4000)
    theirs = features(original, x)
    with torch.no_grad():
        ours = ported(x).last_hidden_state
        torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)
    if family == "unispeech_sat":
        return
    assert (ported.config.num_buckets, ported.config.max_bucket_distance) == (16, 64)
    with torch.no_grad():
        # negative controls: without the bias table, or with another gate, the outputs move past the tolerance
        for tensor in (
            ported.encoder.layers[1].attention.gru_rel_pos_const,
            ported.encoder.layers[0].attention.rel_attn_embed.weight,
        ):
            kept = tensor.clone()
            tensor.zero_()
            assert (ported(x).last_hidden_state - theirs).abs().max() > 10 * ATOL
            tensor.copy_(kept)


@pytest.mark.parity
def test_the_feature_extractor_feeds_the_model_as_unilm_feeds_it(tmp_path: Path) -> None:
    """``AutoFeatureExtractor`` on the directory: WavLM Large's normalisation (``cfg.normalize``) and an
    attention mask for its layer-norm extractor; its output fed to the model gives unilm's features on
    the input unilm's README normalises (``F.layer_norm`` over the wave)."""
    original, checkpoint = saved(tmp_path, **LARGE_STYLE, normalize=True)
    out = convert("wavlm", checkpoint, tmp_path / "hf").unwrap()
    extractor = AutoFeatureExtractor.from_pretrained(out)
    assert extractor.sampling_rate == 16_000 and extractor.do_normalize and extractor.return_attention_mask
    wave = torch.randn(4000) * 3 + 1
    inputs = extractor(wave.numpy(), sampling_rate=16_000, return_tensors="pt")
    normalised = torch.nn.functional.layer_norm(wave, wave.shape)[None]
    with torch.no_grad():
        ours = load_pretrained_strictly(WavLMModel, out)(**inputs).last_hidden_state
    torch.testing.assert_close(ours, features(original, normalised), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("gru_rel_pos", False, "gated"),
        ("relative_position_embedding", False, "relative position"),
        ("activation_fn", "glu", "one of"),
        ("max_distance", 0, "an integer from 1"),
    ],
)
def test_what_wavlm_model_cannot_hold_is_refused_by_name(field: str, value: Any, expected: str) -> None:
    _refused("wavlm", field, value, expected)


@pytest.mark.parametrize("field", ["relative_position_embedding", "gru_rel_pos"])
def test_a_bias_unispeech_sat_cannot_hold_is_refused_naming_wavlm(field: str) -> None:
    _refused("unispeech_sat", field, True, "converts as wavlm")


def _refused(family: str, field: str, value: Any, expected: str) -> None:
    from wmap.conversion import prepare
    from wmap.registry import get_model

    spec = get_model(family).unwrap()
    layout, meta = spec.reference_layout().unwrap()
    error = prepare(spec, layout, {**meta, "cfg": {**meta["cfg"], field: value}}).failure()
    assert isinstance(error, BadConfig) and error.key == field and expected in error.message, error


def test_a_file_without_its_cfg_is_refused_naming_where_it_was_looked_for(tmp_path: Path) -> None:
    from tests.helpers import reference_state

    state, _ = reference_state("wavlm")
    torch.save({"model": state}, tmp_path / "bare.pt")
    error = preview("wavlm", tmp_path / "bare.pt").failure()
    assert "WavLM cfg" in error.message and "absent" in error.message


def _expert(family: str, path: Path) -> Any:
    """s3prl's own loader for the family's files (``wavlm_local``, ``unispeech_sat_local``)."""
    from s3prl.upstream.unispeech_sat.expert import UpstreamExpert as UniSpeechSatExpert
    from s3prl.upstream.wavlm.expert import UpstreamExpert as WavLMExpert

    return (WavLMExpert if family == "wavlm" else UniSpeechSatExpert)(str(path)).eval()


@pytest.mark.parity
@pytest.mark.parametrize("family", FAMILIES)
def test_the_way_back_gives_the_original_file_and_s3prl_loads_it(family: str, tmp_path: Path) -> None:
    """original -> convert -> export: every tensor is the original's, the ``cfg`` builds the same model,
    and s3prl's own expert loads the file (strictly) with unilm's features."""
    from wmap.way_back import export

    original, checkpoint = saved(tmp_path, **LARGE_STYLE, **FAMILIES[family][0], normalize=True)
    hf = convert(family, checkpoint, tmp_path / "hf").unwrap()
    back = export(family, hf, tmp_path / "back.pt").unwrap()
    written, source = torch.load(back, weights_only=True), torch.load(checkpoint, weights_only=True)
    assert written["model"].keys() == source["model"].keys()
    assert all(torch.equal(v, source["model"][k]) for k, v in written["model"].items())
    cfg = written["cfg"]
    assert {k: cfg[k] for k in cfg if k != "conv_feature_layers"} == {
        k: source["cfg"][k] for k in cfg if k != "conv_feature_layers"
    }
    assert eval(cfg["conv_feature_layers"]) == eval(source["cfg"]["conv_feature_layers"])

    wave = torch.randn(4000)
    with torch.no_grad():
        theirs = _expert(family, back)([wave])["hidden_states"][-1]
    torch.testing.assert_close(theirs, features(original, torch.nn.functional.layer_norm(wave, wave.shape)[None]))


SAVINGS = [("wavlm", {}), ("wavlm", {"max_shard_size": "20KB"}), ("wavlm", {"dtype": torch.float16})]


@pytest.mark.parity
@pytest.mark.parametrize(("family", "saving"), [*SAVINGS, ("unispeech_sat", {})], ids=str)
def test_a_transformers_model_goes_back_to_a_file_s3prl_runs(
    family: str, saving: dict[str, Any], tmp_path: Path
) -> None:
    """A fine-tune as transformers saves it (default, sharded, half precision), without masking (no
    ``masked_spec_embed``: the way back makes unilm's ``mask_emb`` as zeros) -> a file s3prl's expert
    loads strictly and runs with the model's own hidden states."""
    from tests.helpers import hub_directory
    from wmap.way_back import export

    model = hub_directory(family, tmp_path / "hf", mask_time_prob=0.0, **saving)
    back = export(family, tmp_path / "hf", tmp_path / "back.pt").unwrap()
    cfg = torch.load(back, weights_only=True)["cfg"]
    assert cfg["normalize"] is True and cfg["gru_rel_pos"] is (family == "wavlm")
    wave = torch.randn(4000)
    with torch.no_grad():
        theirs = _expert(family, back)([wave])["hidden_states"][-1]
        ours = model.float()(torch.nn.functional.layer_norm(wave, wave.shape)[None]).last_hidden_state
    torch.testing.assert_close(theirs, ours, rtol=0, atol=ATOL)


def test_a_sampling_rate_the_cfg_cannot_hold_is_refused(tmp_path: Path) -> None:
    from tests.helpers import hub_directory
    from wmap.way_back import export

    hub_directory("wavlm", tmp_path / "hf")
    settings = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({**settings, "sampling_rate": 8000}))
    error = export("wavlm", tmp_path / "hf", tmp_path / "back.pt").failure()
    assert "sampling_rate" in error.message and "16000" in error.message and not (tmp_path / "back.pt").exists()


@pytest.mark.parametrize(("family", "skipped"), [("wavlm", ["mask_emb"]), ("unispeech_sat", [])])
def test_a_file_that_never_masked_converts_to_what_its_target_holds(family: str, skipped: list[str]) -> None:
    """``mask_prob: 0``: WavLMModel then holds no mask embedding (``mask_emb`` is skipped, with the
    reason); UniSpeechSatModel holds one whatever its config says (``mask_emb`` goes to it)."""
    from wmap.conversion import prepare
    from wmap.registry import get_model

    spec = get_model(family).unwrap()
    layout, meta = spec.reference_layout().unwrap()
    plan = prepare(spec, layout, {**meta, "cfg": {**meta["cfg"], "mask_prob": 0.0}}).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=3)
    assert [s.key for s in plan.skipped] == skipped
