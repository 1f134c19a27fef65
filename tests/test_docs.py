"""The documentation's examples run."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_write_your_own_pipeline_example_runs() -> None:
    text = (DOCS / "pipelines.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "the page has a python example"
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(blocks[0], str(DOCS / "pipelines.md"), "exec"), namespace)
    assert "plan" in namespace
