"""Conversion's output: one file or shards with an index, streamed from the source file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import EncodecModel

from tests.helpers import load_pretrained_strictly, reference_checkpoint
from wmap import convert, verify
from wmap.io import mapped_file, read_checkpoint, read_weights, write_safetensors


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return reference_checkpoint(tmp_path_factory.mktemp("ckpt") / "encodec_32khz.pt")


def test_sharded_output_loads_and_verifies(checkpoint: Path, tmp_path: Path) -> None:
    one = convert("encodec_32khz", checkpoint, tmp_path / "one").unwrap()
    many = convert("encodec_32khz", checkpoint, tmp_path / "many", max_shard_size="200KB").unwrap()
    index = json.loads((many / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in many.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (many / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == set(shards)
    whole = load_file(one / "model.safetensors")
    assert set(index["weight_map"]) == set(whole)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in whole.values())
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in whole.values())
    ported = load_pretrained_strictly(EncodecModel, many)
    for key, value in ported.state_dict().items():
        assert torch.equal(value, whole[key]), key
    assert verify("encodec_32khz", checkpoint, many).unwrap().ok
    assert read_weights(many).unwrap().layout == {k: tuple(v.shape) for k, v in whole.items()}


def test_a_bad_shard_size_is_refused_before_anything_is_written(checkpoint: Path, tmp_path: Path) -> None:
    for size in ("lots", "-1GB", 0):
        error = convert("encodec_32khz", checkpoint, tmp_path / "hf", max_shard_size=size).failure()
        assert "max_shard_size" in error.message and not (tmp_path / "hf").exists()


def test_copying_from_the_mapped_source_writes_the_same_bytes(checkpoint: Path, tmp_path: Path) -> None:
    source = read_checkpoint(checkpoint).unwrap()
    mapped = mapped_file(checkpoint, source.tensors.values())
    assert mapped is not None and all(mapped.offset_of(t) is not None for t in source.tensors.values() if t.numel())
    changed = {k: (v * 2 if i % 3 == 0 else v) for i, (k, v) in enumerate(source.tensors.items())}  # some in memory
    write_safetensors(tmp_path / "copied.safetensors", changed, {}, mapped)
    write_safetensors(tmp_path / "written.safetensors", changed, {}, None)
    copied, written = (tmp_path / "copied.safetensors").read_bytes(), (tmp_path / "written.safetensors").read_bytes()
    assert copied == written
    negative = dict(changed)
    first = next(iter(negative))
    negative[first] = negative[first] + 1
    write_safetensors(tmp_path / "other.safetensors", negative, {}, mapped)
    assert (tmp_path / "other.safetensors").read_bytes() != written  # the comparison can fail


def test_a_file_read_twice_is_copied_from_the_mapping_that_holds_its_tensors(checkpoint: Path) -> None:
    """Each read maps the file anew; the first mapping in ``/proc/self/maps`` need not be this read's
    (the test above failed now and then when an earlier read of the same file was still alive)."""
    first = read_checkpoint(checkpoint).unwrap()
    second = read_checkpoint(checkpoint).unwrap()
    for read in (first, second):
        mapped = mapped_file(checkpoint, read.tensors.values())
        assert mapped is not None and all(mapped.offset_of(t) is not None for t in read.tensors.values() if t.numel())
        other = first if read is second else second
        assert not any(mapped.offset_of(t) is not None for t in other.tensors.values() if t.numel())


def test_a_sharded_index_that_lies_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    many = convert("encodec_32khz", checkpoint, tmp_path / "many", max_shard_size="200KB").unwrap()
    index = json.loads((many / "model.safetensors.index.json").read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "../../etc/passwd"
    (many / "model.safetensors.index.json").write_text(json.dumps(index))
    error = read_weights(many).failure()
    assert "index" in error.message and "weight_map" in error.message


def test_verify_compares_bit_patterns_so_a_copied_nan_verifies(tmp_path: Path) -> None:
    from tests.helpers import reference_state

    state, _ = reference_state("encodec_32khz")
    state["encoder.model.0.conv.conv.bias"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    out = convert("encodec_32khz", tmp_path / "nan.pt", tmp_path / "hf").unwrap()
    assert verify("encodec_32khz", tmp_path / "nan.pt", out).unwrap().ok


def test_a_family_without_a_way_back_is_refused_by_export(checkpoint: Path, tmp_path: Path) -> None:
    """Every shipped family exports; a user's family without an :class:`Exporter` is refused by name."""
    import attrs

    from wmap import export
    from wmap.registry import get_model

    one_way = attrs.evolve(get_model("encodec_32khz").unwrap(), name="mine", export=None)
    hf = convert("encodec_32khz", checkpoint, tmp_path / "hf").unwrap()
    error = export(one_way, hf, tmp_path / "back.pt").failure()
    assert "mine converts one way only" in error.message and not (tmp_path / "back.pt").exists()


def test_a_broken_config_json_is_named_as_the_directory_holds_it(checkpoint: Path, tmp_path: Path) -> None:
    from wmap import export

    hf = convert("encodec_32khz", checkpoint, tmp_path / "hf").unwrap()
    (hf / "config.json").write_text("{not json")
    error = export("encodec_32khz", hf, tmp_path / "back.pt").failure()
    assert "config.json" in error.message and "--config" not in error.message and "not JSON" in error.message
    (hf / "config.json").unlink()
    error = export("encodec_32khz", hf, tmp_path / "back.pt").failure()
    assert "config.json" in error.message and "--config" not in error.message


def test_verify_compares_what_apply_writes_for_a_split_tensor(tmp_path: Path) -> None:
    """An older fairseq file keeps q/k/v fused (``in_proj_weight``): the plan splits it. ``verify``
    compares each written third with the third apply makes, not with the fused source (which it
    reported as differing); a tampered third still differs (the negative control)."""
    from safetensors.torch import load_file, save_file

    from tests.helpers import reference_state

    state, meta = reference_state("wav2vec2")
    for layer in range(12):
        prefix = f"encoder.layers.{layer}.self_attn"
        for leaf in ("weight", "bias"):
            parts = [state.pop(f"{prefix}.{p}.{leaf}") for p in ("q_proj", "k_proj", "v_proj")]
            state[f"{prefix}.in_proj_{leaf}"] = torch.cat(parts)
    torch.save({**meta, "model": state}, tmp_path / "fused.pt")
    out = convert("wav2vec2", tmp_path / "fused.pt", tmp_path / "hf").unwrap()
    assert verify("wav2vec2", tmp_path / "fused.pt", out).unwrap().ok
    written = load_file(out / "model.safetensors")
    key = "wav2vec2.encoder.layers.0.attention.k_proj.weight"
    written[key] = written[key] + 1
    save_file(written, out / "model.safetensors", metadata={"format": "pt"})
    assert verify("wav2vec2", tmp_path / "fused.pt", out).unwrap().differing == (key,)
