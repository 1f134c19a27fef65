"""Config translation as tables: typed, bounded readers; every field of the originals' configs accounted for;
fuzzed metadata gives error values, never exceptions."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure

from wmap.config_fields import ConfigTable, Translated, conv_layers, integer, one_of, translate
from wmap.conversion import prepare
from wmap.errors import BadConfig
from wmap.models import get_model, registered

ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["abc", "wide", "[(512, 10, 5)] * 10**9", "[[[(1,2,3)]*64]*64]*64", "${oc.env:HOME}"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _sections(meta: Any) -> list[tuple[Any, str]]:
    """The mutable config sections of a family's reference metadata, with a name for each."""
    found: list[tuple[Any, str]] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            if any(isinstance(v, int | float | str | bool) for v in value.values()):
                found.append((value, where))
            for key, inner in value.items():
                walk(inner, f"{where}.{key}")

    walk(meta, "meta")
    return found


@pytest.mark.parametrize("model", [spec.name for spec in registered()])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_metadata_gives_error_values_only(model: str, data: st.DataObject) -> None:
    spec = get_model(model).unwrap()
    layout, meta = spec.reference_layout().unwrap()
    for section, _ in _sections(meta):
        for name in (
            data.draw(st.lists(st.sampled_from(sorted(section)), max_size=4), label="fields") if section else []
        ):
            section[name] = data.draw(ODD_VALUES, label=name)
    result = prepare(spec, layout, meta, lint=False)  # must return, whatever the values
    if isinstance(result, Failure):
        assert result.failure().message and "\n" not in result.failure().message


def test_a_wrong_value_names_the_field_and_what_was_expected() -> None:
    spec = get_model("data2vec_audio").unwrap()
    layout, meta = spec.reference_layout().unwrap()
    for name, value, expected in (
        ("dropout", "abc", "a number from 0 to 1"),
        ("encoder_layers", 10**9, "an integer from 1 to 512"),
        ("conv_pos", "wide", "an integer"),
        ("layer_type", "conformer", "transformer layers only"),
    ):
        bad = {**meta, "cfg": {**meta["cfg"], "model": {**meta["cfg"]["model"], name: value}}}
        error = prepare(spec, layout, bad).failure()
        assert isinstance(error, BadConfig) and error.key == name, error
        assert expected in error.message and repr(value)[:20] in error.message


def test_none_where_a_number_belongs_is_refused() -> None:
    spec = get_model("wav2vec2_mbart").unwrap()
    layout, meta = spec.reference_layout().unwrap()
    args = dict(meta["cfg"]["model"])
    args["adaptor_n_layers"] = None
    error = prepare(spec, layout, {**meta, "cfg": {"model": args}}).failure()
    assert isinstance(error, BadConfig) and error.key == "adaptor_n_layers"


def test_conv_layers_are_bounded_and_never_evaluated() -> None:
    assert conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2").unwrap() == ((512, 10, 5), (512, 3, 2), (512, 3, 2))
    for bad in ("__import__('os').system('true')", "[(1, 2)]", "[(1,2,3)] * 10**9", "[(0, 1, 1)]", "[" * 5000, 7):
        assert "(dim, kernel, stride)" in conv_layers(bad).failure()


def test_an_argparse_namespace_reads_like_a_dict() -> None:
    table = ConfigTable("args", (Translated("n", integer(1, 4), "n", 1),))
    assert translate(table, argparse.Namespace(n=3, lr=0.1)).unwrap().kwargs == {"n": 3}
    read = translate(table, {"n": 2, "extra": 1}).unwrap()
    assert [f.name for f in read.ignored] == ["extra"]  # an unknown field is reported, not dropped silently
    assert translate(table, {"n": True}).failure().key == "n"  # a bool is not an integer


