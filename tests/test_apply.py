"""End to end on a real small module pair: plan, apply, strict load, equal outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, weight_norm

from wmap.apply import apply_plan, load_into
from wmap.errors import PlanNotClean, TensorMismatch
from wmap.layout import build_on_meta, layout_of
from wmap.pipeline import first_match, seq
from wmap.planner import make_plan
from wmap.transforms import PARAMS, WEIGHT_NORM, lstm_leaves, rename, route_weight_norm


class Original(nn.Module):
    """An 'original' naming: Sequential indices, old-style weight norm."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(weight_norm(nn.Conv1d(2, 4, 3, padding=1)), nn.ReLU(), nn.Conv1d(4, 4, 1))
        self.lstm = nn.LSTM(4, 4, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        out: torch.Tensor = self.lstm(y.transpose(1, 2))[0]
        return out


class Ported(nn.Module):
    """The 'transformers' naming: named layers, parametrized weight norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_in = parametrizations.weight_norm(nn.Conv1d(2, 4, 3, padding=1))
        self.conv_out = nn.Conv1d(4, 4, 1)
        self.rnn = nn.LSTM(4, 4, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_out(torch.relu(self.conv_in(x)))
        out: torch.Tensor = self.rnn(y.transpose(1, 2))[0]
        return out


PIPELINE = seq(
    first_match(
        "toy",
        [
            rename("model.0", "conv_in", WEIGHT_NORM),
            rename("model.2", "conv_out", PARAMS),
            rename("lstm", "rnn", lstm_leaves(2)),
        ],
    ),
    route_weight_norm(),
)


def test_plan_apply_load_gives_equal_outputs() -> None:
    torch.manual_seed(0)
    original = Original().eval()
    target = build_on_meta(Ported)
    plan = make_plan(PIPELINE, layout_of(original), layout_of(target))
    assert plan.is_clean(), plan.problems()
    state = apply_plan(plan, original.state_dict()).unwrap()
    ported = load_into(target, state).unwrap()
    x = torch.randn(3, 2, 10)
    torch.testing.assert_close(ported(x), original(x), rtol=0, atol=1e-6)


def test_apply_refuses_an_unclean_plan_and_mismatched_tensors() -> None:
    original = Original()
    target = build_on_meta(Ported)
    partial = first_match("partial", [rename("model.2", "conv_out", PARAMS)])
    plan = make_plan(partial, layout_of(original), layout_of(target))
    assert isinstance(apply_plan(plan, original.state_dict()).failure(), PlanNotClean)

    good = make_plan(PIPELINE, layout_of(original), layout_of(target))
    tensors = dict(original.state_dict())
    tensors["model.2.bias"] = torch.zeros(7)
    error = apply_plan(good, tensors).failure()
    assert isinstance(error, TensorMismatch) and error.key == "model.2.bias"
    del tensors["model.2.bias"]
    assert "no such key" in apply_plan(good, tensors).failure().message


def test_tied_targets_get_their_own_storage() -> None:
    from wmap.transforms import tie

    plan = make_plan(
        first_match("t", [tie("emb", "a", "b")]), {"emb.weight": (2, 2)}, {"a.weight": (2, 2), "b.weight": (2, 2)}
    )
    value = torch.randn(2, 2)
    state = apply_plan(plan, {"emb.weight": value}).unwrap()
    assert state["a.weight"] is value
    torch.testing.assert_close(state["b.weight"], value)
    assert state["b.weight"].data_ptr() != value.data_ptr()


@pytest.mark.parametrize(
    ("make", "found"),
    [
        (lambda t: t.to(torch.complex64), "complex64"),
        (lambda t: t.to(torch.float8_e4m3fn), "float8_e4m3fn"),
        (lambda t: t.to_sparse(), "sparse"),
        (lambda t: t.to(torch.int64), "int64"),
    ],
)
def test_tensor_kinds_the_output_cannot_hold_are_refused_by_name(tmp_path: Path, make: Any, found: str) -> None:
    """By the plan, before any tensor is read (preview says so too); apply checks again."""
    from tests.helpers import reference_state
    from wmap.conversion import convert, model_of, preview

    state, _ = reference_state("encodec_32khz")
    key = "encoder.model.0.conv.conv.bias"
    state[key] = make(state[key])
    torch.save(state, tmp_path / "odd.pt")
    plan = preview("encodec_32khz", tmp_path / "odd.pt").unwrap().plan
    assert [(r.key, r.rule) for r in plan.refused] == [(key, "tensor kind")]
    assert found in plan.refused[0].reason and not plan.missing  # the refusal speaks for its target
    error = convert("encodec_32khz", tmp_path / "odd.pt", tmp_path / "hf").failure()
    assert key in error.message and found in error.message, error.message
    assert not (tmp_path / "hf").exists()
    unaware = preview("encodec_32khz").unwrap()  # planned without kinds (the reference layout)
    assert unaware.plan.is_clean()
    targets = {k: v.dtype for k, v in model_of(unaware).unwrap().state_dict().items()}
    assert key in apply_plan(unaware.plan, state, target_dtypes=targets).failure().message  # apply checks too


def test_a_safetensors_header_gives_the_plan_its_kinds(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from tests.helpers import reference_state
    from wmap.conversion import preview

    state, _ = reference_state("encodec_32khz")
    key = "encoder.model.0.conv.conv.bias"
    state[key] = state[key].to(torch.float8_e5m2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "odd.safetensors"))
    refused = preview("encodec_32khz", tmp_path / "odd.safetensors").unwrap().plan.refused
    assert [(r.key, r.rule) for r in refused] == [(key, "tensor kind")] and "F8_E5M2" in refused[0].reason


# --- gathered copies: many sources, one target, checked equal ---------------------------------

GATHER_SOURCE = {f"layers.{i}.rotary.inv_freq": (4,) for i in range(3)} | {"layers.0.fc.weight": (2, 2)}
GATHER_TARGET = {"positions.inv_freq": (4,), "layers.0.fc.weight": (2, 2)}


def _gathering() -> Any:
    from wmap.transforms import EXACT, gather

    return first_match(
        "copies", (gather("layers.*.rotary.inv_freq", "positions.inv_freq", EXACT), rename("layers", "layers"))
    )


def test_copies_are_gathered_into_one_target_and_checked_equal_when_applied() -> None:
    plan = make_plan(_gathering(), GATHER_SOURCE, GATHER_TARGET)
    assert plan.is_clean(), plan.problems()
    (gathered,) = plan.gathered
    assert gathered.target == "positions.inv_freq" and len(gathered.sources) == 3
    copy = torch.arange(4.0)
    tensors = {**{k: copy.clone() for k in GATHER_SOURCE if "rotary" in k}, "layers.0.fc.weight": torch.ones(2, 2)}
    state = apply_plan(plan, tensors).unwrap()
    assert torch.equal(state["positions.inv_freq"], copy) and state.keys() == GATHER_TARGET.keys()
    tensors["layers.2.rotary.inv_freq"] = copy + 1  # a fine-tune that changed one copy
    error = apply_plan(plan, tensors).failure()
    assert isinstance(error, TensorMismatch) and error.key == "layers.2.rotary.inv_freq"
    assert "layers.0.rotary.inv_freq" in error.expected


def test_two_sources_of_a_plain_rename_still_conflict() -> None:
    """Negative control: only a gather rule's sources may share a target."""
    from wmap.transforms import EXACT

    both = first_match(
        "two",
        (
            rename("layers.0.rotary.inv_freq", "positions.inv_freq", EXACT),
            rename("layers.1.rotary.inv_freq", "positions.inv_freq", EXACT),
        ),
    )
    plan = make_plan(both, GATHER_SOURCE, GATHER_TARGET)
    assert plan.conflicts and not plan.gathered


def test_the_way_back_fans_a_gathered_target_out_to_every_copy() -> None:
    from wmap.planner import reverse_plan
    from wmap.reverse import predicted_layout, reverse

    back = reverse(_gathering()).unwrap()
    plan = reverse_plan(back, GATHER_TARGET, GATHER_SOURCE)
    assert plan.is_clean(), plan.problems()
    copies = sorted(a.target for a in plan.applied if a.source == "positions.inv_freq")
    assert copies == [f"layers.{i}.rotary.inv_freq" for i in range(3)]
    state = apply_plan(plan, {"positions.inv_freq": torch.arange(4.0), "layers.0.fc.weight": torch.ones(2, 2)})
    assert all(torch.equal(state.unwrap()[k], torch.arange(4.0)) for k in copies)
    # known only through the rules (fairseq's layout): one copy under every layer the rest names
    assert set(predicted_layout(back, GATHER_TARGET)) == {"layers.0.fc.weight", "layers.0.rotary.inv_freq"}


# --- joined parts: a fused tensor split forward, joined back -------------------------------------

FUSED = {"blocks.0.attn.qkv.weight": (6, 2), "blocks.0.attn.qkv.bias": (6,)}
SPLIT = {
    f"layers.0.{p}.{leaf}": (2, 2) if leaf == "weight" else (2,) for p in ("q", "k", "v") for leaf in ("weight", "bias")
}


def _fused() -> Any:
    from wmap.transforms import split

    return first_match("attention", (split("blocks.*.attn.qkv", ("layers.*.q", "layers.*.k", "layers.*.v")),))


def test_a_split_reverses_into_a_join_that_gives_back_the_fused_tensor() -> None:
    from wmap.reverse import reverse

    tensors = {"blocks.0.attn.qkv.weight": torch.randn(6, 2), "blocks.0.attn.qkv.bias": torch.randn(6)}
    forward = make_plan(_fused(), FUSED, SPLIT)
    assert forward.is_clean(), forward.problems()
    parts = apply_plan(forward, tensors).unwrap()
    back = make_plan(reverse(_fused()).unwrap(), SPLIT, FUSED)
    assert back.is_clean(), back.problems()
    assert {j.target for j in back.joined} == set(FUSED) and not back.applied
    (weight,) = [j for j in back.joined if j.target.endswith("weight")]
    assert weight.sources == ("layers.0.q.weight", "layers.0.k.weight", "layers.0.v.weight")
    joined = apply_plan(back, parts).unwrap()
    assert all(torch.equal(joined[k], tensors[k]) for k in tensors)


def test_a_join_with_a_part_missing_leaves_the_target_missing() -> None:
    """Negative control: two of three parts do not make a fused tensor."""
    from wmap.reverse import reverse

    partial = {k: v for k, v in SPLIT.items() if ".v." not in k}
    back = make_plan(reverse(_fused()).unwrap(), partial, FUSED)
    assert set(back.missing) == set(FUSED) and not back.joined and len(back.unused) == 4


def test_a_weight_norm_pair_folds_into_a_plain_conv_and_unfolds_back() -> None:
    """``fold``: DAC-style ``weight_g``/``weight_v`` -> a plain conv's weight (on the CPU in float32),
    outputs equal; reversed, the pair a weight-norm conv loads strictly, outputs equal again."""
    from wmap.reverse import reverse
    from wmap.transforms import EXACT, fold

    torch.manual_seed(0)
    normed = weight_norm(nn.Conv1d(3, 4, 5))
    plain = nn.Conv1d(3, 4, 5)
    rules = first_match("conv", (fold("conv", "layer"), rename("conv.bias", "layer.bias", EXACT)))
    source = {f"conv.{k}": v for k, v in normed.state_dict().items()}
    target = {f"layer.{k}": tuple(v.shape) for k, v in plain.state_dict().items()}
    plan = make_plan(rules, {k: tuple(v.shape) for k, v in source.items()}, target)
    assert plan.is_clean(), plan.problems() and len(plan.joined) == 1
    state = apply_plan(plan, source).unwrap()
    plain.load_state_dict({k.removeprefix("layer."): v for k, v in state.items()}, strict=True)
    x = torch.randn(2, 3, 20)
    torch.testing.assert_close(plain(x), normed(x), rtol=0, atol=1e-6)
    back_plan = make_plan(reverse(rules).unwrap(), target, {k: tuple(v.shape) for k, v in source.items()})
    assert back_plan.is_clean(), back_plan.problems()
    back = apply_plan(back_plan, state).unwrap()
    again = weight_norm(nn.Conv1d(3, 4, 5))
    again.load_state_dict({k.removeprefix("conv."): v for k, v in back.items()}, strict=True)
    torch.testing.assert_close(again(x), normed(x), rtol=0, atol=1e-6)
    folded_again = apply_plan(plan, back).unwrap()  # g is the norm torch's kernel computes: w comes back exactly
    assert torch.equal(folded_again["layer.weight"], state["layer.weight"])


def test_a_stacked_tensor_unstacks_by_index_and_stacks_back() -> None:
    """``unstack``: one ``[layers, ...]`` tensor, one index to each layer's key; reversed, ``stack``
    gives the tensor back. The negative control: a layer missing leaves the stacked target missing."""
    from wmap.reverse import reverse
    from wmap.transforms import unstack

    rules = first_match("stacked", (unstack("scales", ("layers.0.scale", "layers.1.scale", "layers.2.scale")),))
    stacked = {"scales": (3, 4)}
    per_layer = {f"layers.{i}.scale": (4,) for i in range(3)}
    tensors = {"scales": torch.randn(3, 4)}
    plan = make_plan(rules, stacked, per_layer)
    assert plan.is_clean(), plan.problems()
    layers = apply_plan(plan, tensors).unwrap()
    assert all(torch.equal(layers[f"layers.{i}.scale"], tensors["scales"][i]) for i in range(3))
    back = make_plan(reverse(rules).unwrap(), per_layer, stacked)
    assert back.is_clean(), back.problems() and len(back.joined) == 1
    assert torch.equal(apply_plan(back, layers).unwrap()["scales"], tensors["scales"])
    partial = make_plan(reverse(rules).unwrap(), {k: v for k, v in per_layer.items() if "2" not in k}, stacked)
    assert partial.missing == ("scales",) and not partial.joined


def test_a_stack_of_more_than_its_targets_is_a_shape_mismatch_not_rows_left_behind() -> None:
    """``unstack`` takes every index: a stack of four for three targets (fairseq adapters of more corpora
    than the target holds) is a mismatch the plan names, where one more target makes it clean."""
    from wmap.transforms import unstack

    rules = first_match("stacked", (unstack("scales", ("layers.0.scale", "layers.1.scale", "layers.2.scale")),))
    per_layer = {f"layers.{i}.scale": (4,) for i in range(3)}
    plan = make_plan(rules, {"scales": (4, 4)}, per_layer)
    assert not plan.is_clean() and {m.target for m in plan.shape_mismatches} == set(per_layer), plan.problems()
    assert make_plan(rules, {"scales": (3, 4)}, per_layer).is_clean()
