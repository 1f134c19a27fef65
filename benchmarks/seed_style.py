"""Faithful re-implementations of the seed scripts' methods, as baselines for the benchmarks.

``seed_decisions`` is ``recursively_load_weights`` of the data2vec seed with
the model assignment left out (its decisions only): the substring tests over
the whole mapping for every key, the conv / pos-conv branches, the weight-type
chain. ``seed_convert`` is the seed's conversion as a whole: build the target
model with random initialisation, load the fairseq checkpoint, assign every
tensor through attribute walks, ``save_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce
from logging import Logger
from typing import Any

MAPPING = {
    "post_extract_proj": "feature_projection.projection",
    "models.0.layer_norm": "feature_projection.layer_norm",
    "self_attn.k_proj": "encoder.layers.*.attention.k_proj",
    "self_attn.v_proj": "encoder.layers.*.attention.v_proj",
    "self_attn.q_proj": "encoder.layers.*.attention.q_proj",
    "self_attn.out_proj": "encoder.layers.*.attention.out_proj",
    "self_attn_layer_norm": "encoder.layers.*.layer_norm",
    "fc1": "encoder.layers.*.feed_forward.intermediate_dense",
    "fc2": "encoder.layers.*.feed_forward.output_dense",
    "final_layer_norm": "encoder.layers.*.final_layer_norm",
    "encoder.layer_norm": "encoder.layer_norm",
    "w2v_model.layer_norm": "feature_projection.layer_norm",
    "w2v_encoder.proj": "lm_head",
    "mask_emb": "masked_spec_embed",
}
TOP_LEVEL_KEYS = ["lm_head"]

Decision = tuple[str, str, str | None]


def _weight_type(name: str) -> str | None:
    if "weight_g" in name:
        return "weight_g"
    if "weight_v" in name:
        return "weight_v"
    if "bias" in name:
        return "bias"
    if "weight" in name:
        return "weight"
    return None


def _conv_layer(full_name: str, unused: list[str]) -> Decision | None:
    name = full_name.split("conv_layers.")[-1]
    items = name.split(".")
    layer_id, type_id = int(items[0]), int(items[1])
    weight_type = name.split(".")[-1]
    if type_id == 0:
        layer_type = "conv"
    elif type_id == 2:
        layer_type = "layer_norm"
    else:
        unused.append(full_name)
        return None
    return full_name, f"conv_layers.{layer_id}.{layer_type}.{weight_type}", None


def _pos_conv_layer(full_name: str, unused: list[str]) -> Decision | None:
    name = full_name.split("pos_conv.")[-1]
    items = name.split(".")
    layer_id, type_id = int(items[0]), int(items[1])
    weight_type = name.split(".")[-1]
    if type_id != 0:
        unused.append(full_name)
        return None
    return full_name, f"layers.{layer_id}.conv.{weight_type}", None


def seed_decisions(names: Iterable[str], *, is_headless: bool = False) -> tuple[list[Decision], list[str]]:
    """The seed's per-key decisions (target attribute path and weight type), and its unused list."""
    decisions: list[Decision] = []
    unused: list[str] = []
    for name in names:
        is_used = False
        if "conv_layers" in name:
            found = _conv_layer(name, unused)
            if found:
                decisions.append(found)
            is_used = True
        elif "pos_conv" in name:
            found = _pos_conv_layer(name, unused)
            if found:
                decisions.append(found)
            is_used = True
        else:
            for key, mapped in MAPPING.items():
                mapped_key = mapped
                if not is_headless:
                    mapped_key = "data2vec_audio." + mapped_key if mapped_key not in TOP_LEVEL_KEYS else mapped_key
                if key in name or key.split("w2v_model.")[-1] == name.split(".")[0]:
                    is_used = True
                    if "*" in mapped_key:
                        layer_index = name.split(key)[0].split(".")[-2]
                        mapped_key = mapped_key.replace("*", layer_index)
                    decisions.append((name, mapped_key, _weight_type(name)))
                continue
        if not is_used:
            unused.append(name)
    return decisions, unused


def _set(
    hf_model: Any, key: str, value: Any, weight_type: str | None, name: str, logger: Logger | None, assign: bool
) -> None:
    pointer = reduce(getattr, key.split("."), hf_model)
    if weight_type is not None:
        pointer = getattr(pointer, weight_type)
    if tuple(pointer.shape) != tuple(value.shape):
        raise ValueError(f"shape of {key} is {pointer.shape}, but should be {value.shape}")
    if not assign:  # the checks only: the same work as a plan
        return
    pointer.data = value
    if logger is not None:  # the seed logs every assignment at INFO, with verbosity set to INFO
        logger.info(f"{key + '.' + weight_type if weight_type is not None else ''} was initialized from {name}.")


def seed_assign(
    state: dict[str, Any], hf_model: Any, logger: Logger | None = None, *, assign: bool = True
) -> list[str]:
    """The seed's assignment into a (CTC) model: conv layers and pos conv by path, the rest by mapping.
    ``assign=False`` stops each key after the attribute walk and the shape check."""
    decisions, unused = seed_decisions(state)
    extractor = hf_model.data2vec_audio.feature_extractor
    pos_conv = hf_model.data2vec_audio.encoder.pos_conv_embed
    for name, path, weight_type in decisions:
        if "conv_layers" in name:
            _set(extractor, path, state[name], None, name, logger, assign)
        elif "pos_conv" in name:
            _set(pos_conv, path, state[name], None, name, logger, assign)
        else:
            _set(hf_model, path, state[name], weight_type, name, logger, assign)
    return unused
