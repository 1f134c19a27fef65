"""dac: descript-audio-codec's DAC (as ``DAC.save(package=False)`` writes it) -> DacModel, in parity with
DAC, and back into a file ``DAC.load`` reads.

descript-audio-codec and descript-audiotools are installed ``--no-deps`` (noxfile); DAC is imported
with stand-ins for the audio I/O, metrics and logging modules audiotools imports at module level
(:data:`tests.originals.DAC_STAND_INS`, and ``torch.utils.tensorboard``), none of which the model uses.
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
    "16khz-2-strides": {},
    "24khz-3-strides": {"encoder_rates": [2, 3, 4], "decoder_rates": [4, 3, 2], "sample_rate": 24000},
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from tests.originals import dac_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dac") / "weights.pth"
    return path, dac_checkpoint(path, **VARIANTS[request.param])


def _dac_codes_and_audio(model: Any, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        z, codes, *_ = model.encode(audio)
        decoded: torch.Tensor = model.decode(z)
    return codes, decoded


def test_codes_are_dacs_and_the_decoded_audio_is_too(saved: tuple[Path, Any], tmp_path: Path) -> None:
    """Through ``AutoProcessor`` and the model, as users run it: the codes are DAC's, the decoded audio
    within 1e-5 (measured: equal, since the weights are folded by torch's own weight-norm kernel)."""
    from transformers import AutoProcessor, DacModel

    path, original = saved
    plan = preview("dac", path).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert len(plan.joined) == sum(k.endswith("weight_g") for k in torch.load(path, weights_only=True)["state_dict"])
    out = convert("dac", path, tmp_path / "hf").unwrap()
    model = load_pretrained_strictly(DacModel, out)
    processor = AutoProcessor.from_pretrained(out)
    hop = int(original.hop_length)
    audio = torch.randn(2 * hop * 25) * 0.3
    inputs = processor(raw_audio=audio.numpy(), sampling_rate=original.sample_rate, return_tensors="pt")
    their_codes, their_audio = _dac_codes_and_audio(original, audio[None, None])
    with torch.no_grad():
        encoded = model.encode(inputs["input_values"])
        ours = model.decode(encoded.quantized_representation).audio_values
    assert torch.equal(encoded.audio_codes, their_codes)
    torch.testing.assert_close(ours.reshape(their_audio.shape), their_audio, rtol=0, atol=1e-5)
    assert len(set(their_codes.flatten().tolist())) > 3  # not vacuous: many codes are used


def test_an_unfolded_weight_is_caught(saved: tuple[Path, Any], tmp_path: Path) -> None:
    """Negative control: a conv given ``weight_v`` as it is (no fold, the mistake the official script
    made once) decodes other audio."""
    from transformers import DacModel

    path, original = saved
    out = convert("dac", path, tmp_path / "hf").unwrap()
    model = DacModel.from_pretrained(out).eval()
    with torch.no_grad():
        model.decoder.conv1.weight.copy_(original.decoder.model[0].weight_v)
        z, *_ = original.encode(torch.randn(1, 1, int(original.hop_length) * 20))
        assert not torch.allclose(model.decode(z).audio_values.squeeze(), original.decode(z).squeeze(), atol=1e-5)


def test_the_way_back_loads_in_dac_and_round_trips(saved: tuple[Path, Any], tmp_path: Path) -> None:
    """convert -> export: ``DAC.load`` reads it (and it loads strictly), with DAC's codes and audio;
    the weight norm comes back unfolded (g = ||w||, v = w: the represented weight within float32
    rounding of the original's, and folding it again gives w bit for bit: g is the norm torch's own
    weight-norm kernel computes); converted again, the weights are byte-identical."""
    from tests.originals import import_dac
    from wmap.way_back import export

    path, original = saved
    hf = convert("dac", path, tmp_path / "hf").unwrap()
    out = export("dac", hf, tmp_path / "back.pth").unwrap()
    dac = import_dac()
    back = dac.load(str(out)).eval()
    strict = dac(**torch.load(out, weights_only=True)["metadata"]["kwargs"])
    strict.load_state_dict(torch.load(out, weights_only=True)["state_dict"], strict=True)
    audio = torch.randn(1, 1, int(original.hop_length) * 30) * 0.3
    codes, decoded = _dac_codes_and_audio(original, audio)
    back_codes, back_decoded = _dac_codes_and_audio(back, audio)
    assert torch.equal(back_codes, codes)
    torch.testing.assert_close(back_decoded, decoded, rtol=0, atol=0)
    for name, module in original.named_modules():
        if hasattr(module, "weight_g"):
            returned = dict(back.named_modules())[name]
            torch.testing.assert_close(returned.weight, module.weight, rtol=1e-6, atol=1e-7)
    again = convert("dac", out, tmp_path / "again").unwrap()
    assert (again / "model.safetensors").read_bytes() == (hf / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("field", "value"),
    [("decoder_rates", [2, 2]), ("latent_dim", 7), ("codebook_dim", [4, 4, 4]), ("encoder_rates", "2,4")],
)
def test_what_dacmodel_cannot_represent_is_refused(
    saved: tuple[Path, Any], tmp_path: Path, field: str, value: object
) -> None:
    path, _ = saved
    file = torch.load(path, weights_only=True)
    file["metadata"]["kwargs"][field] = value
    torch.save(file, tmp_path / "odd.pth")
    error = preview("dac", tmp_path / "odd.pth").failure()
    assert isinstance(error, BadConfig) and error.key == field, error


def test_a_torch_package_archive_is_refused_saying_which_file_to_convert(tmp_path: Path) -> None:
    """``DAC.save(path)`` by default writes a torch.package archive (the model's code pickled with its
    weights; audiotools' ``save_to_folder`` writes it as ``package.pth`` beside ``weights.pth``). wmap
    runs no pickled code: preview and convert refuse it in one line naming what to convert instead
    (it used to say torch's "failed locating file data.pkl ... corrupted"); nothing is written."""
    from tests.originals import DAC_SMALL, import_dac
    from tests.test_cli import wmap

    import_dac()(**DAC_SMALL).save(str(tmp_path / "package.pth"))  # package=True, audiotools' default
    refused = preview("dac", tmp_path / "package.pth").failure()
    assert "torch.package archive" in str(refused) and "package=False" in str(refused)
    result = wmap("convert", "dac", str(tmp_path / "package.pth"), str(tmp_path / "hf"))
    assert result.returncode == 2 and "torch.package archive" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "hf").exists()
