"""Tensor kinds as the plan sees them: dtype names (``"float32"``, ``"sparse float32"``), no tensors.

The plan refuses a key whose kind the output cannot hold (fp8, complex, sparse,
quantized) or whose number kind differs from the target's (an integer tensor
where the model holds floats), naming the key, before any tensor is read.
"""

from __future__ import annotations

DTYPES: tuple[tuple[str, str], ...] = (
    ("float64", "F64"),
    ("float32", "F32"),
    ("float16", "F16"),
    ("bfloat16", "BF16"),
    ("int64", "I64"),
    ("int32", "I32"),
    ("int16", "I16"),
    ("int8", "I8"),
    ("uint8", "U8"),
    ("bool", "BOOL"),
)
"""The one table of the dtypes a converted checkpoint holds: the kind name (torch's dtype name) and
safetensors' code. Everything else about dtypes is derived from it (the writer's codes, what apply
accepts, what the plan refuses)."""

WRITABLE = frozenset(name for name, _ in DTYPES)
"""What a converted checkpoint holds: safetensors' dtypes that transformers' models use."""

SAFETENSORS_NAMES = {code: name for name, code in DTYPES}
"""safetensors' dtype codes -> the kind names (other codes, such as ``F8_E4M3``, stay as they are)."""

RULE = "tensor kind"


def is_floating(kind: str) -> bool:
    return kind.startswith(("float", "bfloat"))


def refusal(kind: str, target_kind: str | None, target: str) -> str | None:
    """Why a ``kind`` tensor cannot be written to ``target`` (of ``target_kind``), or ``None``."""
    if kind not in WRITABLE:
        return f"a {kind} tensor; the output holds dense {', '.join(sorted(WRITABLE))} tensors"
    if target_kind is not None and is_floating(kind) != is_floating(target_kind):
        return f"a {kind} tensor where {target} holds {target_kind}"
    return None
