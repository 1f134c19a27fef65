"""Value operations: what happens to a tensor's values on its way, as data with declared inverses.

A rule that changes values (fairseq's fused ``in_proj_weight`` split into q/k/v)
puts one of these on its target; the plan carries it (its effect on the shape is
checked there), and only :func:`wmap.apply.apply_plan` runs it. Each declares its
inverse, and a property test checks that the inverse undoes it:

- :class:`Split` / :class:`Concat` along a dimension, sizes unequal or not (exact both ways);
- :class:`Slice` and :class:`Chunk`, one part of a split (their inverse is the :class:`Concat` of
  all parts, which takes several keys: rules that split reverse only inside an upgrade chain);
- :class:`Transpose` (its own inverse), :class:`Reshape` (exact both ways);
- :class:`Cast` (exact from a narrower float type to a wider one and back);
- :class:`Concatenate`, :class:`Stack` and :class:`WeightNormFold`, :class:`Joiner` s of several
  tensors into one, each with the parts back (:class:`Chunk`; :class:`Select`; :class:`WeightNormG`
  and the weight itself);
- :class:`WeightNormFold` / :class:`WeightNormUnfold` respecting ``dim`` (wav2vec2's positional
  conv uses ``dim=2``, codecs ``0``): unfold then fold gives the same weight up to float rounding,
  and fold then unfold gives the same *represented* weight (``v``'s scale is not kept: it never
  mattered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:  # torch is imported by what runs the operations, not by the plan's values
    import torch

Shape = tuple[int, ...]


class ValueOp(Protocol):
    """One tensor in, one tensor out; ``shape`` says what it does to a shape (for the plan)."""

    def shape(self, shape: Shape) -> Shape: ...

    def apply(self, tensor: torch.Tensor) -> torch.Tensor: ...


def shape_after(op: ValueOp, shape: Shape) -> Shape | None:
    """The shape ``op`` gives ``shape``; ``None`` where it cannot apply (a size that does not divide,
    a reshape from another shape): the plan shows a mismatch, apply refuses the tensor."""
    try:
        return op.shape(shape)
    except (ValueError, IndexError):
        return None


@attrs.frozen
class Slice:
    """Elements ``start:stop`` along ``dim``: one part of a fused tensor."""

    dim: int
    start: int
    stop: int

    def shape(self, shape: Shape) -> Shape:
        return (*shape[: self.dim], self.stop - self.start, *shape[self.dim + 1 :])

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.narrow(self.dim, self.start, self.stop - self.start)


@attrs.frozen
class Chunk:
    """Part ``index`` of ``count`` equal parts along ``dim`` (fairseq's upgrade splits its fused
    ``in_proj_weight`` in equal thirds); the size must divide."""

    dim: int
    index: int
    count: int

    def shape(self, shape: Shape) -> Shape:
        if self.dim >= len(shape) or shape[self.dim] % self.count:
            raise ValueError(f"{list(shape)} does not split in {self.count} equal parts along {self.dim}")
        return (*shape[: self.dim], shape[self.dim] // self.count, *shape[self.dim + 1 :])

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.chunk(self.count, dim=self.dim)[self.index]


@attrs.frozen
class Select:
    """Index ``index`` along ``dim``, which goes: one layer of a stacked tensor (a per-layer weight kept
    as one ``[layers, ...]`` tensor). ``of``: how many the stack must hold (an unstack takes every
    index, so a stack of more than its targets is a shape error, not indices silently left behind)."""

    dim: int
    index: int
    of: int | None = None

    def shape(self, shape: Shape) -> Shape:
        if self.dim >= len(shape) or not 0 <= self.index < shape[self.dim]:
            raise ValueError(f"{list(shape)} has no index {self.index} along {self.dim}")
        if self.of is not None and shape[self.dim] != self.of:
            raise ValueError(f"{list(shape)} stacks {shape[self.dim]} along {self.dim}, not {self.of}")
        return (*shape[: self.dim], *shape[self.dim + 1 :])

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.select(self.dim, self.index)


@attrs.frozen
class Split:
    """One tensor into parts of ``sizes`` along ``dim``."""

    dim: int
    sizes: tuple[int, ...]

    def parts(self) -> tuple[Slice, ...]:
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        return tuple(Slice(self.dim, s, s + n) for s, n in zip(starts, self.sizes, strict=True))

    def apply_all(self, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(part.apply(tensor) for part in self.parts())

    def inverse(self) -> Concat:
        return Concat(self.dim, self.sizes)


@attrs.frozen
class Concat:
    """Parts of ``sizes`` along ``dim`` into one tensor."""

    dim: int
    sizes: tuple[int, ...]

    def apply_all(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if tuple(p.shape[self.dim] for p in parts) != self.sizes:
            raise ValueError(f"parts of sizes {[p.shape[self.dim] for p in parts]}, expected {list(self.sizes)}")
        import torch

        return torch.cat(parts, dim=self.dim)

    def inverse(self) -> Split:
        return Split(self.dim, self.sizes)


@attrs.frozen
class Transpose:
    first: int
    second: int

    def shape(self, shape: Shape) -> Shape:
        out = list(shape)
        out[self.first], out[self.second] = out[self.second], out[self.first]
        return tuple(out)

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.transpose(self.first, self.second)

    def inverse(self) -> Transpose:
        return self


@attrs.frozen
class Reshape:
    source: Shape
    target: Shape

    def shape(self, shape: Shape) -> Shape:
        if shape != self.source:
            raise ValueError(f"reshape from {list(self.source)} given {list(shape)}")
        return self.target

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(self.target)

    def inverse(self) -> Reshape:
        return Reshape(self.target, self.source)


@attrs.frozen
class Cast:
    source: torch.dtype
    target: torch.dtype

    def shape(self, shape: Shape) -> Shape:
        return shape

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.target)

    def inverse(self) -> Cast:
        return Cast(self.target, self.source)


def _norm_shape(shape: Shape, dim: int) -> Shape:
    """The shape of ``norm_except_dim``'s result: ``shape[dim]`` at ``dim``, 1 elsewhere."""
    return tuple(n if i == dim else 1 for i, n in enumerate(shape))