@pytest.mark.parity
@pytest.mark.parametrize(
    ("config_class", "table_path"),
    [
        (
            "fairseq.examples.data2vec.models.data2vec_audio:Data2VecAudioConfig",
            "wmap.models.data2vec_audio:PRETRAINED",
        ),
        ("fairseq.models.wav2vec.wav2vec2_asr:Wav2Vec2CtcConfig", "wmap.fairseq:CTC_FINE_TUNING"),
        ("fairseq.models.hubert.hubert_asr:HubertCtcConfig", "wmap.fairseq:CTC_FINE_TUNING"),
        ("fairseq.models.wav2vec.wav2vec2:Wav2Vec2Config", "wmap.models.wav2vec2_mbart:W2V_ENCODER"),
        ("fairseq.models.wav2vec.wav2vec2:Wav2Vec2Config", "wmap.models.wav2vec2:STYLE.pretrained_table"),
        ("fairseq.models.wav2vec.wav2vec2:Wav2Vec2Config", "wmap.models.wav2vec2:STYLE.encoder_table"),
        ("fairseq.models.wav2vec.wav2vec2:Wav2Vec2Config", "wmap.models.wav2vec2_conformer:STYLE.pretrained_table"),
        ("fairseq.models.wav2vec.wav2vec2:Wav2Vec2Config", "wmap.models.wav2vec2_conformer:STYLE.encoder_table"),
        ("fairseq.models.hubert.hubert:HubertConfig", "wmap.models.hubert:PRETRAINED"),
    ],
)
def test_every_field_of_the_original_config_is_accounted_for(config_class: str, table_path: str) -> None:
    import importlib

    import fairseq.examples.data2vec.models.data2vec_audio  # noqa: F401 - registers data2vec_audio

    module_name, _, class_name = config_class.partition(":")
    original = getattr(importlib.import_module(module_name), class_name)
    table_module, _, table_name = table_path.partition(":")
    table: Any = importlib.import_module(table_module)
    for name in table_name.split("."):  # a module's table, or a family description's
        table = getattr(table, name)
    assert isinstance(table, ConfigTable)
    names = {f.name for f in dataclasses.fields(original)} - {"_name"}
    assert names - table.names() == set(), "fields of the original config that the table does not account for"


@pytest.mark.parity
def test_every_field_of_s3prl_distiller_config_is_accounted_for() -> None:
    from s3prl.upstream.distiller.model import DistillerConfig

    from wmap.models.distilhubert import DISTILLER

    assert set(vars(DistillerConfig({}))) - DISTILLER.names() == set()


@pytest.mark.parity
def test_every_argument_of_xm_transformer_is_accounted_for() -> None:
    import argparse

    from fairseq.models.speech_to_text.xm_transformer import XMTransformerModel

    from wmap.models.wav2vec2_mbart import XM_TRANSFORMER

    parser = argparse.ArgumentParser()
    XMTransformerModel.add_args(parser)
    names = {action.dest for action in parser._actions if action.dest != "help"}
    assert names - XM_TRANSFORMER.names() == set()


FAIRSEQ_STYLE = ["data2vec_audio", "data2vec_audio_ctc", "distilhubert", "wav2vec2_mbart"]
FAIRSEQ_STYLE += ["wav2vec2", "wav2vec2_ctc", "hubert", "hubert_ctc", "wav2vec2_conformer", "wav2vec2_conformer_ctc"]
FAIRSEQ_STYLE += ["wavlm", "unispeech_sat"]


@pytest.mark.parametrize("model", FAIRSEQ_STYLE)
def test_a_config_that_disagrees_with_its_own_file_is_refused_before_building(model: str) -> None:
    spec = get_model(model).unwrap()
    layout, meta = spec.reference_layout().unwrap()
    section = meta["Config"]["distiller"] if "Config" in meta else meta["cfg"].get("model", meta["cfg"])
    section = section["w2v_args"]["model"] if "w2v_args" in section else section
    section["encoder_layers"] = 500  # in range, but the file holds fewer
    error = prepare(spec, layout, meta).failure()
    assert isinstance(error, BadConfig) and error.key == "encoder_layers", error
    assert "layers (what the checkpoint holds)" in error.message


def test_an_absent_section_is_an_error_naming_where_it_was_looked_for() -> None:
    """A newcomer's port once converted with every default when the file kept its config elsewhere."""
    from wmap.config_fields import ConfigTable, Translated, integer, translate

    table = ConfigTable("my cfg.model.encoder", (Translated("layers", integer(1, 64), "num_hidden_layers", 12),))
    refused = translate(table, None).failure()
    assert refused.key == "section" and "my cfg.model.encoder" in refused.message and "absent" in refused.message
    assert translate(table, {}).unwrap().kwargs == {"num_hidden_layers": 12}  # an empty section: its defaults


def test_a_section_is_read_where_the_family_keeps_it_and_refused_where_it_is_absent() -> None:
    from wmap.config_fields import section_at

    table = ConfigTable("s3prl Config.distiller", (Translated("layers", integer(1, 64), "num_hidden_layers", 12),))
    read = section_at("Config", "distiller")
    assert read({"Config": {"distiller": {"layers": 3}}}, table).unwrap().kwargs == {"num_hidden_layers": 3}
    for meta in ({}, {"Config": None}, {"Config": {"distiller": None}}, {"Config": {"other": {"layers": 3}}}):
        refused = read(meta, table).failure()
        assert refused.key == "section" and "s3prl Config.distiller" in refused.message, meta


