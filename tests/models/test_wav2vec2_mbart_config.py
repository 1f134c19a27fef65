"""xm_transformer's ``cfg.model`` both ways, on the bundled reference (fairseq's own names and config),
without fairseq: the adaptor's and the decoder's rows go to their own configs and come back."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from wmap.config_back import written
from wmap.models import get_model
from wmap.models.wav2vec2_mbart import ADAPTOR, DECODER, XM_CFG, translate_config


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    layout, meta = get_model("wav2vec2_mbart").unwrap().reference_layout().unwrap()
    return dict(layout), meta


def _with(meta: dict[str, Any], **changed: Any) -> dict[str, Any]:
    changed_meta = copy.deepcopy(meta)
    changed_meta["cfg"]["model"].update(changed)
    return changed_meta


def test_the_adaptor_and_decoder_rows_go_to_their_configs_and_come_back(reference: Any) -> None:
    layout, meta = reference
    config = translate_config(meta, layout).unwrap().config
    assert "adapter_stride" not in config.decoder.to_dict()  # the adaptor's rows are the encoder's only
    assert (config.encoder.add_adapter, config.encoder.num_adapter_layers) == (True, 3)
    back = written(XM_CFG, config)["model"]
    model = meta["cfg"]["model"]
    for name in (f.source for f in (*ADAPTOR, *DECODER)):
        assert back[name] == model[name], name
    without = translate_config(_with(meta, adaptor_n_layers=0), layout).unwrap().config
    assert not without.encoder.add_adapter and written(XM_CFG, without)["model"]["adaptor_n_layers"] == 0


@pytest.mark.parametrize(
    ("changed", "said"),
    [
        ({"decoder_attention_heads": 7}, "a divisor of decoder_embed_dim (1024)"),
        ({"decoder_input_dim": 512}, "one width"),
        ({"decoder_output_dim": 512}, "one width"),
        ({"adaptor_kernel_size": 5}, "pads by 1"),
    ],
)
def test_what_transformers_cannot_hold_is_refused_naming_the_field(reference: Any, changed: Any, said: str) -> None:
    layout, meta = reference
    error = translate_config(_with(meta, **changed), layout).failure()
    assert error.key == next(iter(changed)) and said in error.message
    assert translate_config(_with(meta, adaptor_n_layers=0, adaptor_kernel_size=5), layout).unwrap()  # no adaptor