@attrs.frozen
class WeightNormFold:
    """``(g, v) -> w = g * v / ||v||`` with the norm over every dimension but ``dim``. As a
    :class:`Joiner` (two parts, ``g`` then ``v``) it folds in float32 on the CPU, whatever the dtype
    (transformers PR #39793: folding elsewhere gives other weights), and gives ``v``'s dtype back."""

    dim: int

    def apply_all(self, g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The fold, computed as torch's weight-norm hook computes it (its own kernel, on the CPU in
        float32): the weight the original computes, bit for bit, in ``v``'s dtype."""
        import torch

        folded = torch._weight_norm(v.to("cpu", torch.float32), g.to("cpu", torch.float32), self.dim)
        return folded.to(v.dtype)

    def inverse(self) -> WeightNormUnfold:
        return WeightNormUnfold(self.dim)

    def shape_of(self, shapes: Sequence[Shape]) -> Shape | None:
        if len(shapes) != 2 or self.dim >= len(shapes[1]) or shapes[0] != _norm_shape(shapes[1], self.dim):
            return None
        return shapes[1]

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        g, v = parts
        return self.apply_all(g, v)

    def parts(self, count: int) -> tuple[ValueOp | None, ...]:
        """Unfolding: ``g`` is the norm (:class:`WeightNormG`), ``v`` the weight itself."""
        return (WeightNormG(self.dim), None)


@attrs.frozen
class WeightNormG:
    """``w -> ||w||`` over every dimension but ``dim`` (kept): the ``g`` that weight norm starts from,
    computed in float32 and given back in ``w``'s dtype; ``v`` is ``w`` itself. The norm is the one
    torch's weight-norm kernel computes, so that folding the pair again gives ``w`` bit for bit."""

    dim: int

    def shape(self, shape: Shape) -> Shape:
        if self.dim >= len(shape):
            raise ValueError(f"{list(shape)} has no dimension {self.dim}")
        return _norm_shape(shape, self.dim)

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch

        w = tensor.to("cpu", torch.float32)
        if self.dim in (0, w.dim() - 1):  # the norm torch's fused kernel computes: folding gives w back exactly
            ones = torch.ones(_norm_shape(tuple(w.shape), self.dim))
            g = torch._weight_norm_interface(w, ones, self.dim)[1].reshape(ones.shape)
        else:  # torch folds these dims with norm_except_dim: the same, so the same holds
            g = torch.norm_except_dim(w, 2, self.dim)
        return g.to(tensor.dtype)


