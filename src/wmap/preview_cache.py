"""What ``wmap preview`` printed, kept and shown again when nothing it depends on has changed, without
importing torch or transformers.

A preview is a pure function of: the family's rules (wmap's own code: only shipped families are
kept), the checkpoint's names, shapes, dtypes and metadata (for a torch zip all in its ``data.pkl``,
read here as its structure with every class a stand-in (:mod:`wmap.pickle_structure`), what the
family never reads (a trainer's bookkeeping and training settings) but for its shape; for safetensors all in its header,
read as bytes; for a folder, as MusicGen's and the T5 named beside it are, each file so, or by its bytes),
the ``--config`` file, the
versions of the packages that make the target's layout (transformers, torch), and how the output is
shown (``--json``, the console's width and colours); and of the checkpoint's path only through the
summary line that names it. The key is a digest of all of them but the path; the entry is the printed
text, with the summary line as its parts (:class:`Entry`, shown again naming the file as it is now),
and the exit code. Caching only the target layout would not spare the imports: the
config translation itself builds transformers' config classes. Entries live in ``WMAP_CACHE_DIR``
(default ``$XDG_CACHE_HOME/wmap/previews``), at most :data:`MAX_ENTRIES`, the oldest removed first;
any problem with the cache (unwritable, corrupt) means it is not used, never that a preview fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from wmap.errors import BadConfig
from wmap.pickle_structure import Unkeyable, read, values_at, written
from wmap.yaml_text import MAX_DEPTH, read_config

if TYPE_CHECKING:
    from wmap.config_fields import IgnoredField

MAX_ENTRIES = 256
MAX_STRUCTURE = 64 << 20
"""The most bytes of a checkpoint's structure (a torch zip's ``data.pkl``, a safetensors header) read
for the key; a file whose structure is larger is not cached."""
PACKAGES = ("transformers", "torch", "safetensors", "rich", "returns", "attrs")


@attrs.frozen
class Entry:
    """A preview as printed: its text and exit code. Where the text names the checkpoint (its summary
    line), ``text`` is what comes before that line, ``summary`` the line's verdict, style and counts
    (:func:`wmap.render.plan_summary`), and ``after`` what follows: the line is shown again with the
    checkpoint named as it is now, so that a preview is kept for a file's structure, wherever it is."""

    text: str
    code: int
    summary: tuple[str, str, str] | None = None
    after: str = ""
    ignored: tuple[tuple[str, str, str, str], ...] = ()
    displayed: tuple[tuple[int, str], ...] = ()
    """Where the preview shows a value read at one of the family's displayed paths (counted in the key
    by its shape alone): the ignored config fields' rows (section, field, value, reason) and which row
    shows which path. The value is read again from the file as it is now, and the rows are shown
    again in place of ``after``; in JSON, ``text`` holds :func:`placeholder` where the value goes."""


def placeholder(row: int) -> str:
    """What stands in a kept JSON preview for the value of the ignored field ``row``."""
    return f"\0wmap displayed {row}\0"


def cache_dir() -> Path:
    """Where entries are kept."""
    configured = os.environ.get("WMAP_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wmap" / "previews"


@attrs.frozen
class Key:
    """What a preview is kept under (``digest``), and the values at the family's displayed paths in
    the checkpoint (counted in the digest by their shape alone), read in the same reading."""

    digest: str
    displayed: dict[str, object] = attrs.field(factory=dict)


def _structure(
    path: str, unread: Iterable[str], displayed: Iterable[str], texts: Iterable[str] = ()
) -> tuple[bytes, dict[str, object]] | None:
    """What a preview reads of a checkpoint file (:func:`_file_structure`) or folder (MusicGen's, the T5
    named beside it: :func:`_folder_structure`; no displayed paths there)."""
    if os.path.isdir(path):
        return None if tuple(displayed) else _folder_structure(path, unread, texts)
    return _file_structure(path, unread, displayed, texts)


WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".th", ".ckpt")
"""The files of a folder read as weights: by their structure, not their bytes."""
MAX_FILES = 1000


def _folder_structure(
    path: str, unread: Iterable[str], texts: Iterable[str] = ()
) -> tuple[bytes, dict[str, object]] | None:
    """A folder's files (not hidden ones), each by its name and what a preview reads of it: a weights
    file (:data:`WEIGHT_FILES`) by its structure, as a checkpoint file's; any other by :func:`_whole`.
    ``None`` for a subfolder, a weights file whose structure is not read here, or too many files."""
    parts: list[bytes] = []
    try:
        names = sorted(name for name in os.listdir(path) if not name.startswith("."))
        if len(names) > MAX_FILES:
            return None
        for name in names:
            where = os.path.join(path, name)
            if not os.path.isfile(where):
                return None
            found = _file_structure(where, unread, (), texts) if name.endswith(WEIGHT_FILES) else _whole(where)
            if found is None:
                return None
            for part in (name.encode("utf-8", "surrogateescape"), found[0]):
                parts.append(struct.pack("<Q", len(part)) + part)
    except OSError:
        return None
    return b"".join(parts), {}


