"""Atomic output: a directory or a set of files staged beside their targets and moved in whole, never
over the input, over an existing one only with overwrite."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from returns.result import Failure, Result, Success

from wmap.errors import OutputRefused
from wmap.io.paths import path_problem


def _staging_name(target: Path) -> Path:
    """A fresh hidden name beside ``target`` (``.NAME.wmap-<64 random bits>``), for what is written
    before it is renamed into place; named before it is made, so that whoever makes it can remove it
    whatever interrupts them."""
    return target.parent / f".{target.name[:120]}.wmap-{secrets.token_hex(8)}"


@contextlib.contextmanager
def _made_beside(target: Path, *, directory: bool) -> Iterator[Path]:
    """A new file or directory beside ``target`` (:func:`_staging_name`), removed at the end whatever
    happens. It is named before it is made and made inside the ``try``: an interrupt (SIGTERM raises
    in any bytecode) arriving just after it is made still removes it, which ``mkdtemp`` followed by
    ``try`` cannot promise."""
    path = _staging_name(target)
    taken = False
    try:
        try:
            if directory:
                os.mkdir(path, 0o700)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            taken = True  # someone else's (64 random bits: never in practice); not ours to remove
            raise
        yield path
    finally:
        if not taken and directory:
            shutil.rmtree(path, ignore_errors=True)
        elif not taken:
            with contextlib.suppress(OSError):
                path.unlink()


MODEL_DIRECTORY_FILES = (".json", ".safetensors", ".bin", ".txt", ".model", ".md", ".pt", ".tiktoken", ".gitattributes")
"""What a model directory holds (configs, weights, tokenizer and processor files, a model card): the
only files ``--overwrite`` replaces a directory of."""


def _within(path: str | os.PathLike[str], directory: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``directory`` or lies inside it, links resolved (a name that cannot be a
    file, with a NUL byte say, lies nowhere)."""
    if path_problem(path) is not None or path_problem(directory) is not None:
        return False
    real, outer = os.path.realpath(path), os.path.realpath(directory)
    return real == outer or real.startswith(outer.rstrip(os.sep) + os.sep)


def _not_a_model_directory(target: Path) -> str | None:
    """Why ``--overwrite`` must not replace the directory ``target``: it is the current directory or
    holds it, or it holds something a model directory does not (named)."""
    if _within(os.getcwd(), target):
        return "is the current directory or holds it; name a model directory to replace"
    others = []
    with os.scandir(target) as entries:
        for entry in entries:
            staging = entry.name.startswith(".") and ".wmap-" in entry.name
            if not staging and (
                not entry.is_file(follow_symlinks=False) or not entry.name.endswith(MODEL_DIRECTORY_FILES)
            ):
                others.append(entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""))
            if len(others) >= 3:
                break
    if others:
        shown = ", ".join(repr(name) for name in sorted(others))
        return f"holds {shown}, which a model directory does not: not replaced (remove it yourself, or write elsewhere)"
    return None


def check_output(out_dir: str | os.PathLike[str], *, overwrite: bool) -> Result[Path, OutputRefused]:
    """The absolute output path, unless it exists and may not be replaced: without ``overwrite``, or a
    directory that is not a model directory (:func:`_not_a_model_directory`)."""
    problem = path_problem(out_dir)
    if problem is not None:
        return Failure(OutputRefused(repr(os.fspath(out_dir))[:80], f"{problem}; name the output directory"))
    target = Path(out_dir).absolute()
    if target.exists() and not overwrite:
        return Failure(OutputRefused(str(target), "already exists; pass overwrite (--overwrite) to replace it"))
    if target.exists() and not target.is_dir():
        return Failure(OutputRefused(str(target), "exists and is not a directory"))
    if target.exists():
        try:
            refused = _not_a_model_directory(target)
        except OSError as error:
            refused = f"cannot be listed ({error.strerror or error})"
        if refused is not None:
            return Failure(OutputRefused(str(target), refused))
    return Success(target)


