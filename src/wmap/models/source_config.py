"""Reading original configs without the original packages: fairseq ``cfg``/``args``, s3prl ``Config``.

Configs arrive as plain containers, ``argparse.Namespace`` or omegaconf
objects; :func:`field` reads any of them. Conv-layer specs are strings from a
file and are parsed with :mod:`ast` into integers, never ``eval``-ed.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from returns.result import Failure, Result, Success

from wmap.errors import BadConfig

MISSING = object()


def field(container: object, name: str, default: Any = MISSING) -> Any:
    """``container[name]`` or ``container.name``, whichever the container supports."""
    if container is None:
        return default
    if isinstance(container, Mapping):
        return container.get(name, default)
    try:
        return container[name]  # type: ignore[index]  # omegaconf DictConfig
    except (KeyError, TypeError, AttributeError):
        pass
    return getattr(container, name, default)


def require(source: str, container: object, name: str, kind: type) -> Result[Any, BadConfig]:
    """A config value that must be present with the given type."""
    value = field(container, name)
    if value is MISSING:
        return Failure(BadConfig(source, name, f"a {kind.__name__}", "missing"))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        return Failure(BadConfig(source, name, f"a {kind.__name__}", repr(value)))
    return Success(value)


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_evaluate(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            return left + right
        if isinstance(node.op, ast.Mult) and isinstance(left, list) and isinstance(right, int) and 0 <= right <= 64:
            return left * right
    raise ValueError(f"unsupported expression {ast.dump(node)[:60]}")


def parse_conv_layers(source: str, name: str, spec: object) -> Result[tuple[tuple[int, int, int], ...], BadConfig]:
    """Parse ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"`` into ``((512, 10, 5), (512, 3, 2), ...)``."""
    expected = "a list of (dim, kernel, stride) like '[(512, 10, 5)] + [(512, 3, 2)] * 4'"
    if not isinstance(spec, str):
        return Failure(BadConfig(source, name, expected, repr(spec)))
    try:
        value = _evaluate(ast.parse(spec, mode="eval"))
    except (SyntaxError, ValueError, RecursionError) as error:
        return Failure(BadConfig(source, name, expected, f"{spec!r} ({error})"))
    if (
        not isinstance(value, list)
        or not value
        or not all(
            isinstance(layer, tuple) and len(layer) == 3 and all(isinstance(v, int) and v > 0 for v in layer)
            for layer in value
        )
    ):
        return Failure(BadConfig(source, name, expected, repr(spec)))
    return Success(tuple((layer[0], layer[1], layer[2]) for layer in value))


def fairseq_model_config(meta: Mapping[str, Any]) -> object | None:
    """The model section of a fairseq checkpoint's config (``cfg.model`` or old-style ``args``).

    A fine-tuned checkpoint's model config wraps the pre-trained one in ``w2v_args``;
    both are returned merged, the inner one first (it describes the encoder).
    """
    cfg = meta.get("cfg")
    model: object = field(cfg, "model", None) if cfg is not None else None
    if model is None:
        model = meta.get("args")
    return model


def fairseq_encoder_config(meta: Mapping[str, Any]) -> object | None:
    """The wav2vec2-style encoder's config: ``w2v_args.model`` when fine-tuned, else the model config."""
    model = fairseq_model_config(meta)
    inner: object = field(model, "w2v_args", None)
    if inner is not None:
        encoder: object = field(inner, "model", None)
        return encoder if encoder is not None else inner
    return model


def require_ints(
    source: str, container: object, names: tuple[str, ...], defaults: Mapping[str, int] | None = None
) -> Result[dict[str, int], BadConfig]:
    """Several integer settings at once; a name in ``defaults`` may be absent (the original's default)."""
    out: dict[str, int] = {}
    for name in names:
        if defaults is not None and name in defaults and field(container, name, None) is None:
            out[name] = defaults[name]
            continue
        found = require(source, container, name, int)
        if isinstance(found, Failure):
            return Failure(found.failure())
        out[name] = found.unwrap()
    return Success(out)


ENCODER_SIZES = ("encoder_embed_dim", "encoder_layers", "encoder_ffn_embed_dim", "encoder_attention_heads")


def encoder_kwargs(
    source: str, cfg: object, conv_field: str, *, defaults: Mapping[str, int] | None = None, conv_default: str = ""
) -> Result[dict[str, Any], BadConfig]:
    """A fairseq-style wav2vec2 encoder config (fairseq's own, or s3prl's distiller) as the keyword
    arguments every transformers wav2vec2-family config shares: sizes, activation, conv feature layers."""
    sizes = require_ints(source, cfg, ENCODER_SIZES, defaults)
    if isinstance(sizes, Failure):
        return Failure(sizes.failure())
    conv = parse_conv_layers(source, conv_field, field(cfg, conv_field, conv_default or None))
    if isinstance(conv, Failure):
        return Failure(conv.failure())
    ints, layers = sizes.unwrap(), conv.unwrap()
    return Success(
        {
            "hidden_size": ints["encoder_embed_dim"],
            "num_hidden_layers": ints["encoder_layers"],
            "intermediate_size": ints["encoder_ffn_embed_dim"],
            "num_attention_heads": ints["encoder_attention_heads"],
            "hidden_act": str(field(cfg, "activation_fn", "gelu")),
            "conv_dim": [c[0] for c in layers],
            "conv_kernel": [c[1] for c in layers],
            "conv_stride": [c[2] for c in layers],
            "layer_norm_eps": 1e-5,
        }
    )