def _whole(path: str) -> tuple[bytes, dict[str, object]]:
    """A file a preview may read whole (a config, a tokenizer's files) by its bytes; a bigger one (another
    framework's weights, ``tf_model.h5``, which no family reads) by its size and modification time."""
    found = os.stat(path)
    if found.st_size > MAX_STRUCTURE:
        return f"{found.st_size}:{found.st_mtime_ns}".encode(), {}
    with open(path, "rb") as file:
        return file.read(MAX_STRUCTURE + 1), {}


def _file_structure(
    path: str, unread: Iterable[str], displayed: Iterable[str], texts: Iterable[str] = ()
) -> tuple[bytes, dict[str, object]] | None:
    """What a checkpoint's preview reads of it: a safetensors header, or a torch zip's ``data.pkl`` (its
    structure, :func:`wmap.pickle_structure.written`: what the family never reads (``unread``) or only
    shows (``displayed``) but for their shape; the YAML ``texts`` it keeps by theirs, read as the family
    reads them, :func:`_texts_read`) and its records' names and sizes, with the values at the
    ``displayed`` paths; ``None`` for anything else (not kept), and for a file that holds no tensor (its
    preview reads the weights it names elsewhere, which are not counted here)."""
    shown_only = tuple(displayed)
    try:
        with open(path, "rb") as file:
            head = file.read(8)
            if len(head) == 8 and not head.startswith(b"PK"):
                (length,) = struct.unpack("<Q", head)
                if length > MAX_STRUCTURE:
                    return None
                header = file.read(length)
                return (head + header, {}) if header.lstrip().startswith(b"{") and len(header) == length else None
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            pickles = [info for info in infos if info.filename.endswith("/data.pkl")]
            if len(pickles) != 1 or pickles[0].file_size > MAX_STRUCTURE:
                return None
            others = [info for info in infos if info is not pickles[0]]  # the pickle counts by its structure
            if not any("/data/" in info.filename for info in others):
                return None  # no tensor: it names weights kept elsewhere (audiocraft's pretrained reference)
            records = json.dumps([(info.filename.split("/", 1)[-1], info.file_size) for info in others]).encode()
            loaded = _texts_read(read(archive.read(pickles[0])), tuple(texts))
            pickled = written(loaded, (*unread, *shown_only), texts)
            return pickled.encode("utf-8", "surrogatepass") + b"\0" + records, values_at(loaded, shown_only)
    except (OSError, ValueError, zipfile.BadZipFile, struct.error, Unkeyable):
        return None


def _texts_read(loaded: object, texts: tuple[str, ...]) -> object:
    """``loaded`` with the YAML text at each of its top-level ``texts`` read as its structure, as the
    family reads it (:func:`wmap.yaml_text.read_config`, interpolations resolved; a config pickled as a
    mapping too), so that the unread paths inside it (``xp.cfg.optim``) count by their shape; what does
    not read counts as it is."""
    if not isinstance(loaded, dict):
        return loaded
    parsed = {text: read_config(loaded[text], text) for text in texts if isinstance(loaded.get(text), str | dict)}
    if not parsed:
        return loaded
    return {**loaded, **{text: _sorted(found) for text, found in parsed.items() if not isinstance(found, BadConfig)}}


def _sorted(value: object, depth: int = 0) -> object:
    """A YAML mapping's keys in one order (a mapping's order says nothing: the same config dumped again
    counts as it is)."""
    if depth > MAX_DEPTH:  # read_config's own bound: deeper is not what it gives
        raise Unkeyable("too deep")
    if isinstance(value, dict):
        return {key: _sorted(value[key], depth + 1) for key in sorted(value, key=repr)}
    if isinstance(value, list):
        return [_sorted(item, depth + 1) for item in value]
    return value


def displayed_rows(ignored: Sequence[IgnoredField], values: Mapping[str, object]) -> tuple[tuple[int, str], ...] | None:
    """Which of a preview's ignored config fields shows the value at which of the family's displayed
    paths (``values``: those of the file): the row of the field of that name showing that value;
    ``None`` where that is more than one row (the preview is then not kept)."""
    from wmap.config_fields import shown

    rows = []
    for path, value in values.items():
        name, text = path.rsplit(".", 1)[-1], shown(value)
        matching = [i for i, field in enumerate(ignored) if field.name == name and field.value == text]
        if len(matching) > 1:
            return None
        rows += [(matching[0], path)] if matching else []
    return tuple(rows)


