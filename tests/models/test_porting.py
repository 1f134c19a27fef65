"""docs/porting.md: a family wmap does not ship (fairseq HuBERT), ported with the public API only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from transformers import HubertModel

from tests.helpers import load_pretrained_strictly
from wmap import ModelSpec, convert, preview

PAGE = Path(__file__).resolve().parents[2] / "docs" / "porting.md"
pytestmark = pytest.mark.parity


def port() -> tuple[ModelSpec, int]:
    """The page's port, run as a module of its own; and its length in lines."""
    code = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)[-1]
    namespace: dict[str, Any] = {"__name__": "hubert_port"}
    exec(compile(code, str(PAGE), "exec"), namespace)
    return cast(ModelSpec, namespace["HUBERT"]), len(code.strip().splitlines())


def test_the_port_is_short_and_uses_the_public_api_only() -> None:
    _, lines = port()
    code = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)[-1]
    assert lines <= 30
    assert not re.search(r"wmap\.\w*\._|from wmap\.models", code)  # no private module, no shipped family


def test_the_port_has_parity_with_fairseq(tmp_path: Path) -> None:
    from tests.originals import hubert_checkpoint

    original = hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    spec, _ = port()
    prepared = preview(spec, tmp_path / "hubert.pt").unwrap()
    assert prepared.plan.is_clean(), prepared.plan.problems(limit=5)
    assert {s.key for s in prepared.plan.skipped} == {"final_proj.weight", "final_proj.bias", "label_embs_concat"}
    assert {"label_rate", "skip_masked"} <= {f.name for f in prepared.ignored}
    ported = load_pretrained_strictly(HubertModel, convert(spec, tmp_path / "hubert.pt", tmp_path / "hf").unwrap())
    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs, _ = original.extract_features(x, padding_mask=None, mask=False)
        ours = ported(x).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
