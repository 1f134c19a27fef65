"""The way back on the directories users have: written by transformers' own ``save_pretrained`` (default,
sharded, half precision, without processor files, a stale index), checked against the model their
``config.json`` describes, written all or nothing, never over what the input reads.

Each refusal has its negative control: the same directory, intact, exports.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import CTC_LETTERS, hub_directory
from wmap.conversion import convert
from wmap.errors import BadConfig, Disagrees, OutputRefused, PlanNotClean, UnreadableCheckpoint
from wmap.fairseq import STAND_INS
from wmap.io import read_checkpoint
from wmap.way_back import export, preview_reverse


def _copy(directory: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(directory, to)
    return to


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_transformers_directory_exports_and_the_export_converts_back_to_the_same_tensors(
    ctc_dir: Path, tmp_path: Path
) -> None:
    plan = preview_reverse("wav2vec2_ctc", ctc_dir).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    out = export("wav2vec2_ctc", ctc_dir, tmp_path / "checkpoint.pt").unwrap()
    back = convert("wav2vec2_ctc", out, tmp_path / "again").unwrap()  # no --dict: task_state carries it
    first, second = load_file(ctc_dir / "model.safetensors"), load_file(back / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert json.loads((back / "vocab.json").read_text()) == {t: i for i, t in enumerate(CTC_LETTERS)}


def test_the_exported_config_names_its_own_folder_as_the_data_directory(ctc_dir: Path, tmp_path: Path) -> None:
    """fairseq's tasks read ``data`` (the fine-tuning task its dict.ltr.txt there): each place a
    fine-tuned file names it is the folder written to, and nothing else of the cfg is a placeholder."""
    (tmp_path / "out").mkdir()
    out = export("wav2vec2_ctc", ctc_dir, tmp_path / "out" / "checkpoint.pt").unwrap()
    cfg = read_checkpoint(out, stand_ins=STAND_INS).unwrap().meta["cfg"]
    places = (cfg["model"], cfg["model"]["w2v_args"]["task"], cfg["task"])
    assert [place["data"] for place in places] == [str(out.parent)] * 3
    assert (out.parent / "dict.ltr.txt").is_file()


@pytest.mark.parametrize("variant", ["sharded", "float16", "bfloat16", "no processor", "stale index", "v4 names"])
def test_every_way_transformers_saves_a_directory_exports(variant: str, tmp_path: Path) -> None:
    """Sharded, half precision, with a stale index beside one file (transformers leaves one when it
    re-saves unsharded, and loads the single file): each exports the same tensors as the default."""
    family = "wav2vec2" if variant == "no processor" else "wav2vec2_ctc"
    hub_directory(family, tmp_path / "plain")
    kwargs = {
        "sharded": {"max_shard_size": "100KB"},
        "float16": {"dtype": torch.float16},
        "bfloat16": {"dtype": torch.bfloat16},
        "no processor": {"processor": False},
        "stale index": {},
        "v4 names": {},
    }[variant]
    hub_directory(family, tmp_path / "hf", **kwargs)  # type: ignore[arg-type]
    if variant == "sharded":
        assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    if variant == "v4 names":  # transformers v4 saved the weight-norm pair as weight_g / weight_v
        state = load_file(tmp_path / "hf" / "model.safetensors")
        v4 = {
            k.replace("parametrizations.weight.original0", "weight_g").replace(
                "parametrizations.weight.original1", "weight_v"
            ): v
            for k, v in state.items()
        }
        assert any(k.endswith("weight_g") for k in v4)
        save_file(v4, tmp_path / "hf" / "model.safetensors", {"format": "pt"})
    if variant == "stale index":
        (tmp_path / "hf" / "model.safetensors.index.json").write_text('{"weight_map": {"x": "gone.safetensors"}}')
    if variant == "no processor":  # the feature extractor's settings: fairseq's defaults are not guessed
        refused = export(family, tmp_path / "hf", tmp_path / "x.pt")
        assert isinstance(refused.failure(), BadConfig) and "preprocessor_config.json" in str(refused.failure())
        (tmp_path / "hf" / "preprocessor_config.json").write_bytes(
            (tmp_path / "plain" / "preprocessor_config.json").read_bytes()
        )
    accept = {"accept": _accept_all(family, tmp_path / "hf")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = export(family, tmp_path / "hf", tmp_path / "a" / "out.pt", **accept).unwrap()
    reference = export(family, tmp_path / "plain", tmp_path / "b" / "plain.pt", **accept).unwrap()
    ours, theirs = torch.load(out, weights_only=False)["model"], torch.load(reference, weights_only=False)["model"]
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key].float(), value.to(ours[key].dtype).float()), key


def _accept_all(family: str, directory: Path):  # type: ignore[no-untyped-def]
    from wmap.plan import Accept

    plan = preview_reverse(family, directory).unwrap().plan
    return Accept(unrecoverable=frozenset(u.key for u in plan.unrecoverable))


def test_a_directory_missing_a_tensor_is_not_clean_and_nothing_is_written(ctc_dir: Path, tmp_path: Path) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    state = load_file(hf / "model.safetensors")
    gone = next(k for k in state if k.endswith("layers.0.attention.q_proj.bias"))
    save_file({k: v for k, v in state.items() if k != gone}, hf / "model.safetensors", {"format": "pt"})
    plan = preview_reverse("wav2vec2_ctc", hf).unwrap().plan
    assert not plan.is_clean() and any("q_proj.bias" in line for line in plan.problems())
    refused = export("wav2vec2_ctc", hf, tmp_path / "out" / "checkpoint.pt")
    assert isinstance(refused.failure(), PlanNotClean)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("field", "value"), [("num_hidden_layers", 3), ("num_hidden_layers", 1), ("hidden_size", 48)])
def test_a_config_that_disagrees_with_the_weights_is_not_clean(
    ctc_dir: Path, tmp_path: Path, field: str, value: int
) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, field: value}))
    plan = preview_reverse("wav2vec2_ctc", hf).unwrap().plan
    assert not plan.is_clean()
    assert isinstance(export("wav2vec2_ctc", hf, tmp_path / "x.pt").failure(), PlanNotClean)
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "dict.ltr.txt").exists()


def test_a_config_asking_for_a_billion_layers_is_refused_before_anything_is_built(
    ctc_dir: Path, tmp_path: Path
) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**9}))
    refused = preview_reverse("wav2vec2_ctc", hf).failure()
    assert isinstance(refused, BadConfig) and "num_hidden_layers" in str(refused)


@pytest.mark.parametrize(
    ("vocab", "why"),
    [
        ({t: i for i, t in enumerate(CTC_LETTERS[:-1])}, "tokens"),  # one short of the head
        ({**{t: i for i, t in enumerate(CTC_LETTERS[:-1])}, "a\nb": len(CTC_LETTERS) - 1}, "line"),
        ({**{t: i for i, t in enumerate(CTC_LETTERS[:-1])}, " q": len(CTC_LETTERS) - 1}, "space"),
    ],
)
def test_a_vocabulary_the_head_or_fairseq_cannot_hold_is_refused(
    ctc_dir: Path, tmp_path: Path, vocab: dict[str, int], why: str
) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    (hf / "vocab.json").write_text(json.dumps(vocab))
    refused = export("wav2vec2_ctc", hf, tmp_path / "x.pt").failure()
    assert isinstance(refused, Disagrees) and "vocab" in str(refused), refused
    assert not list(tmp_path.glob("*.pt")) and not (tmp_path / "dict.ltr.txt").exists()


def test_an_integer_tensor_where_the_model_holds_floats_is_refused(ctc_dir: Path, tmp_path: Path) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    state = load_file(hf / "model.safetensors")
    key = next(k for k in state if k.endswith("final_layer_norm.weight"))
    save_file({**state, key: state[key].to(torch.int8)}, hf / "model.safetensors", {"format": "pt"})
    plan = preview_reverse("wav2vec2_ctc", hf).unwrap().plan
    assert any(r.key == key and "int8" in r.reason for r in plan.refused)
    assert isinstance(export("wav2vec2_ctc", hf, tmp_path / "x.pt").failure(), PlanNotClean)


def test_a_dtype_that_is_not_floating_is_refused(ctc_dir: Path, tmp_path: Path) -> None:
    refused = export("wav2vec2_ctc", ctc_dir, tmp_path / "x.pt", dtype=torch.int8).failure()
    assert isinstance(refused, BadConfig) and "floating" in str(refused)
    assert not list(tmp_path.iterdir())


def test_export_is_all_or_nothing_with_its_dictionary(ctc_dir: Path, tmp_path: Path) -> None:
    """An existing OUT_FILE refuses the export before dict.ltr.txt is written; with --overwrite both
    are replaced; an existing dict.ltr.txt is never replaced without it."""
    out = tmp_path / "checkpoint.pt"
    out.write_bytes(b"PK\x03\x04 an old checkpoint")
    assert isinstance(export("wav2vec2_ctc", ctc_dir, out).failure(), OutputRefused)
    assert not (tmp_path / "dict.ltr.txt").exists()
    out.unlink()
    (tmp_path / "dict.ltr.txt").write_text("mine 1\n")
    assert isinstance(export("wav2vec2_ctc", ctc_dir, out).failure(), OutputRefused)
    assert not out.exists() and (tmp_path / "dict.ltr.txt").read_text() == "mine 1\n"
    export("wav2vec2_ctc", ctc_dir, out, overwrite=True).unwrap()
    assert out.is_file() and (tmp_path / "dict.ltr.txt").read_text().startswith("|")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "dict.ltr.txt"]


def test_overwrite_never_replaces_a_file_that_is_not_a_checkpoint(ctc_dir: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my thesis")
    refused = export("wav2vec2_ctc", ctc_dir, notes, overwrite=True).failure()
    assert isinstance(refused, OutputRefused) and "not a torch checkpoint" in str(refused)
    assert notes.read_text() == "my thesis"


def test_the_output_is_never_the_blob_a_hub_cache_links_to(ctc_dir: Path, tmp_path: Path) -> None:
    """A Hub cache: ``snapshots/<rev>/model.safetensors`` is a link to ``blobs/<hash>``."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for name in os.listdir(ctc_dir):
        (blobs / name).write_bytes((ctc_dir / name).read_bytes())
        (snapshot / name).symlink_to(blobs / name)
    before = (blobs / "model.safetensors").read_bytes()
    refused = export("wav2vec2_ctc", snapshot, blobs / "model.safetensors", overwrite=True).failure()
    assert isinstance(refused, OutputRefused) and "input" in str(refused)
    assert (blobs / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("name", ["", "a\0b", "x" * 300, "d/" + "y" * 256 + "/z"])
def test_bad_paths_are_error_values_in_every_public_function(
    ctc_dir: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wmap import preview
    from wmap.io import write_directory_atomically

    monkeypatch.chdir(tmp_path)
    assert isinstance(export("wav2vec2_ctc", ctc_dir, name).failure(), OutputRefused)
    assert isinstance(export("wav2vec2_ctc", name, tmp_path / "x.pt").failure(), (BadConfig, UnreadableCheckpoint))
    assert isinstance(
        convert("wav2vec2_ctc", ctc_dir / "model.safetensors", name, overwrite=True).failure(), OutputRefused
    )
    assert isinstance(convert("wav2vec2_ctc", name, tmp_path / "o").failure(), UnreadableCheckpoint)
    assert isinstance(preview("wav2vec2_ctc", name).failure(), UnreadableCheckpoint)
    assert isinstance(write_directory_atomically(name, lambda d: None, overwrite=True).failure(), OutputRefused)
    assert sorted(os.listdir(tmp_path)) == []


def test_overwrite_replaces_only_a_model_directory(
    ctc_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never the current directory or one holding it, never a directory with other files in it
    (named); a model directory is replaced."""
    from wmap.io import write_directory_atomically

    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(home / "work")
    for target in (".", "..", str(home)):
        refused = write_directory_atomically(target, lambda d: None, overwrite=True).failure()
        assert isinstance(refused, OutputRefused), target
    refused = write_directory_atomically(home, lambda d: None, overwrite=True).failure()
    monkeypatch.chdir(tmp_path)
    refused = write_directory_atomically(home, lambda d: None, overwrite=True).failure()
    assert isinstance(refused, OutputRefused) and "'thesis.tex'" in str(refused) and "'work/'" in str(refused)
    assert (home / "thesis.tex").read_text() == "years of work"
    model = _copy(ctc_dir, tmp_path / "model")
    write_directory_atomically(model, lambda d: (d / "config.json").touch(), overwrite=True).unwrap()
    assert os.listdir(model) == ["config.json"]


def test_a_pytorch_model_bin_directory_exports(tmp_path: Path) -> None:
    hub_directory("wav2vec2_ctc", tmp_path / "plain")
    model = hub_directory("wav2vec2_ctc", tmp_path / "bin")
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ours = torch.load(export("wav2vec2_ctc", tmp_path / "bin", tmp_path / "a" / "a.pt").unwrap(), weights_only=False)
    theirs = torch.load(
        export("wav2vec2_ctc", tmp_path / "plain", tmp_path / "b" / "b.pt").unwrap(), weights_only=False
    )
    assert ours["model"].keys() == theirs["model"].keys()
    assert all(torch.equal(ours["model"][k], v) for k, v in theirs["model"].items())


@pytest.mark.parametrize("bad", ["index", "vocab", "features"])
def test_deeply_nested_or_huge_json_is_a_clear_error(ctc_dir: Path, tmp_path: Path, bad: str) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    deep = "[" * 100_000 + "]" * 100_000
    if bad == "index":
        save = load_file(hf / "model.safetensors")
        (hf / "model.safetensors").unlink()
        save_file(save, hf / "model-00001-of-00001.safetensors", {"format": "pt"})
        (hf / "model.safetensors.index.json").write_text(deep)
    else:
        (hf / {"vocab": "vocab.json", "features": "preprocessor_config.json"}[bad]).write_text(deep)
        (hf / "processor_config.json").unlink(missing_ok=True)
    refused = export("wav2vec2_ctc", hf, tmp_path / "x.pt").failure()
    assert isinstance(refused, (BadConfig, UnreadableCheckpoint)), refused
    assert not (tmp_path / "x.pt").exists()


def test_a_fifo_shard_is_refused_not_waited_on(ctc_dir: Path, tmp_path: Path) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    (hf / "model.safetensors").unlink()
    os.mkfifo(hf / "model-00001-of-00001.safetensors")
    (hf / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00001-of-00001.safetensors"}})
    )
    refused = preview_reverse("wav2vec2_ctc", hf).failure()
    assert isinstance(refused, UnreadableCheckpoint) and "FIFO" in str(refused)


def test_a_weights_file_that_is_a_directory_is_named_as_such(ctc_dir: Path, tmp_path: Path) -> None:
    hf = _copy(ctc_dir, tmp_path / "hf")
    (hf / "model.safetensors").unlink()
    (hf / "model.safetensors").mkdir()
    refused = preview_reverse("wav2vec2_ctc", hf).failure()
    assert isinstance(refused, UnreadableCheckpoint) and "a directory" in str(refused)


@pytest.mark.parametrize("family", ["wav2vec2_ctc", "hubert", "distilhubert"])
def test_a_projection_the_original_has_no_place_for_goes_back_only_as_the_identity(family: str, tmp_path: Path) -> None:
    """fairseq and s3prl have no post_extract_proj where the conv and encoder widths are equal. The
    forward direction makes the identity there; back, the projection is dropped while it is the
    identity, and a trained one (these random weights) is refused, naming it (exit 1)."""
    import torch

    from wmap.errors import TensorMismatch
    from wmap.plan import Accept

    model = hub_directory(family, tmp_path / "equal", conv_dim=(32, 32))
    plan = preview_reverse(family, tmp_path / "equal").unwrap().plan
    dropped = [s for s in plan.skipped if "feature_projection.projection" in s.key]
    assert len(dropped) == 2 and "conv_dim[-1] = hidden_size = 32" in dropped[0].reason
    accept = Accept(unrecoverable=frozenset(u.key for u in plan.unrecoverable))
    (tmp_path / "out").mkdir()
    refused = export(family, tmp_path / "equal", tmp_path / "out" / "a.pt", accept=accept).failure()
    assert isinstance(refused, TensorMismatch) and "feature_projection.projection" in refused.key
    projection = (
        model.base_model.feature_projection.projection
        if family.endswith("_ctc")
        else model.feature_projection.projection
    )
    with torch.no_grad():
        projection.weight.copy_(torch.eye(32))
        projection.bias.zero_()
    model.save_pretrained(tmp_path / "equal")
    export(family, tmp_path / "equal", tmp_path / "out" / "b.pt", accept=accept).unwrap()


def test_what_s3prl_has_no_place_for_is_named(tmp_path: Path) -> None:
    """DistilHuBERT back to s3prl: SpecAugment's mask embedding is skipped with the reason (training
    only); a layer norm before the projection is refused (it changes the outputs)."""
    hub_directory("distilhubert", tmp_path / "hf", feat_proj_layer_norm=True)
    plan = preview_reverse("distilhubert", tmp_path / "hf").unwrap().plan
    assert [s.key for s in plan.skipped] == ["masked_spec_embed"] and "training" in plan.skipped[0].reason
    assert {r.key for r in plan.refused} == {
        "feature_projection.layer_norm.weight",
        "feature_projection.layer_norm.bias",
    }


def test_an_accepted_key_the_plan_does_not_name_is_an_error(tmp_path: Path) -> None:
    from wmap.plan import Accept

    hub_directory("distilhubert", tmp_path / "hf")
    (tmp_path / "out").mkdir()
    for wrong in ("output_laye", "output_layer.weight"):  # short or over-long: neither is what the plan names
        accept = Accept(unrecoverable=frozenset({"output_layer", wrong}))
        refused = export("distilhubert", tmp_path / "hf", tmp_path / "out" / "x.pt", accept=accept).failure()
        assert isinstance(refused, BadConfig) and wrong in str(refused) and "output_layer" in str(refused)
    accept = Accept(unrecoverable=frozenset({"output_layer"}))
    export("distilhubert", tmp_path / "hf", tmp_path / "out" / "x.pt", accept=accept).unwrap()


def test_an_untied_whisper_fine_tune_is_a_refusal_not_bad_input(tmp_path: Path) -> None:
    from tests.test_cli import wmap

    hub_directory("whisper", tmp_path / "hf", tie_word_embeddings=False)
    result = wmap("export", "whisper", str(tmp_path / "hf"), str(tmp_path / "x.pt"))
    assert result.returncode == 1 and "tie_word_embeddings" in result.stderr and not (tmp_path / "x.pt").exists()


def test_a_bug_in_a_writer_is_not_reported_as_bad_output(tmp_path: Path) -> None:
    """A writer that raises something other than an ``OSError`` is a bug: it propagates (the CLI exits
    70 with one line), it is not "could not write output" (exit 2); nothing is left behind either way."""
    from wmap.io import write_directory_atomically, write_files_atomically

    def broken(path: Path) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        write_directory_atomically(tmp_path / "out", broken)
    with pytest.raises(KeyError):
        write_files_atomically({tmp_path / "x.pt": broken})
    assert list(tmp_path.iterdir()) == []

    def full(path: Path) -> None:
        raise OSError(28, "No space left on device")

    refused = write_files_atomically({tmp_path / "x.pt": full}).failure()
    assert isinstance(refused, OutputRefused) and "No space left" in str(refused)


def test_a_config_object_of_another_family_is_an_error_value() -> None:
    from transformers import WhisperConfig

    from wmap import preview

    refused = preview("encodec_24khz", None, WhisperConfig()).failure()
    assert isinstance(refused, BadConfig) and "EncodecConfig" in str(refused) and "WhisperConfig" in str(refused)


def test_two_feature_extractor_files_that_disagree_are_refused(ctc_dir: Path, tmp_path: Path) -> None:
    """A v4 directory re-saved by v5 holds preprocessor_config.json and processor_config.json; if
    they disagree on normalisation, which one a loader reads decides the outputs: refused (exit 1).
    The negative control: the same two files agreeing export."""
    hf = _copy(ctc_dir, tmp_path / "hf")
    nested = json.loads((hf / "processor_config.json").read_text())["feature_extractor"]
    (hf / "preprocessor_config.json").write_text(json.dumps(nested))
    (tmp_path / "a").mkdir()
    export("wav2vec2_ctc", hf, tmp_path / "a" / "x.pt").unwrap()
    (hf / "preprocessor_config.json").write_text(json.dumps({**nested, "do_normalize": not nested["do_normalize"]}))
    refused = export("wav2vec2_ctc", hf, tmp_path / "x.pt").failure()
    assert isinstance(refused, Disagrees) and "preprocessor_config.json" in str(refused)
    assert not (tmp_path / "x.pt").exists()


def test_a_feature_extractor_file_fairseq_cannot_take_is_refused_naming_each_field() -> None:
    """The feature extractor's settings are fairseq's task table read back: each bad field is named
    with what was expected (a string for ``do_normalize``, a rate of 0), and a good file reads."""
    from wmap.fairseq.processor import feature_settings

    error = feature_settings({"preprocessor_config.json": '{"do_normalize": "yes", "sampling_rate": 0}'}).failure()
    assert (error.source, error.key) == ("preprocessor_config.json", "sampling_rate")
    assert [o.key for o in error.others] == ["do_normalize"] and "true or false" in error.others[0].message
    nested = '{"feature_extractor": {"do_normalize": false, "sampling_rate": 8000}}'
    assert feature_settings({"processor_config.json": nested}).unwrap() == (False, 8000)
