"""fairseq wav2vec 2.0 Conformer (``layer_type: conformer``), pre-trained -> ``Wav2Vec2ConformerForPreTraining``
(or the headless ``Wav2Vec2ConformerModel`` for a file without a quantizer) and fine-tuned (CTC) ->
``Wav2Vec2ConformerForCTC``.

What differs from wav2vec 2.0 is data: :data:`~wmap.fairseq.CONFORMER_LAYERS` (whose rotary
``inv_freq``, one copy per layer in fairseq, is gathered into transformers' one) and
:data:`~wmap.fairseq.CONFORMER_FIELDS` (relative or rotary positions, the depthwise kernel, ESPnet
attention, the encoder norm after the layers). fairseq's conformer layers use swish whatever
``activation_fn`` says. Where fairseq has no ``post_extract_proj`` (equal widths) the projection is
made the identity (transformers#28174).
"""

from __future__ import annotations

from typing import Any

from transformers import Wav2Vec2ConformerConfig

from wmap.config_fields import Translation
from wmap.fairseq import CONFORMER_FIELDS, CONFORMER_LAYERS, Wav2Vec2Style


def fixed(read: Translation) -> dict[str, Any]:
    """fairseq's conformer: swish in every layer, the conv module's dropout the layers' own."""
    return {"hidden_act": "swish", "conformer_conv_dropout": read.kwargs["hidden_dropout"]}


STYLE = Wav2Vec2Style(
    "wav2vec2_conformer",
    "wav2vec2_conformer",
    Wav2Vec2ConformerConfig,
    "Wav2Vec2ConformerForPreTraining",
    "Wav2Vec2ConformerForCTC",
    headless="Wav2Vec2ConformerModel",
    fields=CONFORMER_FIELDS,
    layers=CONFORMER_LAYERS,
    layer_types=("conformer",),
    fixed=fixed,
)
WAV2VEC2_CONFORMER = STYLE.pretrained()
WAV2VEC2_CONFORMER_CTC = STYLE.ctc()