def write_directory_atomically(
    out_dir: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike[str], ...] = (),
) -> Result[Path, OutputRefused]:
    """Call ``write`` on a staging directory beside ``out_dir`` and rename it into place at the end.

    An existing ``out_dir`` is left alone unless ``overwrite``; then it is replaced only after the
    new one is complete, never when it holds one of ``protect`` (the input), and only if it is a model
    directory (:func:`check_output`). Without ``overwrite`` the final rename cannot replace a
    directory that appeared meanwhile (another conversion's): it is refused. The directory gets the
    permissions ``save_pretrained``'s would (the umask's). Any failure leaves no staging directory, no
    parent created for it, and the old ``out_dir`` (if any) unchanged.
    """
    return (
        check_output(out_dir, overwrite=overwrite)
        .bind(lambda target: holds_none_of(target, protect))
        .bind(lambda target: _write_into(target, write, overwrite=overwrite))
    )


def inputs_of(directory: str | os.PathLike[str], limit: int = 10_000) -> tuple[str, ...]:
    """``directory`` and what each of its entries resolves to (a Hub cache's links to its blobs): the
    paths an output must not replace."""
    found = [os.fspath(directory)]
    with contextlib.suppress(OSError, ValueError), os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count >= limit:
                break
            found.append(os.path.realpath(entry.path))
    return tuple(found)


def looks_like_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a file wmap could have written as an export: empty, a torch zip archive, or
    a pickle (legacy torch format), judged from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return head in (b"",) or head.startswith((b"PK\x03\x04", b"\x80"))


def _file_refused(
    target: Path,
    overwrite: bool,
    protect: tuple[str | os.PathLike[str], ...],
    replaces: Callable[[Path], str | None],
) -> str | None:
    """Why ``target`` may not be written (checked for every file before any is)."""
    problem = path_problem(target)
    if problem is not None:
        return f"{problem}; name the file to write"
    if target.is_dir():
        return "is a directory; name the file to write"
    if os.path.lexists(target) and not overwrite:
        return "already exists; pass overwrite (--overwrite) to replace it"
    if os.path.lexists(target) and not target.is_file():
        return "exists and is not a regular file: not replaced"
    if not target.parent.is_dir():
        return "its directory does not exist"
    for item in protect:  # the file must not replace the input, nor land inside the input directory
        if _within(target, item):
            return f"is, or lies in, the input {item}; write the output elsewhere"
    return replaces(target) if os.path.lexists(target) else None


def write_file_atomically(
    out_file: str | os.PathLike[str],
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike[str], ...] = (),
) -> Result[Path, OutputRefused]:
    """Call ``write`` on a temporary file beside ``out_file`` and move it into place at the end
    (:func:`write_files_atomically` with one file)."""
    return write_files_atomically({out_file: write}, overwrite=overwrite, protect=protect).map(lambda paths: paths[0])


def write_files_atomically(
    files: Mapping[str | os.PathLike[str], Callable[[Path], None]],
    *,
    overwrite: bool = False,
    protect: tuple[str | os.PathLike[str], ...] = (),
    replaces: Callable[[Path], str | None] = lambda path: None,
) -> Result[tuple[Path, ...], OutputRefused]:
    """Write several files (an export and its companions) all or none: each ``write`` fills a
    temporary file beside its target; only when all are complete are they moved into place, and a
    failure or interrupt while moving puts back what was there. An existing file is replaced only with
    ``overwrite`` (never one of ``protect``, the input, and never a non-regular file); without it one
    that appears meanwhile is not replaced; ``replaces(path)`` says why an existing file must not be
    replaced (not a file this writer could have written), or ``None``. The files get the umask's
    permissions, as ``torch.save`` would give them."""
    if not files:
        return Success(())
    targets = [Path(os.fspath(out)).absolute() if path_problem(out) is None else Path(os.fspath(out)) for out in files]
    for out, target in zip(files, targets, strict=True):
        refused = _file_refused(target, overwrite, protect, replaces)
        if refused is not None:
            shown = str(target) if path_problem(target) is None else repr(os.fspath(out))[:80]
            return Failure(OutputRefused(shown, refused))
    try:
        with contextlib.ExitStack() as stack:
            staged = [stack.enter_context(_made_beside(target, directory=False)) for target in targets]
            for write, path in zip(files.values(), staged, strict=True):
                write(path)
                os.chmod(path, 0o666 & ~_umask())
            backup = stack.enter_context(_made_beside(targets[0], directory=True))
            _move_all_in(staged, targets, backup, overwrite=overwrite)
    except BaseException as error:
        if not isinstance(error, OSError):
            raise  # an interrupt, or a bug in a writer: not the output's fault (the CLI says which)
        detail = " ".join(str(error).split())
        return Failure(OutputRefused(str(targets[0]), f"could not write output: {type(error).__name__}: {detail}"))
    return Success(tuple(targets))


