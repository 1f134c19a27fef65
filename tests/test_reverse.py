"""reverse: the way back derived from the forward rules; refused where a rule declares no inverse."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Result

from wmap.conversion import model_of, preview
from wmap.errors import NotInvertible
from wmap.layout import layout_of
from wmap.pipeline import Reverser, Scoped, first_match, groups, optional, scoped, seq, when
from wmap.plan import Accept
from wmap.planner import make_plan, reverse_plan
from wmap.registry import registered
from wmap.reverse import Unrecoverable, reverse, rules_of, tied_primary
from wmap.transforms import (
    EXACT,
    NO_MATCH,
    PARAMS,
    WEIGHT_NORM,
    Layout,
    Mapped,
    Outcome,
    Target,
    Transform,
    rename,
    route_weight_norm,
    skip,
    tie,
)


@pytest.mark.parametrize("name", [family.name for family in registered()])
def test_every_family_reverses_its_reference_layout_key_for_key(name: str) -> None:
    """Forward on the original's reference layout, then the derived reverse against it: every
    converted key goes back to the key it came from, and what the forward direction skipped or refused
    is named unrecoverable, nothing else."""
    prepared = preview(name).unwrap()
    layout, _ = prepared.spec.reference_layout().unwrap()
    back = reverse_plan(reverse(prepared.pipeline).unwrap(), layout_of(model_of(prepared).unwrap()), layout)
    forward = {a.source: a.target for a in prepared.plan.applied if a.tied_to is None}
    returned = {a.source: a.target for a in back.applied}  # converted key -> original key
    returned |= {part: j.target for j in back.joined for part in j.sources}  # q, k, v -> the fused qkv
    assert {source: returned.get(target) for source, target in forward.items()} == {s: s for s in forward}
    gone = {s.key for s in prepared.plan.skipped} | {r.key for r in prepared.plan.refused}
    assert {u.key for u in back.unrecoverable} == gone
    made = {m.target for m in prepared.plan.made}  # made from the config forward: the way back drops them
    assert not back.missing and set(back.unused) <= made and not back.shape_mismatches and not back.conflicts


def test_a_transform_without_an_inverse_is_refused_by_name_and_one_with_it_is_used() -> None:
    @attrs.frozen
    class Shift:
        """Sends layer 5 to layer 6 (a user's rule)."""

        def apply(self, key: str, target: Layout) -> Outcome:
            return Mapped((Target(key.replace("5", "6")),), ("shift",)) if "5" in key else NO_MATCH

    @attrs.frozen
    class ShiftBack:
        def apply(self, key: str, target: Layout) -> Outcome:
            return Mapped((Target(key.replace("6", "5")),), ("shift back",)) if "6" in key else NO_MATCH

    @attrs.frozen
    class InvertibleShift(Shift):
        def inverse(self) -> ShiftBack:
            return ShiftBack()

    failure = reverse(first_match("g", [rename("a", "b"), Shift()])).failure()
    assert isinstance(failure, NotInvertible) and failure.kind == "Shift" and "inverse()" in failure.message
    back = reverse(seq(first_match("g", [rename("a", "b"), InvertibleShift()]))).unwrap()
    plan = make_plan(back, {"l.6.w": (1,), "b.w": (2,)}, {"l.5.w": (1,), "a.w": (2,)})
    assert plan.is_clean() and {a.target for a in plan.applied} == {"l.5.w", "a.w"}


def test_tie_scope_when_optional_and_weight_norm_reverse() -> None:
    rules = seq(
        optional(rename("old", "new")),
        first_match(
            "m",
            [
                tie("emb", "model.embed", "head"),
                scoped("enc.*", "model.layers.*", first_match("l", [rename("c.0", "conv", PARAMS)])),
                when("group", False, rename("n.2", "norm", PARAMS), rename("n.2.1", "norm", PARAMS)),
                rename("pos.0", "pos.conv", WEIGHT_NORM),
                skip("teacher", "EMA teacher"),
            ],
        ),
        route_weight_norm(),
    )
    original = {
        "emb.weight": (5, 2),
        "enc.0.c.0.weight": (2, 2),
        "enc.1.c.0.bias": (2,),
        "n.2.1.weight": (2,),
        "pos.0.weight_g": (1, 1, 3),
        "pos.0.weight_v": (2, 2, 3),
        "teacher.w": (3,),
    }
    converted_layout = {
        "model.embed.weight": (5, 2),
        "head.weight": (5, 2),
        "model.layers.0.conv.weight": (2, 2),
        "model.layers.1.conv.bias": (2,),
        "norm.weight": (2,),
        "pos.conv.parametrizations.weight.original0": (1, 1, 3),
        "pos.conv.parametrizations.weight.original1": (2, 2, 3),
    }
    forward = make_plan(rules, original, converted_layout)
    assert forward.is_clean() and len(forward.skipped) == 1
    back = reverse(rules).unwrap()
    plan = reverse_plan(back, converted_layout, original)
    assert {a.source: a.target for a in plan.applied} == {
        a.target: a.source for a in forward.applied if a.tied_to is None
    }
    assert [s.key for s in plan.skipped] == ["head.weight"] and tied_primary(
        back, "head.weight"
    ) == "model.embed.weight"
    assert [u.key for u in plan.unrecoverable] == ["teacher.w"] and "EMA teacher" in plan.unrecoverable[0].reason
    assert not plan.is_clean() and plan.is_clean(_accepting("teacher.w"))


def _accepting(*keys: str) -> Accept:
    return Accept(unrecoverable=frozenset(keys))


SEGMENT = st.sampled_from(["a", "b", "c", "0", "1"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.lists(SEGMENT, min_size=1, max_size=3), st.lists(SEGMENT, min_size=1, max_size=3)),
        min_size=1,
        max_size=5,
    ),
    st.data(),
)
def test_reversing_random_renames_takes_every_key_back(
    pairs: list[tuple[list[str], list[str]]], data: st.DataObject
) -> None:
    """For renames whose targets do not collide, the derived reverse maps every converted key back."""
    rules = [rename(".".join(s), "t." + ".".join(t) + f".r{i}", PARAMS) for i, (s, t) in enumerate(pairs)]
    forward_rules = first_match("random", rules)
    keys = {".".join(s) + "." + data.draw(st.sampled_from(["weight", "bias"])) for s, _ in pairs}
    original = {k: (1,) for k in keys}
    outcomes = {k: forward_rules.apply(k, {}) for k in keys}
    converted = {o.targets[0].key: (1,) for o in outcomes.values() if isinstance(o, Mapped)}
    forward = make_plan(forward_rules, original, converted)
    back = reverse_plan(reverse(forward_rules).unwrap(), converted, original)
    assert {a.source: a.target for a in back.applied} == {a.target: a.source for a in forward.applied}


