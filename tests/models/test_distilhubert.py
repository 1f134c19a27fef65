"""DistilHuBERT from s3prl: parity for both extractor modes, config translation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import HubertModel, Wav2Vec2FeatureExtractor

from tests.helpers import load_pretrained_strictly
from wmap.conversion import convert, preview

ATOL = 1e-5


@pytest.mark.parity
@pytest.mark.parametrize(
    ("mode", "layer_norm_first"), [("default", False), ("layer_norm", False), ("layer_norm", True)]
)
def test_parity_with_s3prl(mode: str, layer_norm_first: bool, tmp_path: Path) -> None:
    from tests.originals import distiller_config, distiller_original, save_s3prl_checkpoint

    config = distiller_config(extractor_mode=mode, layer_norm_first=layer_norm_first)
    original = distiller_original(config)
    checkpoint = save_s3prl_checkpoint(tmp_path / "distiller.ckpt", config, original)

    plan = preview("distilhubert", checkpoint).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert {s.key.split(".")[0] for s in plan.skipped} == {"output_layer"}
    out = convert("distilhubert", checkpoint, tmp_path / "hf").unwrap()
    ported = load_pretrained_strictly(HubertModel, out)
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(out)
    assert extractor.sampling_rate == 16000 and not extractor.do_normalize and not extractor.return_attention_mask
    assert ported.config.feat_extract_norm == ("group" if mode == "default" else "layer")

    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs = _encoder_output(original, x)
        ours = ported(x).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL)


def _encoder_output(model: Any, x: torch.Tensor) -> torch.Tensor:
    """The distiller's transformer output (after the final norm when pre-LN), via a forward hook."""
    captured: list[torch.Tensor] = []
    hook = model.encoder.register_forward_hook(lambda module, args, out: captured.append(out[0]))
    try:
        model(x, torch.ones_like(x, dtype=torch.bool), no_pred=True)  # s3prl: True where the wave is real
    finally:
        hook.remove()
    return captured[0]
