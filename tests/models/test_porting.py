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


WAY_BACK = 1
"""The block that adds the first port's way back: it runs after it, in its module."""


def port(index: int = 0, name: str = "HUBERT") -> tuple[ModelSpec, int]:
    """The page's ``index``-th block, run as a module of its own (the way back's after the first
    port's, in the same module); and its length in lines."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    namespace: dict[str, Any] = {"__name__": f"port_{index}"}
    for code in ([blocks[0]] if index == WAY_BACK else []) + [blocks[index]]:
        exec(compile(code, str(PAGE), "exec"), namespace)
    return cast(ModelSpec, namespace[name]), len(blocks[index].strip().splitlines())


@pytest.mark.parametrize(("index", "name"), [(0, "HUBERT"), (1, "HUBERT"), (2, "CONFORMER_CTC"), (3, "CTC")])
def test_each_port_is_short_and_uses_the_public_api_only(index: int, name: str) -> None:
    _, lines = port(index, name)
    code = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)[index]
    assert lines <= 35
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


def test_the_ports_way_back_loads_in_fairseq_strictly_with_its_features(tmp_path: Path) -> None:
    """The page's way back (``trainer_exporter``, with the heads fairseq builds empty made): the plan is
    clean and names them as made; fairseq's own loader takes the export strictly, with the features of
    the original. The negative control: the same way back without ``made`` cannot give them (unrecoverable)."""
    import attrs
    from fairseq import checkpoint_utils

    from tests.originals import hubert_checkpoint
    from wmap import export, preview_reverse

    original = hubert_checkpoint(tmp_path / "hubert.pt", tmp_path)
    spec, _ = port(WAY_BACK)
    hf = convert(spec, tmp_path / "hubert.pt", tmp_path / "hf").unwrap()
    plan = preview_reverse(spec, hf).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert {m.target for m in plan.made} == {"final_proj.weight", "final_proj.bias", "label_embs_concat"}
    assert spec.export is not None
    without = attrs.evolve(spec, export=attrs.evolve(spec.export, made=lambda config: ()))
    lacking = preview_reverse(without, hf).unwrap().plan
    assert {u.key for u in lacking.unrecoverable} == {m.target for m in plan.made} and not lacking.is_clean()
    (tmp_path / "back").mkdir()
    out = export(spec, hf, tmp_path / "back" / "checkpoint.pt").unwrap()
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(out)], strict=True)
    x = torch.randn(2, 4000)
    with torch.no_grad():
        theirs, _ = original.eval().extract_features(x, padding_mask=None, mask=False)
        returned, _ = models[0].eval().extract_features(x, padding_mask=None, mask=False)
    torch.testing.assert_close(returned, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("index", "name"), [(2, "CONFORMER_CTC"), (3, "CTC")])
def test_the_ctc_port_with_a_value_operation_has_parity_with_fairseq(tmp_path: Path, index: int, name: str) -> None:
    """The page's second port, and the CTC spec of its third (one description), on a conformer (rope)
    CTC checkpoint written by fairseq's trainer: the rotary copies are gathered, the processor loads,
    the logits are fairseq's within 1e-5."""
    from transformers import AutoModelForCTC, AutoProcessor

    from tests.models.test_fairseq_trainer_checkpoints import (
        _fairseq_reference,
        _fairseq_transcripts,
        _transcribe,
        _utterances,
    )
    from tests.originals import CONFORMER, conformer_fix, ctc_trainer_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "checkpoint_best.pt"
    with conformer_fix():
        ctc_trainer_checkpoint(path, tmp_path, family="wav2vec2", pos_enc_type="rope", **CONFORMER)
    spec, _ = port(index, name)
    plan = preview(spec, path).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    assert len(plan.gathered) == 1
    out = convert(spec, path, tmp_path / "hf").unwrap()
    processor, model = AutoProcessor.from_pretrained(out), AutoModelForCTC.from_pretrained(out).eval()
    audio = _utterances()
    with conformer_fix():
        reference, task = _fairseq_reference(path)
        expected, their_logits = _fairseq_transcripts(reference, task, audio)
    ours, logits = _transcribe(processor, model, audio)
    assert ours == expected
    for mine, theirs in zip(logits, their_logits, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
