"""fairseq's adapter layers (``layer_type: trf_adp``: the MMS recipe's bottleneck after every
transformer layer, one per corpus) <-> transformers' attention adapters (``Wav2Vec2Config.adapter_attn_dim``),
both ways: the encoder config's fields as one table and the rules.

fairseq keeps each parameter of a layer's adapters stacked, one row per corpus (``W_a``
``[adp_num, adp_dim, width]``); transformers holds one adapter per layer. What it cannot represent
is refused, naming the field: more than one corpus's adapters, another activation than ReLU, or
adapters in a post-LN encoder (transformers' post-LN layer has none). Layers fairseq leaves without an
adapter (``adp_trf_idx``) get one of zeros, which adds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
from returns.result import Failure, Result
from transformers import PretrainedConfig

from wmap.config_fields import Field, Joint, Translated, Translation, allowed_where, get, integer, one_of, shown, text
from wmap.errors import BadConfig
from wmap.fairseq.config import fairseq_task_config, layer_indices
from wmap.io import read_weights, write_safetensors
from wmap.models.base import Exporter, ExportSource, Extras, Writer, writing
from wmap.plan import MakeRule
from wmap.transforms import Layout, Transform, unstack
from wmap.values import Zeros

ADAPTERS = "trf_adp"
LAYER_TYPES = one_of("transformer", "conformer", ADAPTERS)


def _layers_with_adapters(value: Any, values: Mapping[str, Any]) -> str | None:
    if value == "conformer":
        return "'transformer' or 'trf_adp': a wav2vec 2.0 conformer converts with wav2vec2_conformer[_ctc]"
    if value == ADAPTERS and not values.get("layer_norm_first"):
        return "'transformer' (or layer_norm_first true): transformers' Wav2Vec2 has adapters in pre-LN layers only"
    return None


def layer_range(value: object) -> range | None:
    """``adp_trf_idx`` as fairseq reads it, ``range(*(int(p) for p in value.split(":")))``: ``start:stop``
    or ``start:stop:step``; ``None`` for anything fairseq could not build a range of."""
    parts = str(value).split(":")
    if not 2 <= len(parts) <= 3 or not all(re.fullmatch(r"-?[0-9]{1,6}", part.strip()) for part in parts):
        return None
    numbers = [int(part) for part in parts]
    return None if len(numbers) == 3 and numbers[2] == 0 else range(*numbers)


def _layer_range(value: Any, values: Mapping[str, Any]) -> str | None:
    """``all``, or a range (:func:`layer_range`); the layers it leaves without an adapter get one that
    adds nothing (:func:`unadapted_layers`)."""
    if values.get("layer_type") != ADAPTERS or value == "all" or layer_range(value) is not None:
        return None
    return "'all' or a range of layers 'start:stop[:step]' (fairseq's range(start, stop, step), step not 0)"


def adapter_size(values: Mapping[str, Any]) -> dict[str, Any]:
    """``adapter_attn_dim``: fairseq's ``adp_dim`` where its layers have adapters, else none."""
    return {"adapter_attn_dim": values["adp_dim"] if values["layer_type"] == ADAPTERS else None}


def holds_adapters(config: Any) -> bool:
    """Whether a transformers ``Wav2Vec2`` model of ``config`` holds adapters: ``adapter_attn_dim`` set,
    in pre-LN layers (its post-LN layer has none, whatever ``adapter_attn_dim`` says)."""
    return getattr(config, "adapter_attn_dim", None) is not None and bool(getattr(config, "do_stable_layer_norm", 0))


def adapter_fields_back(config: Any) -> dict[str, Any]:
    """fairseq's layer settings for a transformers config: adapters on every layer, for one corpus,
    where the model holds them."""
    if not holds_adapters(config):
        return {"layer_type": "transformer"}
    size = int(config.adapter_attn_dim)
    return {"layer_type": ADAPTERS, "adp_num": 1, "adp_dim": size, "adp_act_fn": "relu", "adp_trf_idx": "all"}


