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


@pytest.mark.parity
def test_the_way_back_loads_in_s3prl_strictly_and_gives_the_same_features(tmp_path: Path) -> None:
    """original -> convert -> export: the prediction heads are named unrecoverable and export refuses
    until they are accepted; then s3prl's own ``PretrainedDistiller`` loads the file strictly (its
    config says it has no heads), every encoder tensor is the original's, and the features agree."""
    from s3prl.upstream.distiller.builder import PretrainedDistiller
    from s3prl.upstream.distiller.model import DistillerConfig

    from tests.originals import distiller_config, distiller_original, save_s3prl_checkpoint
    from wmap.errors import PlanNotClean
    from wmap.fairseq.export import inverted
    from wmap.models.distilhubert import DISTILLER
    from wmap.plan import Accept
    from wmap.way_back import export, preview_reverse

    config = distiller_config(extractor_mode="layer_norm")
    original = distiller_original(config)
    checkpoint = save_s3prl_checkpoint(tmp_path / "distiller.ckpt", config, original)
    hf = convert("distilhubert", checkpoint, tmp_path / "hf").unwrap()
    plan = preview_reverse("distilhubert", hf).unwrap().plan
    assert [u.key for u in plan.unrecoverable] == ["output_layer"]
    out = tmp_path / "back.ckpt"
    assert isinstance(export("distilhubert", hf, out).failure(), PlanNotClean) and not out.exists()
    export("distilhubert", hf, out, accept=Accept(unrecoverable=frozenset({"output_layer"}))).unwrap()

    exported = torch.load(out, weights_only=True)
    written = exported["Config"]["distiller"]
    fields = [*inverted(DISTILLER.fields).values(), "extractor_mode"]
    assert {f: written[f] for f in fields} == {f: DistillerConfig(config).__dict__[f] for f in fields}
    assert eval(written["extractor_conv_feature_layers"]) == eval(config["extractor_conv_feature_layers"])
    state = original.state_dict()
    assert set(exported["Distiller"]) == {k for k in state if not k.startswith("output_layer.")}
    assert all(torch.equal(v, state[k]) for k, v in exported["Distiller"].items())
    options = {"ckpt_file": str(out), "load_pretrain": "True", "no_grad": "True", "permute_input": "False"}
    loaded = PretrainedDistiller(options).model  # load_state_dict(strict=True) inside
    assert loaded.output_layer is None

    x = torch.randn(2, 4000)
    with torch.no_grad():
        torch.testing.assert_close(_encoder_output(loaded, x), _encoder_output(original, x), rtol=0, atol=ATOL)


def test_what_the_family_never_reads_leaves_the_preview_as_it_is(tmp_path: Path) -> None:
    """The runner's state (optimizer, step, arguments) and the task's settings changed: the same
    preview, the same key; the control changes the distiller's config."""
    from tests.helpers import assert_unread_leaves_the_preview
    from tests.originals import distiller_config, distiller_original, save_s3prl_checkpoint

    config = distiller_config()
    checkpoint = save_s3prl_checkpoint(tmp_path / "states-1000.ckpt", config, distiller_original(config))
    assert_unread_leaves_the_preview("distilhubert", checkpoint, tmp_path, ("Config.distiller.conv_pos", 16))