def _exportable() -> list[str]:
    """The families with a way back whose source is one file (a family that reads several, audiocraft's
    MusicGen and AudioGen, goes back to several: tests/models/test_musicgen.py, with audiocraft's loaders)."""
    from wmap.registry import get_model

    return [f.name for f in registered() if (spec := get_model(f.name).unwrap()).export is not None and not spec.reads]


CONTAINERS = {
    "whisper": "model_state_dict",
    "distilhubert": "Distiller",
    "dac": "state_dict",
    "encodec_audiocraft": "best_state",
}
"""Where the original's file keeps its state dict (fairseq: ``model``)."""

LEFT_OUT = {"data2vec2_audio": ("_ema", "modality_encoders.AUDIO.decoder")}
"""Training-only modules an export's config leaves out, so that the original builds none (data2vec 2.0's
EMA teacher and decoder, as fairseq's own ``remove_pretraining_modules``): not in the file, not asked for."""

FORMAT_MARKERS = {"decoder.version"}
"""Constants the original's loader reads (fairseq's decoder format), written back as the current one."""

TIED_COPIES = {"decoder.output_projection.weight"}
"""Keys the original's state dict holds as a second name of one tensor (fairseq's tied output
projection): skipped forward, written back as the primary's tensor."""

TEACHERS = {"_ema"}
"""A model's copy the original's loader reads from the file (data2vec-audio's EMA teacher): skipped
forward, written back as the encoder itself (``with_teacher``)."""