def test_a_value_map_reads_both_ways_from_one_table_and_refuses_with_its_reason() -> None:
    """fairseq's extractor mode is transformers' feat_extract_norm spelled otherwise: one map, read
    forward by the table and back by its inverse; a value outside it is refused with the reason."""
    from transformers import Wav2Vec2Config

    from wmap.config_fields import ConfigTable, inverse, translate, values_back
    from wmap.fairseq import EXTRACTOR_MODE, wav2vec2_encoder_fields

    table = ConfigTable(
        "t", tuple(f for f in wav2vec2_encoder_fields() if getattr(f, "source", "") == "extractor_mode")
    )
    assert translate(table, {"extractor_mode": "layer_norm"}).unwrap().kwargs == {"feat_extract_norm": "layer"}
    assert translate(table, {}).unwrap().kwargs == {"feat_extract_norm": "group"}  # fairseq's default
    refused = translate(table, {"extractor_mode": "batch_norm"}).failure()
    assert "'default', 'layer_norm'" in refused.message and "group norm" in refused.message
    (back,) = inverse(table.fields)
    assert back.read("layer").unwrap() == "layer_norm" and EXTRACTOR_MODE.inverted().inverted() == EXTRACTOR_MODE
    for norm, mode in (("layer", "layer_norm"), ("group", "default")):
        assert values_back(table.fields, Wav2Vec2Config(feat_extract_norm=norm)) == {"extractor_mode": mode}


def test_every_bad_field_is_reported_not_only_the_first() -> None:
    """A config with three bad fields names all three (one line: the CLI prints it as it is)."""
    from wmap.config_fields import ConfigTable, Translated, integer, translate
    from wmap.errors import BadConfig

    table = ConfigTable("section", tuple(Translated(n, integer(1, 10), n, 1) for n in ("a", "b", "c", "d")))
    error = translate(table, {"a": 0, "b": 5, "c": "x", "d": 99}).failure()
    assert isinstance(error, BadConfig) and error.key == "a"
    assert [o.key for o in error.others] == ["c", "d"]
    assert "'c' is 'x'" in error.message and "'d' is 99" in error.message and "\n" not in error.message
    assert translate(table, {"a": 2}).unwrap().kwargs == {"a": 2, "b": 1, "c": 1, "d": 1}  # the control


def test_a_conv_spec_is_one_row_read_both_ways() -> None:
    """``conv_spec``: one source field <-> conv_dim/conv_kernel/conv_stride, and back to the list it
    expands to (what fairseq's own reader evaluates to the same layers)."""
    from transformers import Wav2Vec2Config

    from wmap.config_fields import ConfigTable, conv_layers, conv_spec, translate, values_back

    table = ConfigTable("model", (conv_spec("conv_feature_layers"),))
    read = translate(table, {"conv_feature_layers": "[(32, 10, 5)] + [(16, 3, 2)] * 2"}).unwrap()
    assert read.kwargs == {"conv_dim": [32, 16, 16], "conv_kernel": [10, 3, 3], "conv_stride": [5, 2, 2]}
    back = values_back(table.fields, Wav2Vec2Config(**read.kwargs))["conv_feature_layers"]
    assert conv_layers(back).unwrap() == read.values["conv_feature_layers"]
    assert translate(table, {"conv_feature_layers": "[(1, 2)]"}).failure().key == "conv_feature_layers"


