"""The planner plans exactly as ``apply`` says, for every combinator and for a user's own transforms."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from wmap.pipeline import first_match, optional, scoped, seq, when
from wmap.planner import make_plan
from wmap.transforms import (
    NO_MATCH,
    PARAMS,
    Layout,
    Mapped,
    Outcome,
    Refused,
    Skipped,
    Target,
    Transform,
    refuse,
    rename,
    route_weight_norm,
    skip,
    tie,
)


@attrs.frozen
class LayerFiveElsewhere:
    """A user's transform with nothing but ``apply``: layer 5 goes to ``special``, other layers to ``blocks``."""

    def apply(self, key: str, target: Layout) -> Outcome:
        parts = key.split(".")
        if len(parts) < 3 or parts[0] != "layers":
            return NO_MATCH
        head = "special" if parts[1] == "5" else f"blocks.{parts[1]}"
        return Mapped((Target(".".join([head, *parts[2:]])),), ("layer five elsewhere",))


def test_a_user_transform_plans_as_its_apply_says() -> None:
    source = {f"layers.{i}.fc.weight": (2,) for i in range(8)}
    target = {f"blocks.{i}.fc.weight": (2,) for i in range(8) if i != 5} | {"special.fc.weight": (2,)}
    for pipeline in (
        first_match("g", [rename("other", "x"), LayerFiveElsewhere()]),
        seq(first_match("g", [LayerFiveElsewhere()]), route_weight_norm()),
    ):
        plan = make_plan(pipeline, source, target)
        assert plan.is_clean(), plan.problems(limit=3)
        assert {a.source: a.target for a in plan.applied}["layers.5.fc.weight"] == "special.fc.weight"


SEGMENT = st.sampled_from(["a", "b", "fc", "0", "1", "5", "weight", "bias", "weight_g"])
KEYS = st.lists(SEGMENT, min_size=1, max_size=4).map(".".join)


@st.composite
def leaf_rules(draw: st.DrawFn) -> Transform:
    left = draw(st.lists(st.sampled_from(["a", "b", "fc", "0", "*"]), min_size=1, max_size=2))
    right = [draw(st.sampled_from(["x", "y"])), *left]
    kind = draw(st.sampled_from(["rename", "params", "tie", "skip", "refuse", "user"]))
    source, dest = ".".join(left), ".".join(right)
    if kind == "rename":
        return rename(source, dest)
    if kind == "params":
        return rename(source, dest, PARAMS)
    if kind == "tie":
        return tie(source, dest, ".".join(["z", *left]))
    if kind == "skip":
        return skip(source, "because")
    if kind == "refuse":
        return refuse(source, "cannot")
    return LayerFiveElsewhere()


def pipelines(depth: int = 2) -> st.SearchStrategy[Transform]:
    if depth == 0:
        return leaf_rules()
    inner = pipelines(depth - 1)
    return st.one_of(
        leaf_rules(),
        st.lists(inner, min_size=1, max_size=4).map(lambda rules: first_match("g", rules)),
        st.lists(inner, min_size=1, max_size=2).map(lambda stages: seq(*stages, route_weight_norm())),
        inner.map(optional),
        st.tuples(st.booleans(), inner, st.none() | inner).map(lambda t: when("c", t[0], t[1], t[2])),
        st.tuples(st.sampled_from(["a", "b", "*"]), inner).map(
            lambda t: scoped(t[0], "s" if t[0] != "*" else "s.*", t[1])
        ),
    )


@settings(max_examples=300, deadline=None)
@given(
    pipeline=pipelines(),
    source=st.dictionaries(KEYS, st.sampled_from([(1,), (2,)]), max_size=12),
    target=st.dictionaries(KEYS.map(lambda k: "x." + k), st.sampled_from([(1,), (2,)]), max_size=12),
)
def test_the_plan_is_what_apply_says_key_by_key(pipeline: Transform, source: Layout, target: Layout) -> None:
    plan = make_plan(pipeline, source, target)
    outcomes = {key: pipeline.apply(key, target) for key in source}
    expected_targets = {
        (key, t.key) for key, outcome in outcomes.items() if isinstance(outcome, Mapped) for t in outcome.targets
    }
    placed = (
        {(a.source, a.target) for a in plan.applied}
        | {(m.source, m.target) for m in plan.shape_mismatches}
        | {(u.source, u.target) for u in plan.unknown_targets}
        | {(s, c.target) for c in plan.conflicts for s in c.sources[1:]}
    )
    assert placed == expected_targets
    assert {s.key for s in plan.skipped} == {k for k, o in outcomes.items() if isinstance(o, Skipped)}
    assert {r.key for r in plan.refused} == {k for k, o in outcomes.items() if isinstance(o, Refused)}
    assert set(plan.unused) == {k for k, o in outcomes.items() if o is NO_MATCH}
    assert make_plan(pipeline, source, target) == plan  # deterministic


def test_kinds_the_output_cannot_hold_or_of_the_wrong_number_kind_are_refused() -> None:
    rules = first_match("t", [rename("a", "x"), rename("b", "y"), rename("c", "z")])
    source = {"a.w": (2,), "b.w": (2,), "c.w": (2,)}
    target = {"x.w": (2,), "y.w": (2,), "z.w": (2,)}
    kinds = {"a.w": "float8_e4m3fn", "b.w": "int64", "c.w": "bfloat16"}
    plan = make_plan(rules, source, target, kinds=kinds, target_kinds=dict.fromkeys(target, "float32"))
    assert [(r.key, r.rule) for r in plan.refused] == [("a.w", "tensor kind"), ("b.w", "tensor kind")]
    assert "int64 tensor where y.w holds float32" in plan.refused[1].reason
    assert [a.target for a in plan.applied] == ["z.w"] and not plan.missing
    assert make_plan(rules, source, target).is_clean()  # without kinds: names and shapes only
