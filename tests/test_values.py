"""Value operations: each declared inverse undoes its operation (hypothesis properties)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wmap.planner import make_plan
from wmap.transforms import split
from wmap.values import Cast, Chunk, Reshape, Split, Transpose, WeightNormFold, WeightNormUnfold

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def tensor(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(0, 2), st.integers(0, 1000))
def test_split_with_unequal_sizes_and_concat_undo_each_other_exactly(sizes: list[int], dim: int, seed: int) -> None:
    shape = [2, 3, 2]
    shape[dim] = sum(sizes)
    t = tensor(tuple(shape), seed)
    op = Split(dim, tuple(sizes))
    parts = op.apply_all(t)
    assert [p.shape[dim] for p in parts] == sizes
    assert torch.equal(op.inverse().apply_all(parts), t)
    assert op.inverse().inverse() == op
    assert all(part.shape == tuple(s.shape(tuple(shape))) for part, s in zip(parts, op.parts(), strict=True))


@settings(max_examples=60, deadline=None)
@given(shapes, st.data(), st.integers(0, 1000))
def test_transpose_and_reshape_undo_themselves_exactly(shape: tuple[int, ...], data: st.DataObject, seed: int) -> None:
    t = tensor(shape, seed)
    first, second = data.draw(st.integers(0, len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
    op = Transpose(first, second)
    assert op.apply(t).shape == op.shape(shape)
    assert torch.equal(op.inverse().apply(op.apply(t)), t)
    flat = Reshape(shape, (t.numel(),))
    assert torch.equal(flat.inverse().apply(flat.apply(t)), t) and flat.apply(t).shape == flat.shape(shape)


@settings(max_examples=60, deadline=None)
@given(shapes, st.sampled_from([torch.float16, torch.bfloat16]), st.integers(0, 1000))
def test_a_widening_cast_is_undone_exactly(shape: tuple[int, ...], narrow: torch.dtype, seed: int) -> None:
    t = tensor(shape, seed).to(narrow)
    op = Cast(narrow, torch.float32)
    back = op.inverse().apply(op.apply(t))
    assert back.dtype == narrow and torch.equal(back, t)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=3).map(tuple), st.data(), st.integers(0, 1000))
def test_weight_norm_fold_and_unfold_respect_dim(shape: tuple[int, ...], data: st.DataObject, seed: int) -> None:
    """torch's own weight norm is the reference (``dim`` 0 as codecs use, 2 as wav2vec2's positional conv)."""
    dim = data.draw(st.integers(0, len(shape) - 1))
    w = tensor(shape, seed)
    g, v = WeightNormUnfold(dim).apply_all(w)
    assert torch.allclose(WeightNormFold(dim).apply_all(g, v), w, rtol=1e-6, atol=1e-6)  # unfold then fold
    expected_g = torch.norm_except_dim(w, 2, dim)  # what torch.nn.utils.weight_norm starts g from
    assert g.shape == expected_g.shape and torch.allclose(g, expected_g, rtol=1e-6, atol=1e-7)
    scaled_v = v * 3.0  # fold then unfold: the same weight, whatever v's scale
    w2 = WeightNormFold(dim).apply_all(g, scaled_v)
    g2, v2 = WeightNormUnfold(dim).apply_all(w2)
    assert torch.allclose(WeightNormFold(dim).apply_all(g2, v2), w2, rtol=1e-6, atol=1e-6)
    assert WeightNormFold(dim).inverse().inverse() == WeightNormFold(dim)


def test_a_split_rule_carries_its_parts_in_the_plan_and_checks_their_shapes() -> None:
    rule = split("l.*.in_proj_weight", ("l.*.q.weight", "l.*.k.weight", "l.*.v.weight"))
    target = {"l.0.q.weight": (4, 4), "l.0.k.weight": (4, 4), "l.0.v.weight": (4, 4)}
    plan = make_plan(rule, {"l.0.in_proj_weight": (12, 4)}, target)
    assert plan.is_clean() and [a.value for a in plan.applied] == [Chunk(0, i, 3) for i in range(3)]
    wrong = make_plan(rule, {"l.0.in_proj_weight": (10, 4)}, target)  # not three equal parts
    assert {m.target for m in wrong.shape_mismatches} == set(target)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), st.integers(0, 10_000))
def test_a_made_tensor_is_recognised_as_made_and_any_change_is_not(size: int, dtype: torch.dtype, seed: int) -> None:
    """The way back of a made tensor: dropped while it is still what would be made. ``is_made`` is
    true of what ``make`` makes in every dtype, and false once any one element changes."""
    from wmap.values import Identity, Zeros

    generator = torch.Generator().manual_seed(seed)
    for maker in (Identity(size), Zeros((size,))):
        made = maker.make(dtype)
        assert made.shape == maker.shape and made.dtype == dtype and maker.is_made(made)
        changed = made.clone().reshape(-1)
        changed[int(torch.randint(changed.numel(), (1,), generator=generator))] += 0.5
        assert not maker.is_made(changed.reshape(maker.shape))
        if made.numel() > 1:  # another shape is never what was made
            assert not maker.is_made(made.reshape(-1)[:-1])


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 4), st.data(), st.integers(0, 1000))
def test_a_stack_and_its_selects_undo_each_other_and_a_longer_stack_is_refused(
    shape: tuple[int, ...], count: int, data: st.DataObject, seed: int
) -> None:
    """``Stack(dim)``: its parts select each index back exactly; a select of a stack holding another
    number of parts than it was made for cannot apply (the plan's shape mismatch), so no part is left behind."""
    from wmap.values import Stack, shape_after

    dim = data.draw(st.integers(0, len(shape)))
    parts = [tensor(shape, seed + i) for i in range(count)]
    joiner = Stack(dim)
    stacked = joiner.join(parts)
    assert stacked.shape == joiner.shape_of([shape] * count)
    selects = [s for s in joiner.parts(count) if s is not None]
    assert all(torch.equal(s.apply(stacked), p) for s, p in zip(selects, parts, strict=True))
    longer = joiner.join([*parts, parts[0]])
    assert all(shape_after(s, tuple(longer.shape)) is None for s in selects)
