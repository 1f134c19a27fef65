"""Development sessions: ``nox -s tests typecheck`` (the README's test command), ``lint``, ``bench``."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "typecheck", "lint"]

CONSTRAINTS = ("-c", "constraints.txt")


def _drop_torchaudio(session: nox.Session) -> None:
    """The originals drag in a torchaudio build that fails against torch 2.13 and breaks
    transformers' wav2vec2-family imports; nothing here needs it."""
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchaudio")


OPENAI_WHISPER = "openai-whisper==20250625"


def _install_whisper(session: nox.Session) -> None:
    """openai-whisper without its declared dependencies: they include triton (a GPU compiler, several
    hundred MB, useless on CPU) and an unpinned torch that would replace the pinned CPU build. What
    it imports (numba, tiktoken, more-itertools, tqdm) comes with the ``originals`` extra."""
    session.install("--no-deps", OPENAI_WHISPER)


DAC = ("descript-audio-codec==1.0.0", "descript-audiotools==0.7.2")
AUDIOCRAFT = "audiocraft==1.3.0"


def _install_dac(session: nox.Session) -> None:
    """descript-audio-codec, descript-audiotools and audiocraft without their declared dependencies
    (torchaudio, broken against torch 2.13; audiocraft's torch 2.1 pin; audio I/O, metrics and demos
    the models never use: the tests' imports stub them, tests/originals.py names them). What the models
    import comes with the ``codecs`` extra."""
    session.install("--no-deps", *CONSTRAINTS, *DAC, AUDIOCRAFT)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit, property, CLI and parity tests (parity builds the original implementations and runs the
    runtimes users feed converted models to: CTranslate2)."""
    session.install(*CONSTRAINTS, "-e", ".[originals,codecs,runtimes,dev]")
    _install_whisper(session)
    _install_dac(session)
    _drop_torchaudio(session)
    session.run("pytest", "-q", "--durations=15", *session.posargs)  # the slowest, for keeping the suite fast


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests, benchmarks and scripts."""
    session.install(*CONSTRAINTS, "-e", ".[dev]")
    session.run("mypy", "--strict")


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "scripts", "noxfile.py")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Planning and conversion benchmarks against the seed-style and raw-copy baselines."""
    session.install(*CONSTRAINTS, "-e", ".[originals,dev]")
    _install_whisper(session)
    _drop_torchaudio(session)
    session.run("python", "benchmarks/run.py", *session.posargs)