@pytest.mark.parametrize("name", _exportable())
def test_every_exportable_family_gives_back_every_converted_tensor(name: str, tmp_path: Path) -> None:
    """The original's real names and shapes (the bundled reference layout, random values): convert,
        export, and every converted tensor comes back byte for byte; export -> convert gives the same
        safetensors. Keys the forward direction skipped are unrecoverable and must be accepted by name, or made
    by the way back as the plan says."""
    from safetensors.torch import load_file

    from tests.helpers import fairseq_sentencepiece, reference_state
    from tests.originals import write_letter_dictionary
    from wmap.conversion import convert
    from wmap.fairseq.dictionary import FAIRSEQ_GLOBAL, Dictionary
    from wmap.way_back import export, preview_reverse

    state, meta = reference_state(name, smaller=True)
    container = CONTAINERS.get(name, "model")
    torch.save({**meta, container: state} if meta else state, tmp_path / "original.pt")
    letters = write_letter_dictionary(tmp_path) if name.endswith("_ctc") else None
    if name == "speech_to_text":  # its tokenizer: the sentencepiece model and fairseq's dictionary beside it
        letters = fairseq_sentencepiece(tmp_path / "spm")[0]
    hf = convert(name, tmp_path / "original.pt", tmp_path / "hf", processor_file=letters).unwrap()
    forward = preview(name, tmp_path / "original.pt").unwrap().plan
    skipped = frozenset(s.key for s in forward.skipped)
    reverse_plan_ = preview_reverse(name, hf).unwrap().plan
    gone = {u.key for u in reverse_plan_.unrecoverable}  # named by the rules: keys, or their prefixes
    assert all(u.reason for u in reverse_plan_.unrecoverable)
    restored = FORMAT_MARKERS | TIED_COPIES | TEACHERS  # written back by the family's container, not by the rules
    restored |= {m.target for m in reverse_plan_.made}  # made by the way back (HuBERT's heads: empty)
    left_out = LEFT_OUT.get(name, ())
    assert all(any(k == g or k.startswith(g + ".") for g in (*gone, *left_out)) or k in restored for k in skipped), (
        skipped
    )
    refused = export(name, hf, tmp_path / "back.pt")
    if reverse_plan_.unrecoverable:
        assert refused.failure() is not None and not (tmp_path / "back.pt").exists()
    accept = Accept(unrecoverable=frozenset(u.key for u in reverse_plan_.unrecoverable))
    out = export(name, hf, tmp_path / "back.pt", accept=accept, overwrite=True).unwrap()
    with torch.serialization.safe_globals([(Dictionary, FAIRSEQ_GLOBAL)]):  # task_state: wmap's inert stand-in
        loaded = torch.load(out, weights_only=True)
    back = loaded.get(container, loaded) if isinstance(loaded, dict) else loaded
    for item in forward.applied:
        if item.tied_to is None:
            assert back[item.source].dtype == state[item.source].dtype
            assert torch.equal(back[item.source], state[item.source]), item.source
    assert set(state) - skipped <= set(back) <= set(state) | TEACHERS
    assert not any(k == g or k.startswith(g + ".") for g in left_out for k in back)
    assert set(back) - (set(state) - skipped) <= restored
    again = convert(name, out, tmp_path / "again").unwrap()  # a CTC export carries its dictionary
    first, second = load_file(hf / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_round_trip_catches_two_swapped_rules() -> None:
    """The negative control: a hand-written way back with two same-shape rules swapped (q and k)
    gives tensors back under each other's names, and the byte comparison fails."""
    forward = first_match("f", [rename("a.q", "x.q_proj", PARAMS), rename("a.k", "x.k_proj", PARAMS)])
    swapped = first_match("b", [rename("x.q_proj", "a.k", PARAMS), rename("x.k_proj", "a.q", PARAMS)])
    original = {"a.q.weight": torch.randn(2, 2), "a.k.weight": torch.randn(2, 2)}
    layout = {k: tuple(v.shape) for k, v in original.items()}
    converted_layout = {"x.q_proj.weight": (2, 2), "x.k_proj.weight": (2, 2)}
    converted = {a.target: original[a.source] for a in make_plan(forward, layout, converted_layout).applied}

    def back_with(rules: Transform) -> dict[str, torch.Tensor]:
        plan = reverse_plan(rules, converted_layout, layout)
        assert plan.is_clean()  # names and shapes alone cannot tell
        return {a.target: converted[a.source] for a in plan.applied}

    assert all(torch.equal(back_with(reverse(forward).unwrap())[k], v) for k, v in original.items())
    assert not all(torch.equal(back_with(swapped)[k], v) for k, v in original.items())


@attrs.frozen
class Logged:
    """A user's own combinator: it applies its inner transform; the walks enter it and the way back
    reverses it, with no change to wmap."""

    inner: Transform

    def apply(self, key: str, target: Layout) -> Outcome:
        return self.inner.apply(key, target)

    def children(self) -> tuple[Transform, ...]:
        return (self.inner,)

    def under(self) -> Scoped | None:
        return None

    def reversed(self, reverse: Reverser) -> Result[Transform, NotInvertible]:
        return reverse(self.inner).map(Logged)


def test_a_users_combinator_is_walked_and_reversed_like_wmaps_own() -> None:
    group = first_match("inside", (rename("a.*.w", "b.*.w", EXACT), skip("opt", "training only")))
    pipeline = seq(scoped("model", "net", Logged(group)), route_weight_norm())
    assert [(prefix, g.name) for prefix, g in groups(pipeline)] == [("model", "inside")]
    back = reverse(pipeline).unwrap()
    outcome = back.apply("net.b.3.w", {"model.a.3.w": (1,)})
    assert isinstance(outcome, Mapped) and [t.key for t in outcome.targets] == ["model.a.3.w"]
    assert [type(rule).__name__ for _, rule in rules_of(back)] == ["RenameBack", "Unrecoverable", "RouteWeightNorm"]
    assert [len(scopes) for scopes, rule in rules_of(back) if isinstance(rule, Unrecoverable)] == [1]


def test_a_users_combinator_around_a_transform_without_inverse_is_refused_naming_it() -> None:
    @attrs.frozen
    class Opaque:
        def apply(self, key: str, target: Layout) -> Outcome:
            return NO_MATCH

    failed = reverse(seq(Logged(Opaque())))
    assert isinstance(failed, Failure) and failed.failure().kind == "Opaque"


def test_reversed_twice_is_the_forward_rule_and_the_original_decides_between_two_joins() -> None:
    """``reverse(reverse(r))`` renames and splits as ``r`` does; back, of two splits that give the same
    parts (a fused tensor under two names), the join writes the name the original's layout holds."""
    from wmap.transforms import split

    forward = rename("a", "b", PARAMS)
    again = reverse(reverse(forward).unwrap()).unwrap()
    assert again.apply("a.weight", {}) == forward.apply("a.weight", {}) and again.apply("b.weight", {}) is NO_MATCH
    fused = split("attn.in_proj", ("q", "k", "v"))
    assert reverse(reverse(fused).unwrap()).unwrap().apply("attn.in_proj", {}) == fused.apply("attn.in_proj", {})
    both = first_match("attention", (split("attn.mha.in_proj", ("q", "k", "v")), fused))
    back = reverse(both).unwrap()
    for held in ("attn.in_proj", "attn.mha.in_proj"):
        outcome = back.apply("q", {held: (3, 2)})
        assert isinstance(outcome, Mapped) and outcome.targets[0].key == held
    first = back.apply("q", {})  # no layout to ask: the first rule's name
    assert isinstance(first, Mapped) and first.targets[0].key == "attn.mha.in_proj"
