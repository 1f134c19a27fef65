"""EnCodec 24/32/48 kHz: clean plans and output parity with the original ``encodec`` code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import EncodecFeatureExtractor, EncodecModel

from tests.helpers import load_pretrained_strictly
from tests.originals import encodec_original
from wmap.conversion import convert, preview
from wmap.models import get_model
from wmap.models.encodec import preset_config

NAMES = ["encodec_24khz", "encodec_32khz", "encodec_48khz"]
ATOL = 1e-5


def test_only_the_48khz_table_has_norm_rules() -> None:
    for name in NAMES:
        spec = get_model(name).unwrap()
        rules = repr(spec.pipeline(preset_config(name), {}))
        assert ("conv.norm -> " in rules) == (name == "encodec_48khz"), name


@pytest.mark.parametrize("name", NAMES)
def test_bundled_reference_plans_are_clean(name: str) -> None:
    plan = preview(name).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert not plan.ambiguous


def test_48khz_checkpoint_with_24khz_rules_leaves_the_norms_unused() -> None:
    layout, _ = get_model("encodec_48khz").unwrap().reference_layout().unwrap()
    from wmap.conversion import prepare

    prepared = prepare(get_model("encodec_24khz").unwrap(), layout, {}, preset_config("encodec_48khz")).unwrap()
    assert prepared.plan.unused and all(".norm." in k for k in prepared.plan.unused)


def test_codebook_buffers_each_go_to_their_own_target() -> None:
    plan = preview("encodec_24khz").unwrap().plan
    by_source = {a.source: a.target for a in plan.applied}
    for leaf in ("inited", "cluster_size", "embed", "embed_avg"):
        assert by_source[f"quantizer.vq.layers.3._codebook.{leaf}"] == f"quantizer.layers.3.codebook.{leaf}"


def _input(name: str) -> torch.Tensor:
    config = preset_config(name)
    if config.chunk_length_s is None:
        length = config.sampling_rate // 4
    else:  # whole chunks, as transformers requires for chunked encoding
        chunk = int(config.chunk_length_s * config.sampling_rate)
        stride = max(1, int((1.0 - (config.overlap or 0.0)) * chunk))
        length = chunk + stride
    return torch.randn(1, config.audio_channels, length) * 0.3


@pytest.mark.parity
@pytest.mark.parametrize(
    ("name", "container"),
    [(name, "plain") for name in NAMES] + [("encodec_24khz", "best_state")],
)
def test_parity_with_the_original(name: str, container: str, tmp_path: Path) -> None:
    original = encodec_original(name)
    state = original.state_dict()
    checkpoint = tmp_path / "original.pt"
    torch.save({"best_state": state} if container == "best_state" else state, checkpoint)

    plan = preview(name, checkpoint).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    out = convert(name, checkpoint, tmp_path / "hf").unwrap()
    ported = load_pretrained_strictly(EncodecModel, out)
    EncodecFeatureExtractor.from_pretrained(out)

    bandwidth = max(ported.config.target_bandwidths)
    original.set_target_bandwidth(bandwidth)
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(ported.encoder(x), original.encoder(x), rtol=0, atol=ATOL)
        frames: list[Any] = original.encode(x)
        encoded = ported.encode(x, bandwidth=bandwidth)
        assert encoded.audio_codes.shape[0] == len(frames)
        for (codes, scale), ported_codes, ported_scale in zip(
            frames, encoded.audio_codes, encoded.audio_scales, strict=True
        ):
            # transformers pads a shorter last chunk's codes with zeros to stack them
            assert torch.equal(ported_codes[..., : codes.shape[-1]], codes)
            if scale is not None:
                torch.testing.assert_close(ported_scale, scale, rtol=0, atol=ATOL)
        decoded_original = original.decode(frames)
        decoded = ported.decode(
            encoded.audio_codes, encoded.audio_scales, last_frame_pad_length=encoded.last_frame_pad_length
        )[0]
    length = min(decoded.shape[-1], decoded_original.shape[-1])
    assert length >= x.shape[-1] * 0.99
    torch.testing.assert_close(decoded[..., :length], decoded_original[..., :length], rtol=0, atol=ATOL)


@pytest.mark.parity
@pytest.mark.parametrize("name", NAMES)
def test_the_way_back_loads_strictly_in_encodec_and_gives_back_every_tensor(name: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from wmap.way_back import export, preview_reverse

    original = encodec_original(name)
    torch.save(original.state_dict(), tmp_path / "original.pt")
    hf = convert(name, tmp_path / "original.pt", tmp_path / "hf").unwrap()
    reverse = preview_reverse(name, hf).unwrap().plan
    assert reverse.is_clean(), reverse.problems(limit=5)
    back = torch.load(export(name, hf, tmp_path / "back.pt").unwrap(), weights_only=True)
    state = original.state_dict()
    assert back.keys() == state.keys()
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state.items())

    fresh = encodec_original(name)  # other random weights, then the exported ones, strictly
    fresh.load_state_dict(back, strict=True)
    bandwidth = max(fresh.target_bandwidths)
    fresh.set_target_bandwidth(bandwidth)
    original.set_target_bandwidth(bandwidth)
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh.decode(fresh.encode(x)), original.decode(original.encode(x)), rtol=0, atol=ATOL
        )

    again = convert(name, tmp_path / "back.pt", tmp_path / "again").unwrap()
    first, second = load_file(hf / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
