"""The ``wmap`` command as a user runs it, on real files, every exit code.

In process (``main(argv)`` with captured output) where the process boundary is
not the point; as a subprocess where it is: the installed script, a disk that
fills up (``RLIMIT_FSIZE``), the originals made unimportable, start-up imports.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import EncodecModel

from tests.helpers import reference_checkpoint, reference_state
from tests.originals import write_letter_dictionary


def wmap(*args: str) -> subprocess.CompletedProcess[str]:
    """``wmap ARGS`` in this process: the exit code and what it printed (argparse's exits included)."""
    from wmap.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 2
    return subprocess.CompletedProcess(["wmap", *args], code, out.getvalue(), err.getvalue())


def wmap_process(*args: str, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``wmap`` script (or the module, when not installed as a script)."""
    script = shutil.which("wmap", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "wmap.cli"]

    def limit() -> None:  # a disk that fills up: writes past the limit fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if limit_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=300, env=env, preexec_fn=limit, check=False
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_checkpoint(tmp_path_factory.mktemp("ckpt") / "encodec_32khz.pt")


RUN = """
import atexit, sys
class Teardown:
    def __del__(self):
        print("torn down", file=sys.stderr)
kept = Teardown()  # a module global: freed only by the interpreter's teardown
atexit.register(lambda: print("exit handler ran", file=sys.stderr))
from wmap.cli import run
run()
"""


@pytest.mark.parametrize("args", [("preview", "encodec_48khz"), ("models",), ("no-such-command",)])
def test_the_command_ends_without_the_interpreter_s_teardown(args: tuple[str, ...]) -> None:
    """``python -m wmap`` (``run``) exits with main's code and all its output, after the exit handlers,
    without tearing the interpreter down (a module global is never freed): the second a command that
    built a model would otherwise spend freeing torch's and transformers' objects."""
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    expected = wmap(*args)
    assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout)
    assert done.stderr.splitlines()[-1] == "exit handler ran" and "torn down" not in done.stderr
    assert expected.returncode == (2 if args[0] == "no-such-command" else 0)


@pytest.mark.parametrize("args", [("preview", "encodec_48khz"), ("preview", "encodec_48khz", "--json"), ("models",)])
def test_a_reader_that_closed_the_pipe_gets_the_pipe_s_code_not_a_plan_verdict(args: tuple[str, ...]) -> None:
    """``wmap preview ... | head -1``: the reader has what it wanted. Exit 141 (128 + SIGPIPE, what a
    shell expects), nothing on stderr; not 1, which says the plan is not clean (rich's own answer to a
    closed pipe, before the console said otherwise). The reader is gone before anything is written."""
    read, write = os.pipe()
    run = subprocess.Popen([sys.executable, "-m", "wmap", *args], stdout=write, stderr=subprocess.PIPE, text=True)
    os.close(write)
    os.close(read)
    _, err = run.communicate(timeout=300)
    assert (run.returncode, err) == (141, "")


def test_version_names_what_a_report_needs() -> None:
    from importlib import metadata

    result = wmap("--version")
    assert result.returncode == 0 and result.stdout.startswith(f"wmap {metadata.version('wmap')} (")
    assert f"transformers={metadata.version('transformers')}" in result.stdout and "torch=" in result.stdout


def test_models_lists_every_family() -> None:
    result = wmap_process("models")
    assert result.returncode == 0
    for name in ("encodec_24khz", "encodec_48khz", "data2vec_audio_ctc", "distilhubert", "wav2vec2_mbart"):
        assert name in result.stdout


def test_preview_of_the_bundled_layout_is_clean() -> None:
    result = wmap("preview", "encodec_48khz")
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout and "encoder.model.{0,3,6,9,12,15}.conv.norm.weight" in result.stdout


def test_preview_json_has_every_category(checkpoint: Path) -> None:
    result = wmap("preview", "encodec_32khz", str(checkpoint), "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    expected = {"applied", "skipped", "refused", "unused", "missing", "conflicts", "shape_mismatches"}
    assert expected <= plan.keys()
    assert plan["clean"] is True and len(plan["applied"]) == 116


def test_preview_of_an_unclean_plan_exits_1(checkpoint: Path) -> None:
    result = wmap("preview", "encodec_24khz", str(checkpoint), "--json")
    assert result.returncode == 1
    plan = json.loads(result.stdout)
    assert plan["clean"] is False and plan["shape_mismatches"] and plan["missing"]


def test_convert_writes_a_loadable_directory(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = wmap("convert", "encodec_32khz", str(checkpoint), str(out), "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress line off a terminal (it used to leave an empty line behind)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    loaded: Any = EncodecModel.from_pretrained(out, output_loading_info=True)
    model, info = loaded
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.encoder.layers[0].conv.bias.dtype == torch.float16
    assert wmap("verify", "encodec_32khz", str(checkpoint), str(out)).returncode == 0
    assert not list(tmp_path.glob(".hf.wmap-*")), "staging directory left behind"


def test_convert_refuses_an_unclean_plan_with_the_table(checkpoint: Path, tmp_path: Path) -> None:
    result = wmap("convert", "encodec_24khz", str(checkpoint), str(tmp_path / "hf"))
    assert result.returncode == 1
    assert "conversion refused" in result.stderr and "shape mismatch" in result.stderr
    assert not (tmp_path / "hf").exists()


def test_existing_output_is_never_touched_without_overwrite(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = wmap("convert", "encodec_32khz", str(checkpoint), str(out))
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert wmap("convert", "encodec_32khz", str(checkpoint), str(out), "--overwrite").returncode == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_a_failure_in_the_middle_of_writing_leaves_nothing(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    result = wmap_process("convert", "encodec_32khz", str(checkpoint), str(out), limit_file_bytes=1_000_000)
    assert result.returncode == 2 and "could not write output" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".hf.wmap-*"))

    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = wmap_process(
        "convert", "encodec_32khz", str(checkpoint), str(out), "--overwrite", limit_file_bytes=1_000_000
    )
    assert result.returncode == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".hf.wmap-*"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preview", "nope"], "known models: audiogen, dac, data2vec2_audio, "),
        (["preview", "encodec_24khz", "/no/such/file.pt"], "no such file"),
        (["convert", "encodec_24khz"], "usage"),
        (["frobnicate"], "usage"),
    ],
)
def test_bad_usage_and_input_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = wmap(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unwritable_output_location(checkpoint: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = wmap("convert", "encodec_32khz", str(checkpoint), str(blocker / "out"))
    assert result.returncode == 2 and "could not write output" in result.stderr
    assert blocker.read_text() == "not a directory"


def test_a_checkpoint_of_another_family_exits_2(tmp_path: Path) -> None:
    other = reference_checkpoint(tmp_path / "distilhubert.ckpt", "distilhubert")
    state = torch.load(other)["model"]
    torch.save(state, other)
    result = wmap("preview", "encodec_24khz", str(other))
    assert result.returncode == 2 and "another family" in result.stderr


def test_config_file_overrides_the_translated_config(checkpoint: Path, tmp_path: Path) -> None:
    from wmap.models.encodec import preset_config

    config = preset_config("encodec_32khz")
    config.num_lstm_layers = 1  # a config that does not fit the checkpoint: the plan must say so
    config.to_json_file(tmp_path / "config.json")
    result = wmap("preview", "encodec_32khz", str(checkpoint), "--config", str(tmp_path / "config.json"), "--json")
    assert result.returncode == 1
    assert any("lstm.weight_ih_l1" in key for key in json.loads(result.stdout)["unused"])
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    result = wmap("preview", "encodec_32khz", str(checkpoint), "--config", str(bad))
    assert result.returncode == 2 and "broken.json" in result.stderr


def test_verify_finds_a_tampered_tensor(checkpoint: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    out = tmp_path / "hf"
    assert wmap("convert", "encodec_32khz", str(checkpoint), str(out)).returncode == 0
    result = wmap("verify", "encodec_32khz", str(checkpoint), str(out))
    assert result.returncode == 0 and "all 116 tensors" in result.stdout
    weights = load_file(out / "model.safetensors")
    weights["encoder.layers.0.conv.bias"] = weights["encoder.layers.0.conv.bias"] + 1
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    result = wmap("verify", "encodec_32khz", str(checkpoint), str(out))
    assert result.returncode == 1 and "encoder.layers.0.conv.bias" in result.stderr


@pytest.mark.parametrize("command", ["verify", "export", "preview --reverse"])
def test_a_converted_directory_that_is_not_one_is_named_as_such(checkpoint: Path, tmp_path: Path, command: str) -> None:
    """No such directory, a file, an empty one: each named as what it is, not as a missing ``--config``."""
    (tmp_path / "empty").mkdir()
    for where, problem in ((tmp_path / "none", "no such directory"), (checkpoint, "not a directory")):
        name, *more = command.split()
        args = (name, "encodec_32khz", *((str(checkpoint),) if name == "verify" else ()), str(where), *more)
        args += (str(tmp_path / "out.pt"),) if name == "export" else ()
        result = wmap(*args)
        assert result.returncode == 2 and problem in result.stderr and "save_pretrained directory" in result.stderr
        assert "--config" not in result.stderr and not (tmp_path / "out.pt").exists()
    empty = wmap("verify", "encodec_32khz", str(checkpoint), str(tmp_path / "empty"))
    assert empty.returncode == 2 and "holds none of model.safetensors" in empty.stderr


@pytest.mark.parametrize("model", ["data2vec_audio_ctc", "distilhubert"])
def test_converting_needs_no_original_package(model: str, tmp_path: Path) -> None:
    """fairseq, s3prl and encodec are made unimportable; the conversion still works."""
    checkpoint = reference_checkpoint(tmp_path / "original.pt", model)
    vocabulary = ["--dict", str(write_letter_dictionary(tmp_path))] if model.endswith("_ctc") else []
    code = (
        "import sys; sys.modules.update(dict.fromkeys(['fairseq', 's3prl', 'encodec'])); "
        "from wmap.cli import main; "
        f"sys.exit(main(['convert', {model!r}, {str(checkpoint)!r}, {str(tmp_path / 'hf')!r}, *{vocabulary!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hf" / "model.safetensors").exists()


def test_preview_lists_the_config_fields_it_does_not_carry_over(tmp_path: Path) -> None:
    result = wmap("preview", "data2vec_audio_ctc")
    assert result.returncode == 0, result.stderr
    assert "config fields not carried over" in result.stdout and "freeze_finetune_updates" in result.stdout
    result = wmap("preview", "data2vec_audio_ctc", "--json")
    ignored = {f["name"]: f["reason"] for f in json.loads(result.stdout)["config_fields_ignored"]}
    assert "training" in ignored["freeze_finetune_updates"]


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("data2vec_audio", "dropout", "abc"),
        ("data2vec_audio", "conv_pos", "wide"),
        ("data2vec_audio", "encoder_layers", 10**9),
        ("data2vec_audio", "encoder_layers", 3),  # valid, but not what the file holds
        ("data2vec_audio", "conv_feature_layers", "[(512, 10, 5)] * 3"),
        ("distilhubert", "extractor_conv_feature_layers", "[(512, 10, 5)] * 2"),
        ("wav2vec2_mbart", "adaptor_n_layers", None),
        ("distilhubert", "encoder_attention_heads", 0),
        ("data2vec_audio", "encoder_attention_heads", 7),  # valid, but not a divisor of the width
    ],
)
def test_an_odd_config_value_is_one_line_and_exit_2(model: str, field: str, value: Any, tmp_path: Path) -> None:
    state, meta = reference_state(model, smaller=True)
    section = meta["Config"]["distiller"] if "Config" in meta else meta["cfg"]["model"]
    section[field] = value
    path = tmp_path / "odd.pt"
    torch.save({**meta, "Distiller" if "Config" in meta else "model": state}, path)
    for verb in (("preview", model, str(path)), ("convert", model, str(path), str(tmp_path / "hf"))):
        result = wmap(*verb)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert repr(field) in result.stderr
    assert not (tmp_path / "hf").exists()


def test_help_models_and_usage_errors_import_neither_torch_nor_transformers() -> None:
    for args in (["--help"], ["models"], ["frobnicate"], ["preview"]):
        code = (
            "import sys\nfrom wmap.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy'})\n"
            "print('HEAVY', heavy)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert "HEAVY []" in result.stdout, (args, result.stdout, result.stderr)


def test_a_bug_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from wmap import cli

    def broken(_: object) -> int:
        raise RuntimeError("a bug\nwith two lines")

    monkeypatch.setattr(cli, "_models", broken)
    result = wmap("models")
    assert result.returncode == 70 and len(result.stderr.strip().splitlines()) == 1
    assert "internal error" in result.stderr and "Traceback" not in result.stderr


def _package(root: Path) -> Path:
    """An installed package (on ``PYTHONPATH``) that names two families in the ``wmap.families``
    entry-point group: its own, and one under a shipped name (which must not replace the shipped one)."""
    (root / "myfams").mkdir(parents=True)
    (root / "myfams" / "__init__.py").write_text(
        "import attrs\nfrom wmap import get_model\n"
        "SPEC = attrs.evolve(get_model('encodec_32khz').unwrap(), name='my_codec', reference=None)\n"
        "IMPOSTOR = attrs.evolve(SPEC, name='encodec_24khz')\n"
    )
    info = root / "myfams-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myfams\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wmap.families]\nmy_codec = myfams:SPEC\nencodec_24khz = myfams:IMPOSTOR\n")
    return root


def test_families_from_outside_the_package_work_through_the_cli(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(_package(tmp_path / "site")))  # as if installed
    run = wmap

    listed = run("models")
    assert listed.returncode == 0 and "my_codec" in listed.stdout
    assert listed.stdout.count("encodec_24khz\n") == 1 and "transformers EncodecModel (24 kHz)" in listed.stdout
    result = run("convert", "my_codec", str(checkpoint), str(tmp_path / "by-entry-point"))
    assert result.returncode == 0, result.stderr
    result = run("verify", "my_codec", str(checkpoint), str(tmp_path / "by-entry-point"))
    assert result.returncode == 0, result.stderr
    result = run("preview", "myfams:SPEC", str(checkpoint), "--json")  # a spec named by module and attribute
    assert result.returncode == 0 and json.loads(result.stdout)["clean"], result.stderr
    result = run("preview", "my_codec")  # no checkpoint, and the family has no reference layout
    assert result.returncode == 2 and "reference layout" in result.stderr
    result = run("preview", "encodec_24khz")  # the shipped family, not the impostor
    assert result.returncode == 0 and "encodec_24khz" in result.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("/dev/zero", "not a regular file"),
        ("[" * 100_000 + "]" * 100_000, "not JSON"),
        ('{"num_lstm_layers": "two"}', "config"),
        ('{"dtype": "float128"}', "config"),
        ('{"dtype": 0.0}', "config"),  # builds, and would be written as "0", which transformers cannot read back
        ('{"_attn_implementation": "flash_attention_3"}', "config"),
        ("[1, 2]", "not an object"),
    ],
)
def test_a_bad_config_file_is_one_line(checkpoint: Path, tmp_path: Path, content: str, expected: str) -> None:
    path = Path(content) if content.startswith("/dev/") else tmp_path / "config.json"
    if not content.startswith("/dev/"):
        path.write_text(content)
    result = wmap("preview", "encodec_32khz", str(checkpoint), "--config", str(path))
    assert result.returncode in (1, 2), result.stderr
    if result.returncode == 2:
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr, result.stderr


def test_sigterm_and_sighup_while_writing_leave_only_what_was_there(tmp_path: Path) -> None:
    """Stopped while its staging directory exists (the signal is sent when it appears): exit 130, one
    line, nothing written. A staging directory a SIGKILLed run left behind is neither used nor removed,
    and the next conversion into that place succeeds beside it."""
    torch.save(reference_state("encodec_48khz")[0], tmp_path / "e48.pt")
    runs = {}
    for stop in (signal.SIGTERM, signal.SIGHUP):
        where = tmp_path / stop.name
        where.mkdir()
        leftover = where / ".hf.wmap-killed00"
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"half a file")
        script = shutil.which("wmap", path=str(Path(sys.executable).parent)) or "wmap"
        args = [script, "convert", "encodec_48khz", str(tmp_path / "e48.pt"), str(where / "hf"), "--dtype", "float16"]
        runs[stop] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = dict(runs)
    while waiting:  # both at once: each is signalled the moment its staging directory appears
        for stop, run in list(waiting.items()):
            if run.poll() is not None or len(list((tmp_path / stop.name).glob(".hf.wmap-*"))) > 1:
                run.send_signal(stop)
                del waiting[stop]
    for stop, run in runs.items():
        where = tmp_path / stop.name
        _, err = run.communicate(timeout=300)
        assert run.returncode == EXIT_INTERRUPTED_CODE, err
        assert err.strip() == "wmap: interrupted; nothing was written"
        assert sorted(p.name for p in where.iterdir()) == [".hf.wmap-killed00"]
    where = tmp_path / "SIGTERM"
    assert wmap("convert", "encodec_48khz", str(tmp_path / "e48.pt"), str(where / "hf")).returncode == 0
    assert (where / ".hf.wmap-killed00" / "model.safetensors").read_bytes() == b"half a file"
    assert (where / "hf" / "model.safetensors").stat().st_size > 1000


EXIT_INTERRUPTED_CODE = 130


def test_export_and_preview_reverse_through_the_command(tmp_path: Path) -> None:
    """openai-whisper's real names and shapes (the bundled base layout, random values) there and back."""
    state, meta = reference_state("whisper")
    torch.save({**meta, "model_state_dict": state}, tmp_path / "base.pt")
    hf = tmp_path / "hf"
    assert wmap("convert", "whisper", str(tmp_path / "base.pt"), str(hf)).returncode == 0
    shown = wmap("preview", "--reverse", "whisper", str(hf))
    assert shown.returncode == 0 and "clean" in shown.stdout, shown.stdout + shown.stderr
    assert "also written beside" not in shown.stdout  # openai's file is one file
    as_json = json.loads(wmap("preview", "--reverse", "whisper", str(hf), "--json").stdout)
    assert as_json["clean"] and as_json["beside"] == []
    out = tmp_path / "back.pt"
    done = wmap("export", "whisper", str(hf), str(out))
    assert done.returncode == 0 and out.is_file(), done.stderr
    assert "not written: the processor and generation config" in done.stderr  # the user is told
    back = torch.load(out, weights_only=True)
    assert back["dims"] == meta["dims"] and all(torch.equal(back["model_state_dict"][k], v) for k, v in state.items())

    again = wmap("export", "whisper", str(hf), str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert wmap("export", "whisper", str(hf), str(out), "--overwrite").returncode == 0
    assert not list(tmp_path.glob(".back.pt.wmap-*"))
    other = wmap("export", "distilhubert", str(hf), str(tmp_path / "x.pt"))  # a whisper directory
    assert other.returncode == 2 and "model_type" in other.stderr and "'hubert'" in other.stderr
    assert "'whisper'" in other.stderr and not (tmp_path / "x.pt").exists()
    no_dir = wmap("preview", "--reverse", "whisper")
    assert no_dir.returncode == 2 and "HF_DIR" in no_dir.stderr
    inside = wmap("export", "whisper", str(hf), str(hf / "model.safetensors"), "--overwrite")
    assert inside.returncode == 2 and "the input" in inside.stderr
    assert (hf / "model.safetensors").stat().st_size > 1000


def test_an_export_that_would_lose_keys_says_which_and_how_to_accept_them(tmp_path: Path) -> None:
    from tests.helpers import reference_state

    state, meta = reference_state("distilhubert")
    torch.save({**meta, "Distiller": state}, tmp_path / "distiller.ckpt")
    assert wmap("convert", "distilhubert", str(tmp_path / "distiller.ckpt"), str(tmp_path / "hf")).returncode == 0
    preview = wmap("preview", "--reverse", "distilhubert", str(tmp_path / "hf"))
    assert preview.returncode == 1 and "unrecoverable" in preview.stdout and "1 unrecoverable" in preview.stdout
    refused = wmap("export", "distilhubert", str(tmp_path / "hf"), str(tmp_path / "back.ckpt"))
    assert refused.returncode == 1 and not (tmp_path / "back.ckpt").exists()
    assert (
        refused.stderr.strip().splitlines()[-1] == "wmap: to export without them: --accept-unrecoverable output_layer"
    )
    accepted = ("--accept-unrecoverable", "output_layer")
    done = wmap("export", "distilhubert", str(tmp_path / "hf"), str(tmp_path / "back.ckpt"), *accepted)
    assert done.returncode == 0 and (tmp_path / "back.ckpt").is_file()


def test_a_family_given_as_a_file_path_or_a_broken_module_is_one_line(checkpoint: Path, tmp_path: Path) -> None:
    """``path/to/file.py:SPEC`` works; a name that is no module, or a module that raises while it is
    imported, is exit 2 with one line that blames that module, not wmap."""
    family = tmp_path / "my_family.py"
    family.write_text(
        "import attrs\nfrom wmap import get_model\n"
        "SPEC = attrs.evolve(get_model('encodec_32khz').unwrap(), name='mine', reference=None)\n"
    )
    (tmp_path / "broken_family.py").write_text("raise RuntimeError('my typo')\n")
    done = wmap("preview", f"{family}:SPEC", str(checkpoint), "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["clean"], done.stderr
    for model, said in [
        ("..:x", "neither a module name"),
        (f"{tmp_path / 'broken_family.py'}:SPEC", "an error in that module, not in wmap"),
        (f"{family}:NOPE", "defines no 'NOPE'"),
        ("no_such_module_xyz:SPEC", "No module named"),
    ]:
        result = wmap("preview", model, str(checkpoint))
        assert result.returncode == 2 and said in result.stderr, (model, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "internal error" not in result.stderr


@pytest.mark.parametrize(
    ("line", "said"), [("a --5", "expected '<symbol> <count>'"), ("a ²", "expected '<symbol> <count>'")]
)
def test_a_dict_with_a_malformed_count_is_one_line(ctc_dir: Path, tmp_path: Path, line: str, said: str) -> None:
    from wmap.way_back import export

    export("wav2vec2_ctc", ctc_dir, tmp_path / "ckpt.pt").unwrap()
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    del checkpoint["task_state"]  # a file without its dictionary: --dict is needed
    torch.save(checkpoint, tmp_path / "bare.pt")
    (tmp_path / "bad.txt").write_text(line + "\n")
    result = wmap(
        "convert", "wav2vec2_ctc", str(tmp_path / "bare.pt"), str(tmp_path / "o"), "--dict", str(tmp_path / "bad.txt")
    )
    assert result.returncode == 2 and said in result.stderr and len(result.stderr.strip().splitlines()) == 1
    refused = wmap("convert", "wav2vec2_ctc", str(tmp_path / "bare.pt"), str(tmp_path / "o"))
    assert refused.returncode == 2 and "--no-processor" in refused.stderr  # the refusal names the way out
    weights = wmap("convert", "wav2vec2_ctc", str(tmp_path / "bare.pt"), str(tmp_path / "o"), "--no-processor")
    assert weights.returncode == 0 and (tmp_path / "o" / "model.safetensors").is_file()
    assert not (tmp_path / "o" / "vocab.json").exists()
    repeated = tmp_path / "repeated.txt"
    repeated.write_text((tmp_path / "dict.ltr.txt").read_text().replace("Z 1\n", "E 1 #fairseq:overwrite\n"))
    result = wmap("convert", "wav2vec2_ctc", str(tmp_path / "bare.pt"), str(tmp_path / "r"), "--dict", str(repeated))
    assert result.returncode == 2 and "'E' more than once" in result.stderr and not (tmp_path / "r").exists()


def test_a_dictionary_of_100k_symbols_reads_at_once() -> None:
    """The duplicate check was a list lookup: 100,000 symbols took minutes (now a set)."""
    from wmap.fairseq.dictionary import parse_dict_file

    read = parse_dict_file("".join(f"w{i} 1\n" for i in range(100_000)), "dict.txt")
    assert len(read.symbols) == 100_004


def test_paths_users_mistype_are_usage_errors(
    ctc_dir: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset variable ("") never means the current directory; a 300-character name is one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    for args in (
        ["convert", "encodec_32khz", str(checkpoint), "", "--overwrite"],
        ["convert", "encodec_32khz", str(checkpoint), ".", "--overwrite"],
        ["export", "wav2vec2_ctc", str(ctc_dir), ""],
        ["export", "wav2vec2_ctc", str(ctc_dir), "x" * 300],
        ["convert", "encodec_32khz", str(checkpoint), "y" * 300],
    ):
        result = wmap(*args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "internal error" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_help_is_plain_text_and_explains_every_argument() -> None:
    for verb in ([], ["preview"], ["convert"], ["export"], ["verify"]):
        shown = wmap(*verb, "--help")
        assert shown.returncode == 0 and "``" not in shown.stdout and "[bold]" not in shown.stdout
        assert "exit codes" in shown.stdout or verb == [], verb
    convert_help = " ".join(wmap("convert", "--help").stdout.split())
    for argument in ("a family from 'wmap models'", "the original checkpoint file", "the directory to write"):
        assert argument in convert_help


def test_export_interrupted_or_out_of_disk_leaves_the_folder_as_it_was(ctc_dir: Path, tmp_path: Path) -> None:
    """As processes: a full disk (RLIMIT_FSIZE) while writing, with --overwrite, keeps the old checkpoint
    and the user's dict.ltr.txt; SIGTERM while staging leaves neither a new file nor a staging file."""
    out = tmp_path / "checkpoint.pt"
    out.write_bytes(b"PK\x03\x04 the old checkpoint")
    (tmp_path / "dict.ltr.txt").write_text("old 1\n")
    before = _listing(tmp_path)
    full = wmap_process("export", "wav2vec2_ctc", str(ctc_dir), str(out), "--overwrite", limit_file_bytes=64_000)
    assert full.returncode == 2 and "could not write output" in full.stderr, full.stderr
    assert _listing(tmp_path) == before

    script = shutil.which("wmap", path=str(Path(sys.executable).parent)) or "wmap"
    run = subprocess.Popen(
        [script, "export", "wav2vec2_ctc", str(ctc_dir), str(out), "--overwrite"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while run.poll() is None and not list(tmp_path.glob(".*.wmap-*")):
        pass
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=300)
    if run.returncode == EXIT_INTERRUPTED_CODE:  # else it had finished: nothing to check of an interrupt
        assert err.strip() == "wmap: interrupted; nothing was written"
        assert _listing(tmp_path) == before
    assert not list(tmp_path.glob(".*.wmap-*"))


def _listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_config_asking_for_a_billion_layers_is_one_line(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"num_lstm_layers": 10**9}))
    result = wmap("preview", "encodec_32khz", str(checkpoint), "--config", str(tmp_path / "config.json"))
    assert result.returncode == 2 and "num_lstm_layers" in result.stderr


def test_a_full_stdout_exits_74_after_the_output_was_written(checkpoint: Path, tmp_path: Path) -> None:
    """``> /dev/full``: the conversion is done; only its report could not be printed (README: 74)."""
    with open("/dev/full", "w") as full:
        script = shutil.which("wmap", path=str(Path(sys.executable).parent)) or "wmap"
        run = subprocess.run(
            [script, "convert", "encodec_32khz", str(checkpoint), str(tmp_path / "o")],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    assert run.returncode == 74 and "cannot write the output" in run.stderr
    assert (tmp_path / "o" / "model.safetensors").is_file()