def adapted_layers(values: Mapping[str, Any]) -> set[int]:
    """The layers fairseq builds with an adapter: those in ``adp_trf_idx``'s range (every one for ``all``)."""
    within = None if values["adp_trf_idx"] == "all" else layer_range(values["adp_trf_idx"])
    return {layer for layer in range(int(values["encoder_layers"])) if within is None or layer in within}


def adapters_agree(section: str, layout: Layout, read: Translation, root: str) -> BadConfig | None:
    """The layers holding adapters in the file (under ``root``) are those the config says fairseq builds
    with one: a file that lacks some is refused, naming ``adp_trf_idx``, not given adapters of zeros."""
    if read.values.get("layer_type") != ADAPTERS:
        return None
    held = layer_indices(layout, f"{root}encoder.layers", holding="adapter_layer")
    named = adapted_layers(read.values)
    if held == named:
        return None
    found = f"{read.values['adp_trf_idx']!r}: layers {sorted(named)}"
    return BadConfig(section, "adp_trf_idx", f"the layers holding adapters in the file ({sorted(held)})", found)


ONE_CORPUS = "transformers' Wav2Vec2 holds one adapter per layer (MMS keeps each language's in its own file)"
RELU = "transformers' adapter layer applies ReLU"

ADAPTER_FIELDS: Mapping[str, Field] = {
    "layer_type": Translated("layer_type", LAYER_TYPES, None, "transformer", fits=_layers_with_adapters),
    "adp_num": Translated(
        "adp_num", integer(-1, 1_000_000), None, -1, fits=allowed_where("layer_type", ADAPTERS, (1,), ONE_CORPUS)
    ),
    "adp_dim": Joint("adp_dim", integer(1, 65536), adapter_size, adapter_fields_back, 64),
    "adp_act_fn": Translated(
        "adp_act_fn", text, None, "relu", fits=allowed_where("layer_type", ADAPTERS, ("relu",), RELU)
    ),
    "adp_trf_idx": Translated("adp_trf_idx", text, None, "all", fits=_layer_range),
}
"""fairseq ``Wav2Vec2Config``'s layer kind and adapter fields for a ``Wav2Vec2Config`` target (by name,
for :class:`~wmap.fairseq.Wav2Vec2Style`'s ``fields``): ``trf_adp`` <-> ``adapter_attn_dim``."""

ADAPTER_PARAMETERS = (
    ("W_a", "linear_1.weight"),
    ("b_a", "linear_1.bias"),
    ("W_b", "linear_2.weight"),
    ("b_b", "linear_2.bias"),
    ("ln_W", "norm.weight"),
    ("ln_b", "norm.bias"),
)
"""fairseq's ``AdapterFast`` parameters (stacked by corpus) and transformers' ``Wav2Vec2AttnAdapterLayer``'s."""

ADAPTER_LAYERS: tuple[Transform, ...] = tuple(
    unstack(f"encoder.layers.*.adapter_layer.{theirs}", (f"encoder.layers.*.adapter_layer.{ours}",))
    for theirs, ours in ADAPTER_PARAMETERS
)
"""Each layer's adapter: the one corpus's row of each stacked parameter (the way back stacks it again)."""

UNADAPTED = (
    "fairseq built this layer without an adapter (adp_trf_idx); transformers gives every layer one: "
    "zeros add nothing (and go back as a zero adapter on every layer, 'all')"
)


