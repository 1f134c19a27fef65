"""The memoised planner decides exactly as the pipeline does, key by key."""

from __future__ import annotations

import os
import random
from functools import partial

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from wmap.bulk import NATIVE
from wmap.compiled import CompiledPipeline
from wmap.pipeline import first_match, optional, scoped, seq
from wmap.transforms import (
    PARAMS,
    WEIGHT_NORM,
    Layout,
    Mapped,
    lstm_leaves,
    refuse,
    rename,
    route_weight_norm,
    skip,
    tie,
)

PIPELINE = seq(
    optional(rename("final_proj.0", "final_proj")),
    first_match(
        "mixed",
        [
            rename("encoder.model.0.conv", "encoder.layers.0.first", WEIGHT_NORM),
            rename("encoder.model.*.conv", "encoder.layers.*.conv", WEIGHT_NORM | PARAMS),
            rename("encoder.model.*.lstm", "encoder.layers.*.lstm", lstm_leaves(2)),
            rename("conv_layers.*.2.1", "conv_layers.*.layer_norm", PARAMS),
            rename("conv_layers.0.2", "conv_layers.0.layer_norm", PARAMS),
            refuse("conv_layers.*.2", "group norm"),
            rename("blocks.*.sub.*", "b.*.s.*"),
            rename("swap.*.*", "swapped.*.*"),
            tie("embed", "emb", "head.7"),
            scoped("w2v.model", "inner", first_match("in", [rename("layers.*.fc1", "layers.*.dense", PARAMS)])),
            skip("final_proj", "head"),
        ],
    ),
    route_weight_norm(),
)

SEGMENT = st.one_of(
    st.sampled_from(
        [
            "encoder",
            "model",
            "conv",
            "lstm",
            "weight_g",
            "weight",
            "bias",
            "weight_ih_l1",
            "conv_layers",
            "blocks",
            "sub",
            "swap",
            "embed",
            "w2v",
            "layers",
            "fc1",
            "final_proj",
            "2",
            "1",
            "0",
            "7",
        ]
    ),
    st.integers(min_value=0, max_value=12).map(str),
    st.text(alphabet="0123456789.{}x", max_size=4),
    st.sampled_from(["\x00", "é", "7\n", "٣"]),  # the kernels' separators, non-ASCII, a non-ASCII digit
)
KEYS = st.lists(SEGMENT, min_size=1, max_size=6).map(".".join)


def _direct(key: str, target: Layout) -> object:
    outcome = PIPELINE.apply(key, target)
    if isinstance(outcome, Mapped):
        return tuple((t.key, t.tied_to) for t in outcome.targets), outcome.rules
    return outcome


@settings(max_examples=400, deadline=None)
@given(st.lists(KEYS, max_size=40), st.lists(KEYS, max_size=20))
def test_memoised_decisions_equal_direct_ones(keys: list[str], target_keys: list[str]) -> None:
    target = {k: (1,) for k in target_keys} | {
        "encoder.layers.3.conv.parametrizations.weight.original0": (1,),
        "encoder.layers.5.conv.weight_g": (1,),
    }
    compiled = CompiledPipeline(PIPELINE)
    for key in [*keys, *keys]:  # the second pass is served from the memo
        assert compiled.decide(key, target) == _direct(key, target), key


CORE = seq(*PIPELINE.stages[:-1])  # without the target-dependent routing: lint is memoised


@settings(max_examples=300, deadline=None)
@given(st.lists(KEYS, max_size=40), st.lists(KEYS, max_size=20))
def test_memoised_lint_equals_direct_lint(keys: list[str], target_keys: list[str]) -> None:
    target = {k: (1,) for k in target_keys}
    for pipeline in (CORE, PIPELINE):  # memoised per shape, and (routing) key by key
        compiled = CompiledPipeline(pipeline)
        for key in [*keys, *keys]:
            assert compiled.lint(key, target) == pipeline.lint(key, target), key


