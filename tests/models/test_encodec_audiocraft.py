"""encodec_audiocraft: audiocraft's EnCodec (as its export writes ``compression_state_dict.bin``) ->
EncodecModel configured from the file's ``xp.cfg``, in parity with audiocraft, and back into a file
``load_compression_model`` reads.

audiocraft is installed ``--no-deps`` (noxfile) and imported with the stand-ins
:data:`tests.originals.AUDIOCRAFT_STAND_INS` names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview
from wmap.errors import BadConfig

pytestmark = pytest.mark.parity

VARIANTS: dict[str, dict[str, Any]] = {
    "musicgen-shaped": {},
    "stereo-renormalized-reflect": {
        "encodec": {
            "autoencoder": "seanet",
            "quantizer": "rvq",
            "sample_rate": 24000,
            "channels": 2,
            "causal": False,
            "renormalize": True,
        },
        "seanet": {"channels": 2, "pad_mode": "reflect", "true_skip": False, "lstm": 1, "n_residual_layers": 2},
    },
}
"""MusicGen's shape (weight norm, constant padding, residual shortcut, 2 LSTM layers, 4 codebooks), and
stereo with renormalisation, reflect padding, conv shortcuts, one LSTM layer, two residual layers."""


@pytest.fixture(scope="module", params=list(VARIANTS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.originals import AUDIOCRAFT_ENCODEC, audiocraft_encodec_file

    torch.manual_seed(0)
    sections = {name: {**AUDIOCRAFT_ENCODEC[name], **override} for name, override in VARIANTS[request.param].items()}
    path = tmp_path_factory.mktemp("audiocraft") / "compression_state_dict.bin"
    return path, audiocraft_encodec_file(path, sections)


def _audio(model: Any, seconds_of_frames: int = 40) -> torch.Tensor:
    return torch.randn(1, model.channels, model.encoder.hop_length * seconds_of_frames) * 0.3


def test_codes_and_audio_are_audiocrafts(exported: tuple[Path, Any], tmp_path: Path) -> None:
    """Through ``AutoProcessor`` and the model: audiocraft's codes, its decoded audio (measured equal)."""
    from transformers import AutoProcessor, EncodecModel

    path, original = exported
    plan = preview("encodec_audiocraft", path).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    out = convert("encodec_audiocraft", path, tmp_path / "hf").unwrap()
    model = load_pretrained_strictly(EncodecModel, out)
    processor = AutoProcessor.from_pretrained(out)
    audio = _audio(original)
    inputs = processor(
        raw_audio=audio[0].numpy() if original.channels == 2 else audio[0, 0].numpy(),
        sampling_rate=original.sample_rate,
        return_tensors="pt",
    )
    with torch.no_grad():
        codes, scale = original.encode(audio)
        theirs = original.decode(codes, scale)
        encoded = model.encode(inputs["input_values"], inputs["padding_mask"])
        ours = model.decode(encoded.audio_codes, encoded.audio_scales, inputs["padding_mask"]).audio_values
    assert torch.equal(encoded.audio_codes[0], codes)  # every codebook: transformers uses all n_q
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert len(set(codes.flatten().tolist())) > 3


def test_transformers_uses_every_codebook(exported: tuple[Path, Any]) -> None:
    """The trap: transformers derives the number of quantizers from the bandwidth with log2(bins) bits
    per codebook; the config's one bandwidth makes it use exactly the file's ``n_q``."""
    path, original = exported
    config = preview("encodec_audiocraft", path).unwrap().config
    frame_rate = original.sample_rate // original.encoder.hop_length
    bits = torch.tensor(float(original.quantizer.bins)).log2().item()
    assert config.target_bandwidths == [original.quantizer.total_codebooks * frame_rate * bits / 1000]


def test_the_bundled_musicgen_encodec_has_the_bandwidth_transformers_needs() -> None:
    assert preview("encodec_audiocraft").unwrap().config.target_bandwidths == [2.2]  # 4 x 50 Hz x 11 bits


def test_the_way_back_loads_in_audiocraft_and_round_trips(exported: tuple[Path, Any], tmp_path: Path) -> None:
    from tests.originals import import_audiocraft
    from wmap.way_back import export

    path, original = exported
    hf = convert("encodec_audiocraft", path, tmp_path / "hf").unwrap()
    out = export("encodec_audiocraft", hf, tmp_path / "compression_state_dict.bin").unwrap()
    back = import_audiocraft().models.loaders.load_compression_model(out)  # strict load_state_dict
    audio = _audio(original)
    with torch.no_grad():
        codes, scale = original.encode(audio)
        back_codes, back_scale = back.encode(audio)
        torch.testing.assert_close(back.decode(back_codes, back_scale), original.decode(codes, scale), rtol=0, atol=0)
    assert torch.equal(back_codes, codes)
    again = convert("encodec_audiocraft", out, tmp_path / "again").unwrap()
    assert (again / "model.safetensors").read_bytes() == (hf / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("seanet", "norm", "none"),
        ("seanet", "activation", "ReLU"),
        ("seanet", "disable_norm_outer_blocks", 1),
        ("seanet", "decoder", {"trim_right_ratio": 1.0, "final_activation": "Tanh"}),
        ("encodec", "channels", 2),
        ("encodec", "quantizer", "no_quant"),
    ],
)
def test_what_encodecmodel_cannot_represent_is_refused(
    exported: tuple[Path, Any], tmp_path: Path, section: str, field: str, value: object
) -> None:
    import yaml

    from wmap.models.encodec_audiocraft import xp_cfg_of

    path, _ = exported
    file = torch.load(path, weights_only=True)
    cfg = xp_cfg_of(file)  # its interpolations resolved
    cfg[section][field] = 3 - cfg["seanet"]["channels"] if field == "channels" else value  # disagrees with seanet's
    torch.save({**file, "xp.cfg": yaml.safe_dump(cfg)}, tmp_path / "odd.bin")
    error = preview("encodec_audiocraft", tmp_path / "odd.bin").failure()
    assert isinstance(error, BadConfig) and error.key == field, error


def test_a_solvers_own_checkpoint_converts_with_its_best_weights(tmp_path: Path) -> None:
    """audiocraft's ``checkpoint.th`` as its solver saves it (the omegaconf config itself, the live model
    and optimizer beside the best state): converted directly, with the best weights, as audiocraft's
    ``export_encodec`` takes them (which, under torch >= 2.6, cannot read such a file: ``torch.load``'s
    default refuses the omegaconf config). The codes are the best model's; the live model's differ (the
    control: the file's other weights are not the ones read)."""
    from transformers import EncodecModel

    from tests.originals import audiocraft_solver_checkpoint

    torch.manual_seed(0)
    best, live = audiocraft_solver_checkpoint(tmp_path / "checkpoint.th")
    plan = preview("encodec_audiocraft", tmp_path / "checkpoint.th").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert all(not a.source.startswith("model.") for a in plan.applied)
    out = convert("encodec_audiocraft", tmp_path / "checkpoint.th", tmp_path / "hf").unwrap()
    model = EncodecModel.from_pretrained(out).eval()
    audio = _audio(best)
    with torch.no_grad():
        expected = best.encode(audio)[0]
        ours = model.encode(audio, bandwidth=model.config.target_bandwidths[-1]).audio_codes[0]
        assert torch.equal(ours, expected)
        assert not torch.equal(live.encode(audio)[0], expected)
