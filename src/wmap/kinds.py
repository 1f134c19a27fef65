"""Tensor kinds as the plan sees them: dtype names (``"float32"``, ``"sparse float32"``), no tensors.

The plan refuses a key whose kind the output cannot hold (fp8, complex, sparse,
quantized) or whose number kind differs from the target's (an integer tensor
where the model holds floats), naming the key, before any tensor is read.
"""

from __future__ import annotations

WRITABLE = frozenset({"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"})
"""What a converted checkpoint holds: safetensors' dtypes that transformers' models use."""

SAFETENSORS_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
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
