"""The ``wmap`` command: ``models``, ``preview`` (dry run), ``convert``, ``export`` and ``verify``, on the library only.

Exit codes: 0 success / clean plan; 1 plan not clean or conversion refused;
2 bad usage or unreadable input; 74 stdout could not be written (the output was);
130 interrupted; 70 a bug. Errors are one line, never a traceback.
``--help``, ``models`` and usage errors answer at once: torch, transformers and
the conversion code are imported only by the verbs that use them.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn, TextIO, cast

import attrs
from returns.result import Failure
from rich.console import Console
from rich.markup import escape

from wmap import preview_cache
from wmap.errors import INPUT_ERRORS, REFUSALS, WmapError
from wmap.registry import families
from wmap.render import visible

if TYPE_CHECKING:
    from wmap.plan import MappingPlan
    from wmap.target_layouts import LayoutCache

EXIT_OK, EXIT_REFUSED, EXIT_INPUT = 0, 1, 2
DTYPES = ("bfloat16", "float16", "float32")
"""``--dtype`` choices: names of torch floating dtypes."""


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class _Console(Console):
    """rich's console, but a reader that closed the pipe is the command's to report: rich's own answer
    (stdout to /dev/null, then ``SystemExit(1)``) would say "the plan is not clean" to a shell."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _console(stderr: bool = False, file: TextIO | None = None) -> Console:
    return _Console(stderr=stderr, file=file, width=None if sys.stdout.isatty() else 160)


def _fail(error: WmapError) -> int:
    print(f"wmap: error: {visible(error.message)}", file=sys.stderr)
    return EXIT_REFUSED if isinstance(error, REFUSALS) or not isinstance(error, INPUT_ERRORS) else EXIT_INPUT


def _models(_: argparse.Namespace) -> int:
    console = _console()
    for family in families():
        console.print(
            f"[bold]{escape(visible(family.name))}[/bold]\n  from: {escape(visible(family.source))}"
            f"\n  to:   {escape(visible(family.target))}"
        )
    return EXIT_OK


def _preview_reverse(args: argparse.Namespace) -> int:
    from wmap.render import print_plan
    from wmap.way_back import preview_reverse

    if args.checkpoint is None:
        print("wmap: error: preview --reverse needs HF_DIR, the directory to export", file=sys.stderr)
        return EXIT_INPUT
    result = preview_reverse(args.model, args.checkpoint, layouts=_kept_layouts(args))
    if isinstance(result, Failure):
        return _fail(result.failure())
    prepared = result.unwrap()
    plan = prepared.plan
    if args.json:
        print(json.dumps({**plan.to_json(), "beside": list(prepared.beside)}, indent=2))
    else:
        print_plan(plan, _console(), title=f"{args.model} (original) ← {args.checkpoint}")
        if prepared.beside:
            print(f"also written beside the file: {', '.join(prepared.beside)}")
    return EXIT_OK if plan.is_clean() else EXIT_REFUSED


