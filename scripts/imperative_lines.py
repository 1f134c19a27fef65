"""Lines of imperative config and export code, per module, at git revisions (issue #26's measure).

Counted: code lines (no blank, comment or docstring lines) in the bodies of functions, lambdas
included where they sit inside a function, of the family modules and the shared fairseq modules,
except functions that build rules (their return annotation names ``Transform``): the rules are
tables made into transforms, not config or export code. Nor processor code (tokenizers, feature
extractors, generation settings: :data:`PROCESSORS` by module, :data:`PROCESSOR_FUNCTIONS` where it
sits in a family or export module), in every revision alike. Module-level tables are data and not
counted. A second reading also leaves out functions that return a ``ModelSpec`` or an ``Exporter``
(a spec's keyword declaration, left out where it stands at module level); what they nest is still
counted. Usage: ``python scripts/imperative_lines.py REV [REV ...]`` (``WORKTREE``: the files as they are).
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize

FAMILY_DIR = "src/wmap/models/"
NOT_FAMILIES = {"__init__.py", "base.py"}
SHARED = (
    "src/wmap/fairseq.py",
    "src/wmap/fairseq/",
    "src/wmap/models/fairseq_export.py",
    "src/wmap/models/ctc_processor.py",
)
NOT_SHARED = {"src/wmap/fairseq/__init__.py", "src/wmap/fairseq/dictionary.py", "src/wmap/fairseq/rules.py"}


def _files(rev: str) -> list[str]:
    if rev == "WORKTREE":
        listed = subprocess.run(["git", "ls-files", "src/wmap"], capture_output=True, text=True)
        return [f for f in listed.stdout.split() if f.endswith(".py")]
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "src/wmap"], capture_output=True, text=True)
    return [f for f in listed.stdout.split() if f.endswith(".py")]


def _code_lines(source: str) -> set[int]:
    """Lines holding a token other than comments, newlines and docstrings."""
    lines: set[int] = set()
    docstrings = {
        n.body[0].lineno
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
        and isinstance(n.body[0].value.value, str)
    }
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            continue
        if tok.type == tokenize.STRING and tok.start[0] in docstrings:
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


RULES = ("Transform", "MakeRule")
SPECS = ("ModelSpec", "Exporter")
"""What a function returning a spec builds: a declaration, as a rule table is (the second reading)."""


def imperative(source: str, excluded: frozenset[str] = frozenset(), built: tuple[str, ...] = RULES) -> int:
    """Code lines in the bodies of top-level and nested functions that do not build what ``built``
    names (by return annotation; functions they nest are counted on their own), outside the functions
    named in ``excluded`` (and what they nest)."""
    tree = ast.parse(source)
    code = _code_lines(source)
    counted: set[int] = set()
    left_out: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        body = range(node.body[0].lineno, (node.end_lineno or node.lineno) + 1)
        returns = ast.unparse(node.returns) if node.returns else ""
        if node.name in excluded:
            left_out.update(body)
        elif not any(kind in returns for kind in built):
            counted.update(line for line in body if line in code)
    return len(counted - left_out)


def measure(rev: str, built: tuple[str, ...] = RULES) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in _files(rev):
        name = path.rsplit("/", 1)[1]
        family = path.startswith(FAMILY_DIR) and path.count("/") == 3 and name not in NOT_FAMILIES
        shared = path.startswith(SHARED) and path not in NOT_SHARED
        if not (family or shared):
            continue
        if path in ("src/wmap/models/fairseq_export.py", "src/wmap/models/ctc_processor.py"):
            family = False
        if rev == "WORKTREE":
            with open(path) as file:
                source = file.read()
        else:
            source = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True).stdout
        excluded = PROCESSOR_FUNCTIONS.get(path.removeprefix("src/wmap/"), frozenset())
        found[("shared " if not family else "") + path.removeprefix("src/wmap/")] = imperative(source, excluded, built)
    return found


def main(revs: list[str]) -> None:
    table = {rev: measure(rev) for rev in revs}
    names = sorted({n for t in table.values() for n in t})
    print("| module | " + " | ".join(revs) + " |")
    print("|---|" + "---|" * len(revs))
    for name in names:
        print(f"| {name} | " + " | ".join(str(table[r].get(name, "-")) for r in revs) + " |")
    for kind in ("", "shared "):
        totals = [sum(v for n, v in table[r].items() if n.startswith("shared ") == bool(kind)) for r in revs]
        print(f"| **total {kind or 'family '}** | " + " | ".join(map(str, totals)) + " |")
    # the scope: the modules that existed at its filing, config and export only (no processors)
    _scope_rows(table, revs, "")
    _scope_rows({rev: measure(rev, RULES + SPECS) for rev in revs}, revs, ", spec declarations as data")


def _scope_rows(table: dict[str, dict[str, int]], revs: list[str], reading: str) -> None:
    baseline = set(table[revs[0]])
    for kind in ("", "shared "):
        totals = [
            sum(
                v
                for n, v in table[r].items()
                if n.startswith("shared ") == bool(kind) and _same_module(n, baseline) and not _processor(n)
            )
            for r in revs
        ]
        print(
            f"| **config and export, {kind or 'family '}(modules of {revs[0]}{reading})** | "
            + " | ".join(map(str, totals))
            + " |"
        )


PROCESSORS = ("whisper_processor.py", "wav2vec2_mbart_processor.py", "ctc_processor.py", "fairseq/processor.py")
"""Modules that write processor files (tokenizers, feature extractors): neither config nor export code."""

PROCESSOR_FUNCTIONS = {
    "models/fairseq_export.py": frozenset({"dictionary_text", "feature_settings"}),
    "fairseq/export.py": frozenset({"vocabulary_dictionary", "_settings", "feature_settings"}),
    "models/wav2vec2_mbart.py": frozenset({"generation_config", "extras", "load_tokenizer"}),
    "models/encodec.py": frozenset({"feature_extractor_files"}),
}
"""Processor code in family and export modules (at 487674b, or still), left out in every revision as the
processor modules are: the dictionary and feature settings of the way back, the mBART tokenizer and
generation settings, EnCodec's feature extractor files."""

MOVED = {"shared fairseq/config.py": "shared fairseq.py", "shared fairseq/export.py": "shared models/fairseq_export.py"}
"""Shared modules that were split or moved since: counted where they came from (``fairseq/family.py``
took code from the family modules, so it is counted with the shared ones)."""


def _processor(name: str) -> bool:
    return name.endswith(PROCESSORS)


def _same_module(name: str, baseline: set[str]) -> bool:
    return name in baseline or name.startswith("shared ") or MOVED.get(name, "") in baseline


if __name__ == "__main__":
    main(sys.argv[1:] or ["HEAD"])