def test_literal_indices_are_not_generalised() -> None:
    compiled = CompiledPipeline(PIPELINE)
    target: Layout = {}
    assert compiled.decide("encoder.model.5.conv.weight_g", target) == _direct("encoder.model.5.conv.weight_g", target)
    # 0 is a literal in a rule: not served from the memo entry for 5
    assert compiled.decide("encoder.model.0.conv.weight_g", target) == (
        (("encoder.layers.0.first.weight_g", None),),
        ("encoder.model.0.conv -> encoder.layers.0.first [weight-norm]",),
    )
    assert compiled.decide("swap.3.4.x", target) == ((("swapped.3.4.x", None),), ("swap.*.* -> swapped.*.*",))
    assert compiled.decide("swap.4.3.x", target) == ((("swapped.4.3.x", None),), ("swap.*.* -> swapped.*.*",))
    assert compiled.decide("swap.5.5.x", target) == ((("swapped.5.5.x", None),), ("swap.*.* -> swapped.*.*",))


TARGET_NAMES = st.lists(KEYS, max_size=30)


KERNELS = [
    pytest.param(False, id="python"),
    pytest.param(
        True,
        id="native",
        marks=pytest.mark.skipif(not NATIVE and not os.environ.get("WMAP_REQUIRE_NATIVE"), reason="C kernel not built"),
    ),
]


def test_the_c_kernel_is_built_where_required() -> None:
    """The tests session sets WMAP_REQUIRE_NATIVE: there the C kernel must have been built and be used."""
    if os.environ.get("WMAP_REQUIRE_NATIVE"):
        assert NATIVE


@pytest.mark.parametrize("native", KERNELS)
@settings(max_examples=300, deadline=None)
@given(keys=st.lists(KEYS, max_size=40, unique=True), target_keys=TARGET_NAMES, mirror=st.booleans(), data=st.data())
def test_bulk_planning_equals_key_by_key(
    native: bool, keys: list[str], target_keys: list[str], mirror: bool, data: st.DataObject
) -> None:
    from wmap.bulk import bulk_plan
    from wmap.compiled import CompiledPipeline
    from wmap.plan import _plan_key_by_key

    source = {key: (2,) for key in keys}
    target: dict[str, tuple[int, ...]] = {k: (2,) for k in target_keys}
    if mirror:  # make most plans clean, so that the bulk path is taken
        for key in keys:
            decision = CompiledPipeline(PIPELINE).decide(key, {})
            if isinstance(decision, tuple):
                target.update({name: (2,) for name, _ in decision[0]})
        # the target's own order: as the source's, or shuffled (the C kernel's order guess then fails)
        target = dict(data.draw(st.permutations(list(target.items()))))
    bulk = bulk_plan(CompiledPipeline(PIPELINE), source, target, min_keys=0, native=native)
    event("bulk" if bulk is not None else "key by key")
    if bulk is not None:
        assert bulk == _plan_key_by_key(CompiledPipeline(PIPELINE), source, target)


@pytest.mark.parametrize("native", KERNELS)
@pytest.mark.parametrize("order", ["same", "reversed", "blocks", "shuffled"])
def test_bulk_planning_of_many_shapes_and_long_keys(native: bool, order: str) -> None:
    """Thousands of distinct shapes (the C shape table grows), keys longer than any buffer's first
    size, target orders unlike the source's: the same plan as key by key, and in bulk."""
    from wmap.bulk import bulk_plan
    from wmap.plan import _plan_key_by_key

    pipeline = first_match("all", [rename("src.*", "dst.*")])
    long = "x" * 3000
    keys = [f"src.{i}.k{i % 3000}.{long if i % 7 == 0 else 'w'}.v{i % 5}" for i in range(9000)]
    source = {key: (i % 4,) for i, key in enumerate(keys)}
    target = {key.replace("src.", "dst.", 1): shape for key, shape in source.items()}
    items = list(target.items())
    if order == "reversed":
        items.reverse()
    elif order == "blocks":  # runs in order, the runs out of order: the C kernel switches between guessing and hashing
        items = [item for start in range(0, len(items), 50)[::-1] for item in items[start : start + 50]]
    elif order == "shuffled":
        random.Random(0).shuffle(items)
    target = dict(items)
    bulk = bulk_plan(CompiledPipeline(pipeline), source, target, min_keys=0, native=native)
    assert bulk is not None and bulk.is_clean()
    assert bulk == _plan_key_by_key(CompiledPipeline(pipeline), source, target)
    # one wrong shape: bulk gives up, the detailed planner reports it
    source[keys[-1]] = (99,)
    assert bulk_plan(CompiledPipeline(pipeline), source, target, min_keys=0, native=native) is None