SHOWN_BY = ("TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
"""Environment variables that change how rich shows a preview (part of a kept preview's key)."""


def _preview(args: argparse.Namespace) -> int:
    """The plan as text or JSON; shown again from :mod:`wmap.preview_cache` (no torch, no transformers)
    when nothing it depends on has changed."""
    from wmap.registry import SHIPPED
    from wmap.registry import entry as family_entry

    if args.reverse:
        return _preview_reverse(args)
    shown = {
        "json": args.json,
        "tty": sys.stdout.isatty(),
        "size": tuple(shutil.get_terminal_size()) if sys.stdout.isatty() else None,
        "env": {name: os.environ.get(name) for name in SHOWN_BY},
    }
    names = [family.name for family in SHIPPED]
    family = family_entry(args.model) if args.model in names else None
    unread, displayed, texts = (family.unread, family.displayed, family.texts) if family else ((), (), ())
    beside = None if args.processor_file is None else str(args.processor_file)  # MusicGen's --text-encoder
    cached_beside = (  # read from the Hugging Face cache: no part of the key
        family is not None and family.cached_beside and (beside is None or not os.path.isdir(args.checkpoint or ""))
    )
    kept = (
        None
        if args.no_cache or cached_beside
        else preview_cache.key(args.model, args.checkpoint, args.config, shown, names, unread, displayed, beside, texts)
    )
    entry = None if kept is None else preview_cache.load(kept.digest)
    if entry is not None and kept is not None and all(path in kept.displayed for _, path in entry.displayed):
        _show_kept(entry, args, kept.displayed)
        return entry.code
    out = preview_cache.Tee(sys.stdout)
    code, shown_again = _planned_preview(args, out, _kept_layouts(args), {} if kept is None else kept.displayed)
    if kept is not None and shown_again is not None:
        preview_cache.store(kept.digest, shown_again)
    return code


def _show_kept(entry: preview_cache.Entry, args: argparse.Namespace, values: Mapping[str, object]) -> None:
    """A kept preview as a fresh one shows it for the file as it is now: the summary line naming it,
    and the values read at the family's displayed paths (:attr:`preview_cache.Entry.displayed`)."""
    from wmap.config_fields import IgnoredField, shown

    if entry.summary is None:  # JSON: the values in place of their placeholders
        text = entry.text
        for row, path in entry.displayed:
            text = text.replace(json.dumps(preview_cache.placeholder(row)), json.dumps(shown(values[path])))
        sys.stdout.write(text)
        return
    from wmap.render import print_ignored_fields, summary_line

    sys.stdout.write(entry.text)
    console = _console(file=sys.stdout)
    console.print(summary_line(_preview_title(args), *entry.summary))
    rows = [IgnoredField(*row) for row in entry.ignored]
    now = {row: shown(values[path]) for row, path in entry.displayed}
    if all(rows[row].value == value for row, value in now.items()):  # as kept: as it was rendered
        sys.stdout.write(entry.after)
        return
    print_ignored_fields([attrs.evolve(f, value=now.get(row, f.value)) for row, f in enumerate(rows)], console)


def _preview_title(args: argparse.Namespace) -> str:
    return f"{args.model} ← {args.checkpoint or 'bundled reference layout'}"


def _kept_layouts(args: argparse.Namespace) -> LayoutCache | None:
    """Where target layouts are kept (:mod:`wmap.target_layouts`), shared by preview, convert, export and
    verify; none with ``--no-cache``."""
    from wmap.target_layouts import LayoutCache

    return None if args.no_cache else LayoutCache(preview_cache.cache_dir() / "layouts")


def _planned_preview(
    args: argparse.Namespace, out: preview_cache.Tee, layouts: LayoutCache | None, values: Mapping[str, object]
) -> tuple[int, preview_cache.Entry | None]:
    """The preview written to ``out`` (a text stream that keeps a copy): its exit code, and what may
    be kept of it where a plan was made (an error is not kept); the target's layout kept in
    ``layouts`` where one is. ``values``: those at the family's displayed paths in the file."""
    from wmap.conversion import preview
    from wmap.render import plan_summary, plan_tables, print_ignored_fields, summary_line

    _quiet_transformers()
    result = preview(args.model, args.checkpoint, args.config, processor_file=args.processor_file, layouts=layouts)
    if isinstance(result, Failure):
        return _fail(result.failure()), None
    prepared = result.unwrap()
    plan = prepared.plan
    code = EXIT_OK if plan.is_clean() else EXIT_REFUSED
    stream = cast(TextIO, out)
    displayed = preview_cache.displayed_rows(prepared.ignored, values)
    if args.json:
        planned, ignored = plan.to_json(), [attrs.asdict(f) for f in prepared.ignored]
        text = json.dumps({**planned, "config_fields_ignored": ignored}, indent=2)
        print(text, file=stream)
        if displayed is None:
            return code, None
        for row, _ in displayed:  # kept with placeholders: shown again with the file's values as they are then
            ignored[row] = {**ignored[row], "value": preview_cache.placeholder(row)}
        kept = json.dumps({**planned, "config_fields_ignored": ignored}, indent=2)
        if any(json.dumps(preview_cache.placeholder(row)) in text for row, _ in displayed):
            return code, None  # a value spelled as a placeholder: not kept
        return code, preview_cache.Entry(kept + "\n", code, displayed=displayed)
    console = _console(file=stream)
    tables = plan_tables(plan)
    if tables.renderables:
        console.print(tables)
    before = out.mark()
    summary = plan_summary(plan)
    console.print(summary_line(_preview_title(args), *summary))  # the title is shown as text
    after = out.mark()
    print_ignored_fields(prepared.ignored, console)
    text = out.text()
    if displayed is None:
        return code, None
    rows = tuple((f.section, f.name, f.value, f.reason) for f in prepared.ignored) if displayed else ()
    return code, preview_cache.Entry(text[:before], code, summary, text[after:], rows, displayed)


CONVERT_STEPS = ("reading checkpoint", "planning", "applying plan", "writing output")


def _convert(args: argparse.Namespace) -> int:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from wmap.conversion import convert
    from wmap.render import print_plan

    _quiet_transformers()
    console = _console(stderr=True)

    def show_if_refused(plan: MappingPlan) -> None:
        if not plan.is_clean():
            print_plan(plan, console, title=f"{args.model}: conversion refused")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # on a terminal only: elsewhere (a pipe, a CI log) the progress line would leave an empty line behind
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        shown = escape(visible(args.model))  # the progress line renders markup
        task = progress.add_task(f"{shown}: starting", total=len(CONVERT_STEPS))

        def on_step(name: str) -> None:
            progress.update(task, description=f"{shown}: {name}", completed=CONVERT_STEPS.index(name))

        result = convert(
            args.model,
            args.checkpoint,
            args.out_dir,
            args.config,
            overwrite=args.overwrite,
            dtype=getattr(torch, args.dtype) if args.dtype else None,
            on_plan=show_if_refused,
            on_step=on_step,
            processor_file=args.processor_file,
            max_shard_size=args.max_shard_size,
            processor=args.processor,
            layouts=_kept_layouts(args),
        )
        progress.update(task, completed=len(CONVERT_STEPS))
    if isinstance(result, Failure):
        return _fail(result.failure())
    print(f"wrote {visible(str(result.unwrap()))}")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    import torch

    from wmap.plan import Accept
    from wmap.render import print_plan
    from wmap.way_back import export

    _quiet_transformers()
    accept = Accept(unrecoverable=frozenset(args.accept_unrecoverable))
    result = export(
        args.model,
        args.hf_dir,
        args.out_file,
        overwrite=args.overwrite,
        accept=accept,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        layouts=_kept_layouts(args),
    )
    if isinstance(result, Failure):
        error = result.failure()
        plan = getattr(error, "plan", None)
        if plan is not None:
            print_plan(plan, _console(stderr=True), title=f"{args.model}: export refused")
        code = _fail(error)
        unaccepted = [u.key for u in getattr(plan, "unrecoverable", ()) if u.key not in accept.unrecoverable]
        if unaccepted:
            flags = " ".join(f"--accept-unrecoverable {shlex.quote(visible(key))}" for key in unaccepted)
            print(f"wmap: to export without them: {flags}", file=sys.stderr)
        return code
    print(f"wrote {visible(str(result.unwrap()))}")
    _tell_what_was_left_out(args.model)
    return EXIT_OK


def _tell_what_was_left_out(model: str) -> None:
    from wmap.registry import resolve

    found = resolve(model)
    exporter = None if isinstance(found, Failure) else found.unwrap().export
    if exporter is not None and exporter.leaves_out:
        print(f"not written: {exporter.leaves_out}", file=sys.stderr)


def _verify(args: argparse.Namespace) -> int:
    from wmap.verification import verify

    _quiet_transformers()
    result = verify(
        args.model, args.checkpoint, args.out_dir, processor_file=args.processor_file, layouts=_kept_layouts(args)
    )
    if isinstance(result, Failure):
        return _fail(result.failure())
    found = result.unwrap()
    if found.ok:
        print(f"verified: all {found.checked} tensors in {visible(args.out_dir)} equal their sources")
        return EXIT_OK
    for key in found.differing:
        print(f"differs from its source: {visible(key)}", file=sys.stderr)
    for key in found.absent:
        print(f"absent from the output: {visible(key)}", file=sys.stderr)
    print(f"wmap: {len(found.differing)} differing, {len(found.absent)} absent of {found.checked}", file=sys.stderr)
    return EXIT_REFUSED


DESCRIPTION = (
    "Convert speech and audio model checkpoints between their original layout and Hugging Face "
    "transformers, with a plan of what is applied, skipped, refused, unused or missing before any tensor "
    "is touched."
)
EPILOG = (
    "exit codes: 0 success or a clean plan; 1 a plan that is not clean, or a refused conversion or export; "
    "2 bad usage or unreadable input; 74 the output (stdout) could not be written; 130 interrupted; "
    "70 a bug in wmap (please report it). On 1, 2, 70 and 130 nothing is written; on 74 the output was written "
    "and only its report was lost."
)
MODEL_HELP = "a family from 'wmap models', or MODULE:SPEC / path/to/file.py:SPEC naming a ModelSpec of your own"


def version() -> str:
    """wmap's version and those of what its results depend on (read from the installed metadata: nothing
    imported), as a bug report needs them."""
    wmap, *others = preview_cache.package_versions(("wmap", "transformers", "torch"))
    return f"{wmap.replace('=', ' ')} ({', '.join(others)}, python={sys.version.split()[0]})"


class _Version(argparse.Action):
    """``--version``: :func:`version`, read only when asked for (the metadata lookups cost 30 ms)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version())
        parser.exit()


def parser() -> argparse.ArgumentParser:
    """The argument parser (exits 2 on bad usage, as argparse does)."""
    top = argparse.ArgumentParser(prog="wmap", description=DESCRIPTION, epilog=EPILOG)
    top.add_argument("--version", action=_Version, nargs=0, help="show the versions a bug report needs")
    verbs = top.add_subparsers(dest="verb", required=True, metavar="{models,preview,convert,export,verify}")

    models = verbs.add_parser("models", help="list the model families", description="List the model families.")
    models.set_defaults(run=_models)

    pre = verbs.add_parser(
        "preview",
        help="dry run: show the mapping plan (names and shapes only)",
        description="Dry run: show what a conversion (or, with --reverse, an export) would do, from names and "
        "shapes only. Exits 0 if the plan is clean, 1 if not.",
        epilog=EPILOG,
    )
    pre.add_argument("model", help=MODEL_HELP)
    pre.add_argument(
        "checkpoint",
        nargs="?",
        help="the original checkpoint file (default: the family's bundled reference layout); with --reverse, "
        "the transformers directory to export",
    )
    pre.add_argument("--config", help="a transformers config JSON to use instead of the translated one")
    pre.add_argument("--json", action="store_true", help="print the plan as JSON")
    pre.add_argument(
        "--text-encoder",
        dest="processor_file",
        metavar="DIR",
        help="the transformers directory of the text encoder a family reads part of its source from (musicgen: "
        "the T5 the LM was conditioned on; default: the one its xp.cfg names, from the Hugging Face cache)",
    )
    pre.add_argument(
        "--no-cache",
        action="store_true",
        help="plan again even if the same preview was kept (a preview is kept, and shown again without importing "
        "torch, while the checkpoint's names, shapes and config, the family and the packages are unchanged)",
    )
    pre.add_argument(
        "--reverse",
        action="store_true",
        help="show the plan of 'wmap export': CHECKPOINT is a transformers directory, mapped back to the original",
    )
    pre.set_defaults(run=_preview)

    con = verbs.add_parser(
        "convert",
        help="convert a checkpoint into a save_pretrained directory",
        description="Convert an original checkpoint into a directory transformers' from_pretrained loads. "
        "Refused (exit 1) unless the plan is clean; the directory is written whole or not at all.",
        epilog=EPILOG,
    )
    con.add_argument("model", help=MODEL_HELP)
    con.add_argument("checkpoint", help="the original checkpoint file (.pt, .ckpt, .bin or .safetensors)")
    con.add_argument("out_dir", help="the directory to write (must not exist, unless --overwrite)")
    con.add_argument("--config", help="a transformers config JSON to use instead of the translated one")
    con.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT_DIR (only a model directory, never the current one)",
    )
    con.add_argument("--dtype", choices=DTYPES, help="cast floating tensors")
    con.add_argument(
        "--max-shard-size",
        default="50GB",
        metavar="SIZE",
        help="split the weights into shards of at most SIZE (e.g. 2GB), with an index (default: 50GB, as transformers)",
    )
    con.add_argument(
        "--dict",
        "--tokenizer",
        "--text-encoder",
        dest="processor_file",
        metavar="FILE",
        help="the tokenizer's source where the checkpoint lacks it: CTC families, fairseq's dict.ltr.txt; "
        "wav2vec2_mbart, the sentencepiece model; speech_to_text, the sentencepiece model with fairseq's "
        "dictionary beside it (spm.model, spm.txt); whisper, openai's gpt2.tiktoken or multilingual.tiktoken "
        "(default: the installed openai-whisper's); musicgen and audiogen, the T5's transformers directory "
        "(default: the one the LM's xp.cfg names, from the Hugging Face cache)",
    )
    con.add_argument(
        "--no-processor",
        dest="processor",
        action="store_false",
        help="write the weights and configs alone, no tokenizer or feature extractor (a CTC checkpoint without "
        "its dictionary)",
    )
    con.add_argument(
        "--no-cache",
        action="store_true",
        help="build the target model even if its layout was kept (a layout is kept per model class, config and "
        "package versions, by preview and convert, and spares building the model and importing its code)",
    )
    con.set_defaults(run=_convert)

    exp = verbs.add_parser(
        "export",
        help="a transformers directory back into the original's own format",
        description="Write a transformers directory back as the original implementation's checkpoint (and the "
        "files its loader reads beside it), all or nothing. Refused (exit 1) unless the reverse plan is clean.",
        epilog=EPILOG,
    )
    exp.add_argument("model", help=MODEL_HELP)
    exp.add_argument(
        "hf_dir", help="the transformers directory (config.json and model.safetensors, shards or pytorch_model.bin)"
    )
    exp.add_argument("out_file", help="the checkpoint file to write (must not exist, unless --overwrite)")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing OUT_FILE (and its companion files)")
    exp.add_argument("--dtype", choices=DTYPES, help="cast floating tensors (default: the directory's dtype)")
    exp.add_argument(
        "--accept-unrecoverable",
        action="append",
        default=[],
        metavar="KEY",
        help="export without KEY, a key of the original the directory cannot give back (repeat for each)",
    )
    exp.add_argument(
        "--no-cache",
        action="store_true",
        help="build the model the directory's config describes even if its layout was kept (as for convert)",
    )
    exp.set_defaults(run=_export)

    ver = verbs.add_parser(
        "verify",
        help="check a converted directory's tensors against the source checkpoint",
        description="Check, tensor by tensor and bit for bit, that a converted directory holds what its source "
        "checkpoint maps to. Exits 0 if all equal, 1 if not.",
        epilog=EPILOG,
    )
    ver.add_argument("model", help=MODEL_HELP)
    ver.add_argument("checkpoint", help="the original checkpoint the directory was converted from")
    ver.add_argument("out_dir", help="the converted directory")
    ver.add_argument(
        "--text-encoder",
        dest="processor_file",
        metavar="DIR",
        help="where the family reads part of its source (musicgen: the T5 directory it was converted with; "
        "default: the one the LM's xp.cfg names, from the Hugging Face cache)",
    )
    ver.add_argument(
        "--no-cache",
        action="store_true",
        help="build the target model even if its layout was kept (as for convert)",
    )
    ver.set_defaults(run=_verify)
    return top


EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_IO = 74  # EX_IOERR: stdout could not be written (a full disk)
EXIT_PIPE = 141  # 128 + SIGPIPE, as a shell pipeline expects


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wmap`` console script."""
    args = parser().parse_args(argv)
    previous = {}
    for stop in (signal.SIGTERM, signal.SIGHUP):  # being stopped cleans up as Ctrl-C does
        with contextlib.suppress(ValueError, OSError):  # not the main thread: leave them alone
            previous[stop] = signal.signal(stop, _interrupt)
    try:
        return _run(args)
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def run() -> NoReturn:
    """The ``wmap`` command (``python -m wmap``, the console script): :func:`main`, then the process ends
    as soon as its work is done. The exit handlers run and the standard streams are flushed, as at any
    exit; what is skipped is the interpreter's teardown, which frees every object of torch's and
    transformers' modules one by one: about a second after a command that built a model, which the user
    would wait for and nothing needs (the files are written and closed, the kernel holds their pages)."""
    try:
        code = main()
    except SystemExit as stop:  # argparse: --help, or bad usage (its message is printed)
        code = stop.code if isinstance(stop.code, int) else _printed(stop.code)
    atexit._run_exitfuncs()  # logging's shutdown, weakref finalizers, and any handler a caller registered
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _printed(message: object) -> int:
    """``sys.exit(message)``'s meaning: the message on stderr, status 1 (0 for ``None``)."""
    if message is None:
        return 0
    print(message, file=sys.stderr)
    return 1


def _run(args: argparse.Namespace) -> int:
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe or a full disk shows here, not at exit
    except BrokenPipeError:  # ``wmap preview ... | head -1``: the reader has what it wanted
        _stdout_to_devnull()
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("wmap: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as error:
        if error.errno is None or sys.stdout.closed:
            raise
        _stdout_to_devnull()
        print(f"wmap: error: cannot write the output ({visible(error.strerror or str(error))})", file=sys.stderr)
        return EXIT_IO
    except Exception as error:  # a bug: the library returns errors as values; still one line, no traceback
        detail = " ".join(str(error).split())[:300]
        print(f"wmap: internal error (please report it): {type(error).__name__}: {visible(detail)}", file=sys.stderr)
        return EXIT_INTERNAL
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    run()
