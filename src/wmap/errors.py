"""Error values: one frozen type per failure a user can meet, each with a one-line message.

The public API returns these inside ``returns`` containers; an exception
escaping the library is a bug. Each is also an ``Exception`` whose text is its
message, so a script that calls ``.unwrap()`` on a failure sees the message
(``returns`` raises ``UnwrapFailedError`` *from* the error value).
"""

from __future__ import annotations

import typing
from typing import TYPE_CHECKING, TypeAlias

import attrs

if TYPE_CHECKING:
    from wmap.plan import MappingPlan


class Error(Exception):
    """Base of wmap's error values: an exception whose text is the one-line ``message``."""

    @property
    def message(self) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.message


@attrs.frozen(auto_exc=False)
class UnreadableCheckpoint(Error):
    """The file is missing, empty, truncated, corrupt, or not a checkpoint at all."""

    path: str
    expected: str
    detail: str

    @property
    def message(self) -> str:
        return f"{self.path}: cannot read checkpoint ({self.detail}); expected {self.expected}"


@attrs.frozen(auto_exc=False)
class UnsafePickle(Error):
    """Unpickling the file would need classes or code beyond tensors, containers and known data classes."""

    path: str
    detail: str
    globals: tuple[str, ...] = ()
    """The globals the file refers to that wmap refused."""

    @property
    def message(self) -> str:
        return (
            f"{self.path}: refused to unpickle: {self.detail}. wmap reads only tensors, plain containers, "
            "known config classes and inert stand-ins for known data classes, and runs no code from a file; "
            "if the file is yours, save its state dict as safetensors with the tool that wrote it"
        )


@attrs.frozen(auto_exc=False)
class UnknownModel(Error):
    """The model name is not registered (or its registered module cannot be loaded: ``detail``)."""

    name: str
    known: tuple[str, ...]
    detail: str = ""

    @property
    def message(self) -> str:
        if self.detail:
            return f"model {self.name!r}: {self.detail}"
        return f"unknown model {self.name!r}; known models: {', '.join(self.known)}"


@attrs.frozen(auto_exc=False)
class WrongFamily(Error):
    """The checkpoint's keys do not belong to the named model family."""

    model: str
    path: str
    example_keys: tuple[str, ...]

    @property
    def message(self) -> str:
        shown = ", ".join(self.example_keys)
        return (
            f"{self.path}: no key matches the {self.model} rules; is it a checkpoint of another "
            f"family? (first keys: {shown})"
        )


@attrs.frozen(auto_exc=False)
class BadConfig(Error):
    """A config value is missing or has an unexpected value."""

    source: str
    key: str
    expected: str
    found: str
    others: tuple[BadConfig, ...] = ()
    """Further bad fields of the same config (a translation reports every one, not the first)."""

    @property
    def message(self) -> str:
        what = "option" if self.key.startswith("--") else "config"  # a file the user named (--dict): not a field
        first = f"{self.source}: {what} {self.key!r} is {self.found}; expected {self.expected}"
        return first + "".join(f"; and {o.key!r} is {o.found}; expected {o.expected}" for o in self.others)


@attrs.frozen(auto_exc=False)
class Disagrees(BadConfig):
    """The files of a directory disagree (``vocab.json`` and the CTC head, a token the original's file
    cannot hold): readable, but not a model the original can be given. A refusal (exit 1), not bad input."""

    @property
    def message(self) -> str:
        return f"{self.source}: {self.key!r} is {self.found}; expected {self.expected}"


@attrs.frozen(auto_exc=False)
class NotInvertible(Error):
    """A pipeline holds a transform that declares no inverse, so it cannot be reversed."""

    transform: str
    kind: str

    @property
    def message(self) -> str:
        return (
            f"cannot reverse the rules: {self.kind} {self.transform!r} declares no inverse "
            "(give it an inverse() method that returns the transform undoing it)"
        )


@attrs.frozen(repr=False, auto_exc=False)
class PlanNotClean(Error):
    """The plan has problems and the caller did not accept them."""

    plan: MappingPlan

    def __repr__(self) -> str:
        return f"PlanNotClean({self.message!r})"

    @property
    def message(self) -> str:
        return "mapping plan is not clean: " + "; ".join(self.plan.problems(limit=5))


@attrs.frozen(auto_exc=False)
class TensorMismatch(Error):
    """The tensors handed to apply differ from the layout the plan was made from."""

    key: str
    expected: str
    found: str

    @property
    def message(self) -> str:
        return f"tensor {self.key!r}: expected {self.expected}, found {self.found}"


@attrs.frozen(auto_exc=False)
class LoadFailed(Error):
    """Strict loading into the target model failed."""

    target: str
    detail: str

    @property
    def message(self) -> str:
        return f"loading into {self.target} failed: {self.detail}"


@attrs.frozen(auto_exc=False)
class OutputRefused(Error):
    """The output location exists (and overwrite was not asked) or cannot be written."""

    path: str
    detail: str

    @property
    def message(self) -> str:
        return f"{self.path}: {self.detail}"


WmapError: TypeAlias = typing.Union[  # noqa: UP007 - documented for help()
    UnreadableCheckpoint,
    UnsafePickle,
    UnknownModel,
    WrongFamily,
    BadConfig,
    PlanNotClean,
    NotInvertible,
    TensorMismatch,
    LoadFailed,
    OutputRefused,
]
"""Every error value the public API can return."""
WmapError.__doc__ = "WmapError: every error value the public API can return (each has a one-line .message)."

REFUSALS: tuple[type, ...] = (PlanNotClean, NotInvertible, TensorMismatch, LoadFailed, Disagrees)
"""Errors that refuse a readable input (the CLI exits 1); checked before :data:`INPUT_ERRORS`, whose
``BadConfig`` is :class:`Disagrees`' base."""

INPUT_ERRORS: tuple[type, ...] = (
    UnreadableCheckpoint,
    UnsafePickle,
    UnknownModel,
    WrongFamily,
    BadConfig,
    OutputRefused,
)
"""Errors caused by bad input or usage (the CLI exits 2); the others are refusals (exit 1)."""