def _move_all_in(staged: list[Path], targets: list[Path], backup: Path, *, overwrite: bool) -> None:
    """Each staged file to its target; whatever stops this (an error, SIGTERM between any two steps),
    every target is put back as it was."""
    kept: list[tuple[Path, Path]] = []
    try:
        for number, (path, target) in enumerate(zip(staged, targets, strict=True)):
            if overwrite and os.path.lexists(target):
                old = backup / str(number)
                os.replace(target, old)
                kept.append((old, target))
            try:
                os.link(path, target)  # never replaces a file that appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{target} appeared while writing (another export?); not replaced") from None
    except BaseException:
        for path, target in zip(staged, targets, strict=True):  # ours: the same file as what we staged
            with contextlib.suppress(OSError):
                if os.path.samefile(path, target):
                    target.unlink()
        for old, target in kept:
            with contextlib.suppress(OSError):
                os.replace(old, target)
        raise


def holds_none_of(target: Path, protect: tuple[str | os.PathLike[str], ...]) -> Result[Path, OutputRefused]:
    """``target``, unless replacing it would delete one of ``protect`` (it is, or holds, that path)."""
    for item in protect:
        if _within(item, target):
            return Failure(OutputRefused(str(target), f"holds the input {item}; write the output elsewhere"))
    return Success(target)


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def _replace_keeping_the_old_until_done(staging: Path, target: Path) -> None:
    """Move the old ``target`` aside, ``staging`` into its place, then delete the old one. Whatever
    stops this (an error, SIGTERM raising between any two steps), the old one is put back unless the
    new one is already in place (the backup is removed as :func:`_made_beside` removes what it made)."""
    with _made_beside(target, directory=True) as backup:
        old = backup / target.name
        try:
            os.replace(target, old)
            os.replace(staging, target)
        except BaseException:
            if os.path.lexists(old) and not os.path.lexists(target):
                os.replace(old, target)
            raise


def _missing_parents(target: Path) -> list[Path]:
    missing = []
    for parent in target.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}


def _write_into(target: Path, write: Callable[[Path], None], *, overwrite: bool) -> Result[Path, OutputRefused]:
    created = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _made_beside(target, directory=True) as staging:
            write(staging)
            os.chmod(staging, 0o777 & ~_umask())
            if overwrite and target.exists():
                _replace_keeping_the_old_until_done(staging, target)
            else:
                try:
                    os.rename(staging, target)  # never replaces a directory with something in it
                except OSError as error:
                    if error.errno in _TAKEN:
                        raise FileExistsError("appeared while converting (another conversion?); not replaced") from None
                    raise
    except BaseException as error:
        for parent in created:  # deepest first; only the empty ones this run made
            with contextlib.suppress(OSError):
                parent.rmdir()
        if not isinstance(error, OSError):
            raise  # an interrupt, or a bug in a writer: not the output's fault (the CLI says which)
        detail = " ".join(str(error).split())
        return Failure(OutputRefused(str(target), f"could not write output: {type(error).__name__}: {detail}"))
    return Success(target)