@pytest.mark.parametrize("native", KERNELS)
def test_bulk_planning_of_a_real_layout_equals_key_by_key(native: bool) -> None:
    from wmap.bulk import bulk_plan
    from wmap.compiled import CompiledPipeline
    from wmap.models import get_model
    from wmap.plan import _plan_key_by_key

    for name in ("data2vec_audio_ctc", "distilhubert", "wav2vec2_mbart", "encodec_48khz"):
        spec = get_model(name).unwrap()
        layout, meta = spec.reference_layout()
        prepared_config = spec.config_from_checkpoint(meta, layout).unwrap().config
        from wmap.layout import build_on_meta, layout_of

        target = layout_of(build_on_meta(partial(spec.build, prepared_config)))
        pipeline = spec.pipeline(prepared_config, meta)
        bulk = bulk_plan(CompiledPipeline(pipeline), layout, target, min_keys=0, native=native)
        expected = _plan_key_by_key(CompiledPipeline(pipeline), layout, target)
        assert expected.is_clean()
        if name.startswith("data2vec"):
            assert bulk is not None, "a clean layout without routing is planned in bulk"
        if bulk is not None:
            assert bulk == expected, name


def test_a_large_plan_lists_every_ambiguous_key() -> None:
    """Bulk planning leaves an ambiguous layout to the key-by-key planner, which lists every key."""
    from wmap.plan import make_plan

    pipeline = first_match("g", [rename("a.*", "x.*"), rename("a.*.w", "y.*.w")])  # both write a.N.w
    source = {f"a.{i}.w": (1,) for i in range(5000)} | {f"a.{i}.v": (1,) for i in range(5000)}
    target = {f"x.{i}.{leaf}": (1,) for i in range(5000) for leaf in "wv"}
    plan = make_plan(pipeline, source, target)
    assert plan.is_clean() and len(plan.applied) == 10_000
    assert [a.key for a in plan.ambiguous] == [f"a.{i}.w" for i in range(5000)]
    assert make_plan(pipeline, source, target, lint=False).ambiguous == ()


def _c_kernel_hash(data: bytes) -> int:
    """The C kernel's shape hash (``hash_bytes`` in ``_bulk_native.c``), to craft colliding shapes."""
    mask = (1 << 64) - 1
    value = (0x9E3779B97F4A7C15 ^ len(data)) & mask
    whole = len(data) - len(data) % 8
    for start in range(0, whole, 8):
        value = ((value ^ int.from_bytes(data[start : start + 8], "little")) * 0xFF51AFD7ED558CCD) & mask
        value ^= value >> 32
    value = ((value ^ int.from_bytes(data[whole:], "little")) * 0xC4CEB9FE1A85EC53) & mask
    return value ^ (value >> 29)


@pytest.mark.skipif(not NATIVE, reason="C kernel not built")
def test_colliding_key_shapes_are_planned_key_by_key() -> None:
    """Key shapes crafted to collide in the C kernel's (unkeyed) shape table: it gives up after a
    bounded probe instead of probing quadratically, and the plan is still the key-by-key one."""
    from wmap.bulk import bulk_plan
    from wmap.plan import _plan_key_by_key, make_plan

    colliding = [key for key in (f"p{n}x.w" for n in range(400_000)) if _c_kernel_hash(key.encode()) & 0x3FF == 0]
    assert len(colliding) >= 150
    control = [f"q{n}x.w" for n in range(len(colliding))]
    pipeline = first_match("all", [rename("r", "s")])  # every key unused: one memo entry per shape
    for keys, collides in ((colliding, True), (control, False)):
        source = {key: (1,) for key in keys}
        bulk = bulk_plan(CompiledPipeline(pipeline), source, {}, min_keys=0)
        assert (bulk is None) is collides
        assert make_plan(pipeline, source, {}) == _plan_key_by_key(CompiledPipeline(pipeline), source, {})
