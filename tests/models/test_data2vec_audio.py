"""data2vec-audio from fairseq: parity (headless and CTC), refusals of what the target cannot represent."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import Data2VecAudioForCTC, Data2VecAudioModel

from tests.helpers import load_pretrained_strictly
from wmap.config_fields import conv_layers
from wmap.conversion import convert, preview
from wmap.errors import BadConfig

ATOL = 1e-5
pytestmark = pytest.mark.parity


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of two: the second example is shorter, zero-padded and masked."""
    x = torch.randn(2, 4000)
    mask = torch.ones(2, 4000, dtype=torch.long)
    mask[1, 2900:] = 0
    x[1, 2900:] = 0.0
    return x, mask


def _headless(tmp_path: Path, **overrides: Any) -> tuple[Any, Path]:
    from tests.originals import as_container, data2vec_audio_config, data2vec_audio_original, save_fairseq_checkpoint

    cfg = data2vec_audio_config(**overrides)
    model = data2vec_audio_original(cfg)
    return model, save_fairseq_checkpoint(tmp_path / "pretrained.pt", as_container(cfg), model)


def test_headless_parity(tmp_path: Path) -> None:
    original, checkpoint = _headless(tmp_path)
    plan = preview("data2vec_audio", checkpoint).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert {s.key for s in plan.skipped} == {"final_proj.weight", "final_proj.bias"}
    ported = load_pretrained_strictly(
        Data2VecAudioModel, convert("data2vec_audio", checkpoint, tmp_path / "hf").unwrap()
    )
    x, mask = _batch()
    with torch.no_grad():
        theirs = original(source=x, padding_mask=(1 - mask).bool(), mask=False, features_only=True)["x"]
        ours = ported.eval()(x, attention_mask=mask).last_hidden_state
    valid = ported._get_feature_vector_attention_mask(ours.shape[1], cast(torch.LongTensor, mask)).bool()
    torch.testing.assert_close(ours[valid], theirs[valid], rtol=0, atol=ATOL)


def test_ctc_parity(tmp_path: Path) -> None:
    from tests.originals import (
        data2vec_audio_config,
        data2vec_ctc_original,
        save_fairseq_checkpoint,
        write_letter_dictionary,
    )

    original, saved = data2vec_ctc_original(data2vec_audio_config(conv_bias=True), 32, tmp_path)
    checkpoint = save_fairseq_checkpoint(tmp_path / "ctc.pt", saved, original)
    plan = preview("data2vec_audio_ctc", checkpoint).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    ported = load_pretrained_strictly(
        Data2VecAudioForCTC,
        convert(
            "data2vec_audio_ctc", checkpoint, tmp_path / "hf", processor_file=write_letter_dictionary(tmp_path)
        ).unwrap(),
    )
    assert ported.config.vocab_size == 32 and ported.config.conv_bias
    x, mask = _batch()
    with torch.no_grad():
        theirs = original(source=x, padding_mask=(1 - mask).bool())["encoder_out"].transpose(0, 1)
        ours = ported.eval()(x, attention_mask=mask).logits
    valid = ported.data2vec_audio._get_feature_vector_attention_mask(ours.shape[1], cast(torch.LongTensor, mask)).bool()
    torch.testing.assert_close(ours[valid], theirs[valid], rtol=0, atol=ATOL)


def test_ema_teacher_is_skipped_with_a_reason(tmp_path: Path) -> None:
    original, _ = _headless(tmp_path)
    state = dict(original.state_dict())
    state["_ema"] = {"encoder.layers.0.fc1.weight": torch.zeros(1)}  # as fairseq nests the teacher
    from tests.originals import as_container, data2vec_audio_config

    torch.save({"cfg": {"model": as_container(data2vec_audio_config())}, "model": state}, tmp_path / "ema.pt")
    plan = preview("data2vec_audio", tmp_path / "ema.pt").unwrap().plan
    assert plan.is_clean()
    assert [s.reason for s in plan.skipped if s.key.startswith("_ema.")] == ["EMA teacher: used only for pre-training"]


@pytest.mark.parametrize(
    ("overrides", "refused_prefix", "reason"),
    [
        ({"extractor_mode": "default"}, "feature_extractor.conv_layers.0.2", "group-norm feature extractor"),
        ({"pos_conv_depth": 1}, "encoder.pos_conv.0", "single weight-norm positional conv"),
        ({"layer_norm_first": True}, "encoder.layers.0", "pre-LN transformer"),
    ],
)
def test_variants_the_target_cannot_represent_are_refused(
    tmp_path: Path, overrides: dict[str, Any], refused_prefix: str, reason: str
) -> None:
    _, checkpoint = _headless(tmp_path, **overrides)
    plan = preview("data2vec_audio", checkpoint).unwrap().plan
    assert not plan.is_clean()
    refused = [r for r in plan.refused if r.key.startswith(refused_prefix)]
    assert refused and all(reason in r.reason for r in refused)
    error = convert("data2vec_audio", checkpoint, tmp_path / "hf").failure()
    assert "refused" in error.message and reason in error.message
    assert not (tmp_path / "hf").exists()


def test_conv_spec_is_parsed_without_eval() -> None:
    assert conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2").unwrap() == (
        (512, 10, 5),
        (512, 3, 2),
        (512, 3, 2),
    )
    for bad in ["__import__('os').system('true')", "[(1, 2)]", "[(1,2,3)] * 10**9", "[[[(1,2,3)]*64]*64]*64", 42]:
        assert "(dim, kernel, stride)" in conv_layers(bad).failure()


def test_missing_config_is_a_clear_error(tmp_path: Path) -> None:
    original, _ = _headless(tmp_path)
    torch.save({"model": original.state_dict()}, tmp_path / "nocfg.pt")
    error = preview("data2vec_audio", tmp_path / "nocfg.pt").failure()
    assert isinstance(error, BadConfig) and "--config" in error.message


def test_a_wrong_rule_table_is_caught_by_the_comparison(tmp_path: Path) -> None:
    """Negative control: swapping two same-shaped targets keeps the plan clean but changes the outputs."""
    from wmap.apply import apply_plan, load_into
    from wmap.io import read_checkpoint
    from wmap.layout import build_on_meta, layout_of
    from wmap.models import get_model
    from wmap.pipeline import first_match
    from wmap.planner import make_plan
    from wmap.transforms import PARAMS, rename

    original, checkpoint = _headless(tmp_path)
    spec = get_model("data2vec_audio").unwrap()
    source = read_checkpoint(checkpoint).unwrap()
    config = spec.config_from_checkpoint(source.meta, source.layout).unwrap().config
    swapped = first_match(
        "sabotage",
        [
            rename("encoder.layers.*.self_attn.q_proj", "encoder.layers.*.attention.k_proj", PARAMS),
            rename("encoder.layers.*.self_attn.k_proj", "encoder.layers.*.attention.q_proj", PARAMS),
            spec.pipeline(config, source.meta),
        ],
    )
    target = build_on_meta(lambda: spec.build(config))
    plan = make_plan(swapped, source.layout, layout_of(target))
    assert plan.is_clean(), plan.problems(limit=3)
    ported = load_into(target, apply_plan(plan, source.tensors).unwrap()).unwrap().eval()
    x, mask = _batch()
    with torch.no_grad():
        theirs = original(source=x, padding_mask=(1 - mask).bool(), mask=False, features_only=True)["x"]
        ours = ported(x, attention_mask=mask).last_hidden_state
    assert (ours - theirs).abs().max() > 1e-2
