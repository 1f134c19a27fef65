"""The planner: every key accounted for, deterministic, names and shapes only."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from wmap.pipeline import first_match, seq
from wmap.plan import Accept
from wmap.planner import make_plan
from wmap.render import collapse, plan_renderable
from wmap.transforms import PARAMS, Layout, refuse, rename, route_weight_norm, skip, tie

PIPELINE = seq(
    first_match(
        "test",
        [
            rename("encoder.layers.*.fc1", "enc.layers.*.ff.dense1", PARAMS),
            rename("encoder.layers.*.fc2", "enc.layers.*.ff.dense2", PARAMS),
            rename("quantizer.vq.layers.*._codebook", "q.layers.*.codebook"),
            rename("encoder.layers.*", "enc.layers.*.other"),
            tie("embed", "emb", "head"),
            skip("_ema", "teacher"),
            refuse("groupnorm", "not representable"),
        ],
    ),
    route_weight_norm(),
)

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "encoder",
            "layers",
            "fc1",
            "fc10",
            "fc2",
            "weight",
            "bias",
            "embed",
            "embed_avg",
            "_ema",
            "quantizer",
            "vq",
            "_codebook",
            "weight_proj",
            "groupnorm",
            "0",
            "1",
            "11",
            "",
        ]
    ),
    st.text(min_size=0, max_size=12),
)
KEYS = st.lists(SEGMENT, min_size=1, max_size=7).map(".".join)
SHAPES = st.lists(st.integers(min_value=0, max_value=4), max_size=3).map(tuple)
LAYOUTS = st.dictionaries(KEYS, SHAPES, max_size=30)


@settings(max_examples=300, deadline=None)
@given(LAYOUTS, LAYOUTS)
def test_every_source_key_lands_in_exactly_one_category(source: Layout, target: Layout) -> None:
    plan = make_plan(PIPELINE, source, target)
    categories = [
        {a.source for a in plan.applied},
        {s.key for s in plan.skipped},
        {r.key for r in plan.refused},
        set(plan.unused),
        {m.source for m in plan.shape_mismatches},
        {u.source for u in plan.unknown_targets},
        {s for c in plan.conflicts for s in c.sources[1:]},
    ]
    # A tied source may be applied to one target and mismatch/unknown on another: count decisions.
    decided = (
        {a.source for a in plan.applied}
        | {m.source for m in plan.shape_mismatches}
        | {u.source for u in plan.unknown_targets}
        | {s for c in plan.conflicts for s in c.sources[1:]}
    )
    others = [categories[1], categories[2], categories[3]]
    for key in source:
        assert sum(key in c for c in others) + (key in decided) == 1, key
    written = [a.target for a in plan.applied]
    assert len(written) == len(set(written)), "a target was written twice"
    assert set(plan.missing) == set(target) - set(written) - {m.target for m in plan.shape_mismatches}
    json.dumps(plan.to_json())
    plan_renderable(plan)


@settings(max_examples=100, deadline=None)
@given(LAYOUTS, LAYOUTS)
def test_planning_is_deterministic(source: Layout, target: Layout) -> None:
    assert make_plan(PIPELINE, source, target) == make_plan(PIPELINE, dict(source), dict(target))


@given(st.integers(min_value=0, max_value=500), st.integers(min_value=0, max_value=500))
def test_wildcards_map_indices_by_value(i: int, j: int) -> None:
    source = {f"encoder.layers.{i}.fc1.weight": (2, 3), f"encoder.layers.{j}.fc2.bias": (2,)}
    target = {f"enc.layers.{i}.ff.dense1.weight": (2, 3), f"enc.layers.{j}.ff.dense2.bias": (2,)}
    plan = make_plan(PIPELINE, source, target)
    assert plan.is_clean()
    assert {(a.source, a.target) for a in plan.applied} == {
        (f"encoder.layers.{i}.fc1.weight", f"enc.layers.{i}.ff.dense1.weight"),
        (f"encoder.layers.{j}.fc2.bias", f"enc.layers.{j}.ff.dense2.bias"),
    }


def test_adversarial_names_go_to_their_own_targets() -> None:
    source = {
        "encoder.layers.0.fc10.weight": (1,),
        "quantizer.vq.layers.0._codebook.embed": (4, 2),
        "quantizer.vq.layers.0._codebook.embed_avg": (4, 2),
        "quantizer.weight_proj": (3,),
    }
    target = {
        "enc.layers.0.other.fc10.weight": (1,),
        "q.layers.0.codebook.embed": (4, 2),
        "q.layers.0.codebook.embed_avg": (4, 2),
    }
    plan = make_plan(PIPELINE, source, target)
    assert {a.source: a.target for a in plan.applied} == {
        "encoder.layers.0.fc10.weight": "enc.layers.0.other.fc10.weight",
        "quantizer.vq.layers.0._codebook.embed": "q.layers.0.codebook.embed",
        "quantizer.vq.layers.0._codebook.embed_avg": "q.layers.0.codebook.embed_avg",
    }
    assert plan.unused == ("quantizer.weight_proj",)
    assert not plan.is_clean()
    assert plan.is_clean(Accept(unused=frozenset({"quantizer.weight_proj"})))


def test_problems_are_reported_not_applied() -> None:
    source = {
        "encoder.layers.0.fc1.weight": (2, 3),
        "encoder.layers.0.fc1.bias": (9,),
        "groupnorm.weight": (1,),
        "nothing": (1,),
    }
    target = {"enc.layers.0.ff.dense1.weight": (2, 3), "enc.layers.0.ff.dense1.bias": (2,), "extra": (1,)}
    plan = make_plan(PIPELINE, source, target)
    assert [a.source for a in plan.applied] == ["encoder.layers.0.fc1.weight"]
    assert [(m.source, m.source_shape, m.target_shape) for m in plan.shape_mismatches] == [
        ("encoder.layers.0.fc1.bias", (9,), (2,))
    ]
    assert [r.key for r in plan.refused] == ["groupnorm.weight"]
    assert plan.unused == ("nothing",)
    assert plan.missing == ("extra",)
    assert plan.result().failure().plan is plan
    data = plan.to_json()
    assert data["clean"] is False and data["missing"] == ["extra"]


def test_two_sources_for_one_target_is_a_conflict() -> None:
    pipeline = first_match("c", [rename("a", "t"), rename("b", "t")])
    plan = make_plan(pipeline, {"a.w": (1,), "b.w": (1,)}, {"t.w": (1,)})
    assert [(c.target, c.sources) for c in plan.conflicts] == [("t.w", ("a.w", "b.w"))]
    assert not plan.is_clean()


def test_collapse_merges_layer_indices() -> None:
    rows = [(f"encoder.layers.{i}.fc1.weight", f"enc.{i}.w", "2x3") for i in range(12)]
    assert collapse(rows, 2) == [("encoder.layers.{0..11}.fc1.weight", "enc.{0..11}.w", "2x3")]
    assert collapse([("a.1",), ("a.2",), ("a.5",)]) == [("a.{1..2,5}",)]
