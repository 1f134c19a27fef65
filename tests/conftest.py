"""Shared fixtures. Parity tests (marked ``parity``) need the ``originals`` extra."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    # CI replays the same examples on every run, so its verdict is about the change it checks; a
    # developer's run draws new ones (and replays its own failures from .hypothesis/) to find bugs.
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same random state."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _previews_kept_by_this_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test keeps its ``wmap preview`` outputs apart (never in the user's cache, never one test's
    preview shown to another that changed what the key cannot see, such as a patched module)."""
    monkeypatch.setenv("WMAP_CACHE_DIR", str(tmp_path_factory.mktemp("previews")))


@pytest.fixture(scope="session")
def ctc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wav2vec2 CTC fine-tune as transformers saves it, with its processor (shared: read only)."""
    from tests.helpers import hub_directory

    directory = tmp_path_factory.mktemp("hub") / "w2v-ctc"
    hub_directory("wav2vec2_ctc", directory)
    return directory