def unadapted_layers(config: PretrainedConfig) -> tuple[MakeRule, ...]:
    """The adapters of the layers fairseq's ``adp_trf_idx`` left without one: all zeros, so the adapter
    adds exactly nothing (``x + linear_2(...) = x``). The way back keeps them (``kept_back``): it gives
    every layer an adapter, which computes what the original computes."""
    if not holds_adapters(config):
        return ()
    size, width = int(config.adapter_attn_dim), int(config.hidden_size)
    shapes = {
        "linear_1.weight": (size, width),
        "linear_1.bias": (size,),
        "linear_2.weight": (width, size),
        "linear_2.bias": (width,),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    return tuple(
        MakeRule(f"adapter_layer.{name}", Zeros(shape), UNADAPTED, kept_back=True) for name, shape in shapes.items()
    )


ADAPTER_FILE = "adapter.{}.safetensors"
"""Where transformers' ``Wav2Vec2ForCTC.load_adapter(lang)`` (and ``from_pretrained(..., target_lang=lang)``)
reads a language's adapters and CTC head, beside the model (MMS's directories keep one per language)."""

CORPUS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ADAPTER_FILE_NAME = re.compile(re.escape(ADAPTER_FILE).replace(r"\{\}", f"({CORPUS_NAME.pattern})"))
"""An :data:`ADAPTER_FILE` of a :data:`CORPUS_NAME`, the name captured."""


def corpus(meta: Mapping[str, Any]) -> str | None:
    """The corpus the adapters were trained for: the first of the task's ``multi_corpus_keys`` (fairseq
    gives the i-th key the i-th row; one row, the first key). fairseq's adapter layers need a corpus
    key, so a run that trained them names one."""
    keys = get(fairseq_task_config(meta), "multi_corpus_keys", None)
    first = keys.split(",")[0].strip() if isinstance(keys, str) else ""
    return first or None


def with_adapter_file(extras: Extras) -> Extras:
    """``extras``, and for a model with adapters trained for a named corpus, :data:`ADAPTER_FILE` of that
    name: the adapter layers' and the CTC head's tensors as written, so that ``target_lang=NAME`` and
    ``load_adapter(NAME)`` work as on MMS's directories, and another language's fine-tune converted the
    same way can be dropped in beside it. A name that cannot be a file's is refused before anything is written."""

    def prepared(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
        name = corpus(meta)
        if not holds_adapters(config) or name is None:
            return extras(config, meta, file)
        if not CORPUS_NAME.fullmatch(name):
            expected = "a corpus name a file can be named by (letters, digits, '_', '.', '-'; at most 64)"
            return Failure(BadConfig("fairseq cfg.task", "multi_corpus_keys", expected, shown(name)))
        return extras(config, meta, file).map(lambda inner: writing(inner, partial(write_adapter_file, name)))

    return prepared


def with_adapter_corpus(exporter: Exporter) -> Exporter:
    """``exporter`` (a CTC way back), and where the directory holds adapters and exactly one
    :data:`ADAPTER_FILE`, its name as the task's corpus (``multi_corpus_keys``, sampling weight 1), as
    the forward direction read it: fairseq's adapter layers run only for a named corpus. With none, or
    several (which one the model holds is not said), the task names no corpus."""

    def original(source: ExportSource) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        names = [found for found in map(ADAPTER_FILE_NAME.fullmatch, source.listed) if found is not None]
        if not holds_adapters(source.config) or len(names) != 1:
            return exporter.original(source)
        corpus = {"multi_corpus_keys": names[0].group(1), "multi_corpus_sampling_weights": "1.0"}
        return exporter.original(source).map(lambda found: (found[0], _with_task(found[1], corpus)))

    return attrs.evolve(exporter, original=original)


def _with_task(meta: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    cfg = meta["cfg"]
    return {**meta, "cfg": {**cfg, "task": {**cfg["task"], **fields}}}


def is_adapter_tensor(key: str) -> bool:
    """What transformers' ``load_adapter`` loads: the adapter layers' tensors and the CTC head's."""
    return ".adapter_layer." in key or key.startswith("lm_head.")


def write_adapter_file(name: str, directory: Path) -> None:
    """:data:`ADAPTER_FILE` of ``name`` in ``directory``, from the weights just written there."""
    tensors = read_weights(directory).unwrap().tensors  # the file(s) this conversion wrote a moment ago
    chosen = {key: tensors[key] for key in sorted(tensors) if is_adapter_tensor(key)}
    write_safetensors(directory / ADAPTER_FILE.format(name), chosen, {"format": "pt"})
