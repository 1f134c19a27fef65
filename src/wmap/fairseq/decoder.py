"""fairseq's ``TransformerDecoder`` (the speech-to-text and xm_transformer decoders) as rules: its
layers are BART's names already, so the decoder is a rename under the target's prefix, the output
projection a tie or a tensor of its own, and the format marker a skip. Shared by ``wav2vec2_mbart``
(``decoder.model.decoder`` of an ``MBartForCausalLM``) and ``speech_to_text`` (``model.decoder`` of a
``Speech2TextForConditionalGeneration``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from returns.result import Failure, Result, Success

from wmap.config_fields import Checked, Field, Ignored, ValueMap, optional, text
from wmap.errors import BadConfig
from wmap.pipeline import when
from wmap.transforms import PARAMS, Layout, Transform, refuse, rename, skip, tie

DECODER_VERSION = "decoder.version"
"""fairseq's decoder format marker: below 3, its loader drops the final layer norm as older files lack it."""

EMBED = "decoder.embed_tokens.weight"
"""The decoder's token embedding (its rows: the target vocabulary)."""

OUTPUT_PROJECTION = "decoder.output_projection.weight"
"""The decoder's output projection (the embedding's own tensor where they are shared)."""


def plain_decoder_fields(target: str) -> tuple[Field, ...]:
    """fairseq ``TransformerDecoder``'s options that ``target``'s decoder (a BART-style decoder: MBart,
    Speech2Text) has no counterpart for, checked off: positions always added, a plain token embedding
    and output projection (no adaptive input or softmax)."""
    return (
        Checked("no_token_positional_embeddings", (False,), f"{target} always adds positions", False),
        Checked("adaptive_input", (False,), f"{target} has a plain token embedding", False),
        Checked("adaptive_softmax_cutoff", (None,), f"{target} has a plain output projection", None, optional(text)),
        Ignored("adaptive_softmax_dropout", "only used with an adaptive softmax (checked absent)"),
        Ignored("tie_adaptive_weights", "only used with an adaptive softmax (checked absent)"),
    )


def vocabulary_size(layout: Layout) -> Result[int, BadConfig]:
    """The target vocabulary's size: the rows of the decoder's embedding (a file without one is refused,
    naming it)."""
    if EMBED not in layout:
        return Failure(BadConfig("checkpoint", EMBED, "the decoder's token embedding", "missing"))
    return Success(layout[EMBED][0])


NEGATIVE = ValueMap(((True, False), (False, True)), "a flag, the other way round")
"""fairseq's negative flags (``no_scale_embedding``) <-> transformers' positive ones."""


def transformer_decoder_rules(shared: bool, pre_ln: bool, out: str, head: str, target: str) -> tuple[Transform, ...]:
    """fairseq's transformer decoder -> ``out`` (the target's decoder), the output projection -> ``head``
    (tied to the embedding where ``shared``: ``share_decoder_input_output_embed``); a post-LN decoder
    (``decoder_normalize_before`` false) is refused, as ``target``'s decoder is pre-LN. Learned
    positions and an embedding layer norm map where the file has them (sinusoidal positions hold no
    tensor)."""
    return (
        when(
            "share_decoder_input_output_embed",
            shared,
            tie("decoder.embed_tokens", f"{out}.embed_tokens", head),
            rename("decoder.embed_tokens", f"{out}.embed_tokens", PARAMS),
        ),
        when(
            "share_decoder_input_output_embed",
            shared,
            skip("decoder.output_projection", f"the same tensor as embed_tokens (tied); {head} is fed from it"),
            rename("decoder.output_projection", head, PARAMS),
        ),
        skip(DECODER_VERSION, "fairseq's checkpoint format marker, not a weight (the way back writes the current one)"),
        when(
            "not decoder_normalize_before",
            not pre_ln,
            refuse("decoder.layers", f"post-LN decoder (decoder_normalize_before false); {target} is pre-LN"),
        ),
        rename("decoder.embed_positions", f"{out}.embed_positions", PARAMS),
        rename("decoder.layernorm_embedding", f"{out}.layernorm_embedding", PARAMS),
        rename("decoder.layers", f"{out}.layers"),
        rename("decoder.layer_norm", f"{out}.layer_norm", PARAMS),
    )


def decoder_tensors(state: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The way back's state dict with what fairseq's holds beyond the rules: the decoder's current
    format marker and, where ``cfg.model`` shares them, the output projection as the embedding's own
    tensor (a ``tensors`` hook of :func:`~wmap.fairseq.export.trainer_exporter`)."""
    import torch

    tied = {OUTPUT_PROJECTION: state[EMBED]} if cfg["model"]["share_decoder_input_output_embed"] else {}
    return {**state, DECODER_VERSION: torch.tensor([3.0]), **tied}
