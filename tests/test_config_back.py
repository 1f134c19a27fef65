"""The way back's config trees: tables read back in place, merged, picked, made; slots filled."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from wmap.config_back import Back, Made, Merged, Picked, Slot, filled, written
from wmap.config_fields import Checked, ConfigTable, Translated, ValueMap, integer, one_of, translate

MODE = ValueMap((("default", "group"), ("layer_norm", "layer")), "extractor modes")
FIELDS = (
    Translated("encoder_layers", integer(1, 64), "num_hidden_layers", 12),
    Translated("extractor_mode", MODE, "feat_extract_norm", "default"),
    Checked("layer_type", ("conformer",), "conformer layers only", "transformer", one_of("transformer", "conformer")),
)


def test_a_slot_is_filled_wherever_it_stands_and_nothing_else_changes() -> None:
    here, other = Slot("here"), Slot("other")
    tree = {"a": here, "b": [1, {"c": here, "d": other}], "e": "here"}
    assert filled(tree, {here: 7}) == {"a": 7, "b": [1, {"c": 7, "d": other}], "e": "here"}
    assert filled(tree, {Slot("nowhere"): 7}) == tree
    assert filled(tree, {here: 7, other: [here]}) == {"a": 7, "b": [1, {"c": 7, "d": [here]}], "e": "here"}


def test_a_table_is_read_back_in_place_with_its_fixed_values_where_asked() -> None:
    config = SimpleNamespace(num_hidden_layers=3, feat_extract_norm="layer")
    assert written({"model": Back(FIELDS)}, config) == {"model": {"encoder_layers": 3, "extractor_mode": "layer_norm"}}
    fixed = written(Back(FIELDS, fixed=True), config)
    assert fixed == {"layer_type": "conformer", "encoder_layers": 3, "extractor_mode": "layer_norm"}
    composite = SimpleNamespace(encoder=config, decoder=SimpleNamespace(num_hidden_layers=5))
    assert written([Back(FIELDS[:1], of="encoder"), Back(FIELDS[:1], of="decoder")], composite) == [
        {"encoder_layers": 3},
        {"encoder_layers": 5},
    ]


def test_merged_parts_later_win_picked_keeps_what_it_names_and_made_calls_its_function() -> None:
    config = SimpleNamespace(num_hidden_layers=3, feat_extract_norm="group")
    encoder = Merged(Back(FIELDS), {"_name": "wav2vec2", "encoder_layers": 0})
    assert written(encoder, config) == {"encoder_layers": 0, "extractor_mode": "default", "_name": "wav2vec2"}
    wrapper = Merged({"_name": "wav2vec_ctc", "w2v_args": {"model": encoder}}, Picked(encoder, ("_name", "absent")))
    assert written(wrapper, config) == {"_name": "wav2vec2", "w2v_args": {"model": written(encoder, config)}}
    assert written(Made(lambda c: {"twice": 2 * c.num_hidden_layers}), config) == {"twice": 6}
    slot = Slot("data")
    assert written({"data": slot, "n": 1}, config) == {"data": slot, "n": 1}  # slots wait for filled


@given(layers=st.integers(1, 64), mode=st.sampled_from(["group", "layer"]))
def test_what_a_tree_writes_reads_forward_as_the_config_it_came_from(layers: int, mode: str) -> None:
    config = SimpleNamespace(num_hidden_layers=layers, feat_extract_norm=mode)
    back = written(Merged(Back(FIELDS, fixed=True), {"unrelated": 1}), config)
    read = translate(ConfigTable("model", FIELDS), back, report_unknown=False).unwrap()
    assert read.kwargs == {"num_hidden_layers": layers, "feat_extract_norm": mode}
    wrong = translate(ConfigTable("model", FIELDS), {**back, "layer_type": "transformer"}).failure()  # control
    assert wrong.key == "layer_type"


def test_holds_gives_the_config_back_or_a_refusal_naming_the_field() -> None:
    from transformers import HubertConfig, Wav2Vec2Config

    from wmap.config_back import Holds
    from wmap.errors import Disagrees

    normalised = Holds(
        ConfigTable("config.json", (Checked("feat_proj_layer_norm", (True,), "always normalised", True),))
    )
    held = HubertConfig(feat_proj_layer_norm=True)
    assert normalised(held).unwrap() is held
    assert normalised(Wav2Vec2Config()).unwrap().model_type == "wav2vec2"  # no such field: its default
    refused = normalised(HubertConfig(feat_proj_layer_norm=False)).failure()
    assert (
        isinstance(refused, Disagrees)
        and refused.key == "feat_proj_layer_norm"
        and "always normalised" in refused.expected
    )