class Joiner(Protocol):
    """Several parts into one tensor (:class:`~wmap.transforms.JoinRename`), and the way back: what each
    part is of the whole (:meth:`parts`, for :class:`~wmap.transforms.SplitRename`)."""

    def shape_of(self, shapes: Sequence[Shape]) -> Shape | None:
        """The joined shape, ``None`` where the parts cannot be joined (the plan shows a mismatch)."""
        ...

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor: ...

    def parts(self, count: int) -> tuple[ValueOp | None, ...]:
        """The value operation giving each of ``count`` parts from the whole (``None``: the whole)."""
        ...


@attrs.frozen
class Concatenate:
    """Parts concatenated along ``dim`` (q, k and v into a fused ``qkv``); split back in equal parts."""

    dim: int

    def shape_of(self, shapes: Sequence[Shape]) -> Shape | None:
        first = shapes[0]
        dim = self.dim

        def others(shape: Shape) -> Shape:
            return shape[:dim] + shape[dim + 1 :]

        if dim >= len(first) or any(len(s) != len(first) or others(s) != others(first) for s in shapes):
            return None
        return (*first[:dim], sum(s[dim] for s in shapes), *first[dim + 1 :])

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.cat(list(parts), dim=self.dim)

    def parts(self, count: int) -> tuple[ValueOp | None, ...]:
        return tuple(Chunk(self.dim, i, count) for i in range(count))


@attrs.frozen
class Stack:
    """Parts of one shape stacked along a new ``dim`` (per-layer tensors into one ``[layers, ...]``);
    the way back selects each (:class:`Select`)."""

    dim: int

    def shape_of(self, shapes: Sequence[Shape]) -> Shape | None:
        first = shapes[0]
        if any(s != first for s in shapes) or self.dim > len(first):
            return None
        return (*first[: self.dim], len(shapes), *first[self.dim :])

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.stack(list(parts), dim=self.dim)

    def parts(self, count: int) -> tuple[ValueOp | None, ...]:
        return tuple(Select(self.dim, i, count) for i in range(count))


@attrs.frozen
class WeightNormUnfold:
    """``w -> (g = ||w||, v = w)``: the pair weight norm starts from (``torch.nn.utils.weight_norm``)."""

    dim: int

    def apply_all(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return WeightNormG(self.dim).apply(w), w

    def inverse(self) -> WeightNormFold:
        return WeightNormFold(self.dim)


class Maker(Protocol):
    """A tensor made from the config alone, for a target the original does not hold (fairseq has no
    ``post_extract_proj`` where the widths are equal; transformers always has a projection). ``shape``
    says what it makes (for the plan), ``make`` makes it, ``is_made`` tells whether a tensor is still
    what it would make (the way back drops it then, and refuses a trained one)."""

    @property
    def shape(self) -> Shape: ...

    def make(self, dtype: torch.dtype) -> torch.Tensor: ...

    def is_made(self, tensor: torch.Tensor) -> bool: ...


@attrs.frozen
class Identity:
    """The identity matrix ``size`` x ``size``: a projection that changes nothing."""

    size: int

    @property
    def shape(self) -> Shape:
        return (self.size, self.size)

    def make(self, dtype: torch.dtype) -> torch.Tensor:
        import torch

        return torch.eye(self.size, dtype=dtype)

    def is_made(self, tensor: torch.Tensor) -> bool:
        import torch

        return tuple(tensor.shape) == self.shape and bool(torch.equal(tensor, torch.eye(self.size, dtype=tensor.dtype)))


@attrs.frozen
class Zeros:
    """Zeros of ``shape``: a bias that adds nothing."""

    shape: Shape

    def make(self, dtype: torch.dtype) -> torch.Tensor:
        import torch

        return torch.zeros(self.shape, dtype=dtype)

    def is_made(self, tensor: torch.Tensor) -> bool:
        return tuple(tensor.shape) == self.shape and not bool(tensor.any())
