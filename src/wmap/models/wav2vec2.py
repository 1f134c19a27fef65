"""fairseq wav2vec 2.0: pre-trained -> ``Wav2Vec2ForPreTraining``, fine-tuned (CTC) -> ``Wav2Vec2ForCTC``.

Both styles of encoder convert: base (group-norm extractor, post-LN) and large /
XLS-R (layer-norm extractor, conv bias, ``layer_norm_first``), and layers with
adapters (``layer_type: trf_adp``, the MMS recipe) <-> ``adapter_attn_dim``. What
transformers' Wav2Vec2 cannot represent is refused: a stacked positional conv
(``pos_conv_depth > 1``), conformer layers, a quantizer other than one gumbel layer
over the features, a GLU on the targets, adapters it cannot hold
(:mod:`wmap.fairseq.adapters`; a layer fairseq left without one gets an adapter of
zeros). A CTC model's adapters also go to ``adapter.<corpus>.safetensors``, as MMS
keeps each language's. The family is :class:`~wmap.fairseq.Wav2Vec2Style` with the
adapters added.
"""

from __future__ import annotations

from transformers import Wav2Vec2Config

from wmap.fairseq import (
    ADAPTER_FIELDS,
    ADAPTER_LAYERS,
    TRANSFORMER_LAYERS,
    Wav2Vec2Style,
    adapters_agree,
    identity_projection,
    made_by,
    unadapted_layers,
    with_adapter_corpus,
    with_adapter_file,
)

STYLE = Wav2Vec2Style(
    "wav2vec2",
    "wav2vec2",
    Wav2Vec2Config,
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForCTC",
    fields=ADAPTER_FIELDS,
    layers=(*TRANSFORMER_LAYERS, *ADAPTER_LAYERS),
    layer_types=("transformer", "trf_adp"),
    beside=with_adapter_file,
    beside_back=with_adapter_corpus,
    made=made_by(identity_projection, unadapted_layers),
    agrees=adapters_agree,
)
WAV2VEC2 = STYLE.pretrained()
WAV2VEC2_CTC = STYLE.ctc()