STRIDES = st.lists(st.integers(min_value=1, max_value=16), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(rates=STRIDES, width=st.integers(min_value=1, max_value=512))
def test_a_derived_field_is_checked_forward_and_derived_back(rates: list[int], width: int) -> None:
    """``Derived``: what the target derives (DAC's decoder strides, the encoder's reversed) is refused
    when the file says otherwise, accepted when it agrees or is null, and written back derived."""
    from types import SimpleNamespace

    from wmap.config_fields import Derived, optional, strides, values_back

    table = ConfigTable(
        "kwargs",
        (
            Translated("dim", integer(1, 4096), "hidden", 1),
            Translated("rates", strides, "ratios", [1]),
            Derived("back_rates", optional(strides), lambda v: list(v["rates"])[::-1], "the rates reversed", None),
            Derived("latent", optional(integer(1, 1 << 30)), lambda v: v["dim"] << len(v["rates"]), "derived", None),
        ),
    )
    agreeing = {"dim": width, "rates": rates, "back_rates": rates[::-1], "latent": width << len(rates)}
    read = translate(table, agreeing).unwrap()
    assert translate(table, {**agreeing, "back_rates": None, "latent": None}).unwrap().kwargs == read.kwargs
    back = values_back(table.fields, SimpleNamespace(**read.kwargs))
    assert back == agreeing
    wrong = translate(table, {**agreeing, "back_rates": [*rates, 2], "latent": (width << len(rates)) + 1}).failure()
    assert isinstance(wrong, BadConfig) and (wrong.key, [o.key for o in wrong.others]) == ("back_rates", ["latent"])
    assert "the rates reversed" in wrong.message


def test_several_sections_report_every_bad_field_of_all_of_them() -> None:
    from wmap.config_fields import translate_each

    one = ConfigTable("one", (Translated("a", integer(1, 10), "a", 1),))
    two = ConfigTable("two", (Translated("b", integer(1, 10), "b", 1), Translated("c", integer(1, 10), "c", 1)))
    error = translate_each(((one, {"a": 0}), (two, {"b": 99, "c": "x"}))).failure()
    assert [(error.source, error.key), *((o.source, o.key) for o in error.others)] == [
        ("one", "a"),
        ("two", "b"),
        ("two", "c"),
    ]
    both = translate_each(((one, {"a": 2}), (two, {}))).unwrap()  # the control
    assert [read.kwargs for read in both] == [{"a": 2}, {"b": 1, "c": 1}]


@settings(max_examples=60, deadline=None)
@given(width=st.integers(min_value=1, max_value=4096), heads=st.integers(min_value=1, max_value=64))
def test_a_field_that_must_divide_another_is_refused_naming_both(width: int, heads: int) -> None:
    """``Translated(fits=divides(...))``: checked once the section is read, so the order of the rows
    does not matter, and reported with every other bad field."""
    from wmap.config_fields import divides

    table = ConfigTable(
        "model",
        (
            Translated("heads", integer(1, 64), "num_heads", fits=divides("width")),
            Translated("width", integer(1, 4096), "hidden"),
        ),
    )
    read = translate(table, {"heads": heads, "width": width})
    if width % heads == 0:
        assert read.unwrap().kwargs == {"num_heads": heads, "hidden": width}
    else:
        error = read.failure()
        assert (error.key, error.found) == ("heads", repr(heads)) and f"a divisor of width ({width})" in error.message
    both = translate(table, {"heads": 0, "width": width}).failure()  # a bad value is not also judged
    assert both.key == "heads" and both.others == ()


@pytest.mark.parametrize(
    ("kind", "activation", "refused"),
    [("adapters", "relu", False), ("adapters", "gelu", True), ("plain", "gelu", False)],
)
def test_a_field_checked_in_one_variant_only_is_refused_there_only(kind: str, activation: str, refused: bool) -> None:
    """``fits=allowed_where(...)``: the value must be allowed where another field picks the variant
    that uses it, and is anything elsewhere (an adapter's activation in a model without adapters)."""
    from wmap.config_fields import allowed_where

    table = ConfigTable(
        "model",
        (
            Translated("act", one_of("relu", "gelu"), None, fits=allowed_where("kind", "adapters", ("relu",), "why")),
            Translated("kind", one_of("adapters", "plain"), None),
        ),
    )
    read = translate(table, {"act": activation, "kind": kind})
    if not refused:
        assert read.unwrap().values == {"act": activation, "kind": kind}
    else:
        error = read.failure()
        assert (error.key, error.found) == ("act", "'gelu'") and "'relu' where kind is 'adapters': why" in error.message


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(min_value=1, max_value=8), kernel=st.integers(min_value=3, max_value=64))
def test_a_joint_row_maps_several_fields_to_several_and_back(depth: int, kernel: int) -> None:
    """``Joint`` (data2vec's positional convs): ``conv_pos`` and ``pos_conv_depth`` <-> the number of
    convs and their kernel, forward from the values read and back from the target config."""
    from types import SimpleNamespace

    from wmap.config_fields import kwargs_of, values_back
    from wmap.models.data2vec_audio import ENCODER_FIELDS

    fields = tuple(f for f in ENCODER_FIELDS if f.source in ("conv_pos", "pos_conv_depth"))
    table = ConfigTable("model", fields)
    read = translate(table, {"conv_pos": kernel * depth, "pos_conv_depth": depth}).unwrap()
    assert read.kwargs == {"num_conv_pos_embeddings": depth, "conv_pos_kernel_size": kernel}
    assert kwargs_of(fields, read) == read.kwargs
    assert values_back(fields, SimpleNamespace(**read.kwargs)) == {"conv_pos": kernel * depth, "pos_conv_depth": depth}
    bad = translate(table, {"conv_pos": kernel * depth, "pos_conv_depth": 0}).failure()  # read as its own row
    assert bad.key == "pos_conv_depth"