def _package_files() -> Iterable[str]:
    """wmap's own files (its rules, tables and reference layouts) by name, size and modification time."""
    root = Path(__file__).parent
    for folder, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            if name.endswith((".py", ".json")):
                stat = os.stat(os.path.join(folder, name))
                yield f"{os.path.relpath(os.path.join(folder, name), root)}:{stat.st_size}:{stat.st_mtime_ns}"


def package_versions(packages: Iterable[str] = PACKAGES) -> list[str]:
    """``name=version`` of each package (``none`` where it is not installed): what a kept result
    depends on besides its inputs."""
    found = []
    for package in packages:
        try:
            found.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package}=none")
    return found


def key(
    family: str,
    checkpoint: str | None,
    config: str | None,
    shown: dict[str, Any],
    shipped: Iterable[str],
    unread: Iterable[str] = (),
    displayed: Iterable[str] = (),
    beside: str | None = None,
    texts: Iterable[str] = (),
) -> Key | None:
    """The digest a preview is kept under, or ``None`` where it cannot be kept (a family not shipped
    with wmap, a checkpoint or config file whose structure is not read here). ``unread``: what the
    family never reads of the checkpoint (dotted paths), of which only the shape counts (another step
    of a training run, or another run of the same model with other settings, is then shown again);
    ``displayed``: what its preview only shows (dotted paths to plain values), counted by shape too,
    and read (:attr:`Key.displayed`) to be shown again as the file has it. ``beside``: a file or folder
    the preview reads besides the checkpoint (MusicGen's ``--text-encoder``), counted as a checkpoint
    is (not where it is: the preview does not name it). ``texts``: top-level keys of the checkpoint
    holding YAML text (audiocraft's ``xp.cfg``), read so that ``unread`` can name paths inside it."""
    if family not in set(shipped):
        return None
    digest = hashlib.sha256()
    parts: list[bytes] = [family.encode(), json.dumps(shown, sort_keys=True).encode()]
    parts += [line.encode() for line in (*_package_files(), *package_versions(), sys.version)]
    values: dict[str, object] = {}
    if checkpoint is not None:
        found = _structure(checkpoint, unread, displayed, texts)
        if found is None:
            return None
        values = found[1]
        parts.append(found[0])  # not where it is: the summary line names it as it is shown (:class:`Entry`)
    if beside is not None:
        found = _structure(beside, unread, (), texts)
        if found is None:
            return None
        parts += [b"beside", found[0]]
    if config is not None:
        try:
            with open(config, "rb") as file:
                parts.append(file.read(MAX_STRUCTURE + 1))
        except OSError:
            return None
        if len(parts[-1]) > MAX_STRUCTURE:
            return None
    for part in parts:
        digest.update(struct.pack("<Q", len(part)) + part)
    return Key(digest.hexdigest(), values)


def load(name: str) -> Entry | None:
    """The entry kept under ``name``, if there is a sound one."""
    try:
        data = json.loads((cache_dir() / f"{name}.json").read_text())
        line = data["summary"]
        if line is not None and len(line) != 3:
            return None
        summary = None if line is None else (str(line[0]), str(line[1]), str(line[2]))
        ignored = tuple((str(a), str(b), str(c), str(d)) for a, b, c, d in data["ignored"])
        displayed = tuple((int(row), str(path)) for row, path in data["displayed"])
        text = str(data["text"])
        if summary is not None and any(not 0 <= row < len(ignored) for row, _ in displayed):
            return None  # as text, a row of the ignored fields; in JSON, a placeholder in the text
        if summary is None and any(json.dumps(placeholder(row)) not in text for row, _ in displayed):
            return None
        return Entry(text, int(data["code"]), summary, str(data["after"]), ignored, displayed)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(name: str, entry: Entry) -> None:
    """Keep ``entry`` (written whole, then moved in), and remove the oldest beyond :data:`MAX_ENTRIES`."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as file:
            json.dump(attrs.asdict(entry), file)
        os.replace(file.name, folder / f"{name}.json")
        kept = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
        for old in kept[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError:
        return


@attrs.define
class Tee:
    """A text stream that writes to ``stream`` and keeps what it wrote (what rich and print see is
    ``stream``'s terminal-ness, so the kept text is what was shown)."""

    stream: TextIO
    kept: list[str] = attrs.field(factory=list)

    def write(self, text: str) -> int:
        self.kept.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", None) or "utf-8"

    def text(self) -> str:
        return "".join(self.kept)

    def mark(self) -> int:
        """How much has been written: where the next write starts in :meth:`text`."""
        return sum(map(len, self.kept))
