"""audiocraft MusicGen -> MusicgenForConditionalGeneration: the LM, its EnCodec and the T5 the user
names, built by audiocraft and saved by its own exporters (state_dict.bin, compression_state_dict.bin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.originals import MUSICGEN_LM
from wmap import convert, preview
from wmap.errors import BadConfig, Disagrees

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any, Any]:
    """(the MusicGen directory, the T5 directory, audiocraft's LM, its compression model)."""
    from tests.originals import musicgen_directory, t5_directory

    root = tmp_path_factory.mktemp("musicgen")
    torch.manual_seed(0)
    lm, compression = musicgen_directory(root / "musicgen")
    return root / "musicgen", t5_directory(root / "t5"), lm, compression


@pytest.fixture(scope="module")
def converted(saved: tuple[Path, Path, Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory, t5, _, _ = saved
    return convert("musicgen", directory, tmp_path_factory.mktemp("hf") / "out", processor_file=t5).unwrap()


def _lm_back(directory: Path, t5: Path) -> Any:
    """audiocraft's ``load_lm_model`` on an exported directory (strict), the T5 it names loaded from ``t5``
    (audiocraft fetches it by name from the Hub)."""
    from unittest import mock

    from tests.originals import import_audiocraft

    audiocraft = import_audiocraft()
    conditioners = __import__("sys").modules["audiocraft.modules.conditioners"]
    load = conditioners.T5EncoderModel.from_pretrained
    with (
        mock.patch.object(conditioners.T5EncoderModel, "from_pretrained", lambda *a, **k: load(t5)),
        mock.patch.object(conditioners.T5Tokenizer, "from_pretrained", lambda *a, **k: None),
    ):
        return audiocraft.models.loaders.load_lm_model(directory)


def _logits_alike(lm: Any, model: Any, codes: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """For ``codes`` (1, codebooks, steps) and the same text states: audiocraft's LM (its own projection of
    the states) and the transformers model give the same logits, within 1e-5. Returns audiocraft's logits
    and its conditions."""
    _, codebooks, steps = codes.shape
    states = torch.randn(1, 3, model.config.text_encoder.d_model)
    mask = torch.ones(1, 3, dtype=torch.long)
    with torch.no_grad():
        conditions = {"description": (lm.condition_provider.conditioners["description"].output_proj(states), mask)}
        theirs = lm(codes, [], condition_tensors=conditions)
        ours = model(encoder_outputs=(states,), attention_mask=mask, decoder_input_ids=codes[0]).logits
    torch.testing.assert_close(ours.reshape(1, codebooks, steps, -1), theirs, rtol=0, atol=1e-5)
    return theirs, conditions


def _small_encodec(*codebooks: int) -> Any:
    """A transformers EnCodec of 64-code books at 50 frames a second whose bandwidths take ``codebooks``
    (the last: all it holds), random, its codebooks trained (a new one is all zeros: every code 0)."""
    from transformers import EncodecConfig, EncodecModel

    bandwidths = [n * 50 * 6 / 1000 for n in codebooks]  # log2(64) = 6 bits a code
    config = EncodecConfig(
        sampling_rate=16000,
        target_bandwidths=bandwidths,
        codebook_size=64,
        hidden_size=16,
        num_filters=4,
        upsampling_ratios=[8, 5, 4, 2],
        num_lstm_layers=1,
    )
    model = EncodecModel(config).eval()
    for layer in model.quantizer.layers:
        layer.codebook.embed.normal_()
        layer.codebook.inited.fill_(True)
    assert len(model.quantizer.layers) == codebooks[-1]
    return model


def _hub_cached(cache: Path, repo_id: str, model: Any) -> Path:
    """``model`` (or a directory) as the Hugging Face cache holds a download of ``repo_id``
    (``models--org--name``: the snapshot ``refs/main`` names, written by ``save_pretrained``)."""
    import shutil

    revision = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    if isinstance(model, Path):
        shutil.copytree(model, repo / "snapshots" / revision)
    else:
        model.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_the_plan_says_what_comes_from_where(saved: tuple[Path, Path, Any, Any]) -> None:
    directory, t5, _, _ = saved
    plan = preview("musicgen", directory, processor_file=t5).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    sources = {a.source.split(".", 1)[0] for a in plan.applied}
    assert sources == {"lm", "compression", "text_encoder"}
    targets = {a.source: a.target for a in plan.applied}
    assert targets["lm.condition_provider.conditioners.description.output_proj.weight"] == "enc_to_dec_proj.weight"
    assert len(plan.joined) == 0 and any(a.target.endswith("self_attn.q_proj.weight") for a in plan.applied)


def test_a_repeated_preview_is_shown_again_and_the_text_encoder_beside_it_counts(
    saved: tuple[Path, Path, Any, Any], tmp_path: Path
) -> None:
    """``wmap preview musicgen DIR --text-encoder T5``, repeated: shown again without importing torch,
    as ``--no-cache`` plans it; the T5's config changed, it is planned again (the control)."""
    import json
    import shutil

    from tests.helpers import wmap_imports

    directory, t5, _, _ = saved
    mine = Path(shutil.copytree(t5, tmp_path / "t5"))
    args = ("preview", "musicgen", str(directory), "--text-encoder", str(mine))
    first, again = (wmap_imports(*args, cache=tmp_path / "cache") for _ in range(2))
    assert "torch" in first[2] and "torch" not in again[2] and again[:2] == first[:2] and first[0] == 0
    assert wmap_imports(*args, "--no-cache", cache=tmp_path / "cache")[:2] == first[:2]
    config = json.loads((mine / "config.json").read_text())
    (mine / "config.json").write_text(json.dumps({**config, "dropout_rate": 0.25}))
    changed = wmap_imports(*args, cache=tmp_path / "cache")
    assert "torch" in changed[2] and changed[:2] == wmap_imports(*args, "--no-cache", cache=tmp_path / "cache")[:2]


@pytest.mark.parametrize("family", ["musicgen", "audiogen"])
def test_lm_logits_and_codes_are_audiocrafts(saved: tuple[Path, Path, Any, Any], tmp_path: Path, family: str) -> None:
    """For the same codes and the same description: the logits audiocraft's LM gives (its T5 states
    projected by its own output_proj), within 1e-5; the audio encoder's codes are EnCodec's. The
    processor loads with AutoProcessor and the model generates. (An AudioGen is the same LMModel with a
    16 kHz EnCodec, as this one: converted by the audiogen family, the same.)"""
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    directory, t5, lm, compression = saved
    converted = convert(family, directory, tmp_path / "out", processor_file=t5).unwrap()
    model = MusicgenForConditionalGeneration.from_pretrained(converted).eval()
    processor = AutoProcessor.from_pretrained(converted)
    inputs = processor(text=["a calm piano song with drum"], return_tensors="pt")
    codes = torch.randint(0, 64, (1, 4, 9))
    with torch.no_grad():
        states = model.text_encoder(**inputs).last_hidden_state
        condition = lm.condition_provider.conditioners["description"].output_proj(states)
        theirs = lm(codes, [], condition_tensors={"description": (condition, inputs["attention_mask"])})
        ours = model(**inputs, decoder_input_ids=codes.reshape(4, 9)).logits.reshape(1, 4, 9, -1)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        other = codes.clone()
        other[0, 0, 0] = (other[0, 0, 0] + 1) % 64  # the control: another first code changes the logits
        assert not torch.allclose(model(**inputs, decoder_input_ids=other.reshape(4, 9)).logits, ours.reshape(4, 9, -1))
        audio = torch.randn(1, 1, 1600)
        expected = compression.encode(audio)[0]
        found = model.audio_encoder.encode(audio, bandwidth=model.config.audio_encoder.target_bandwidths[0])
        assert torch.equal(found.audio_codes[0], expected)
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, guidance_scale=None)
    assert generated.shape[0] == 1 and generated.shape[1] == 1  # mono audio


def test_without_the_text_encoder_or_with_another_one_it_is_refused(
    saved: tuple[Path, Path, Any, Any], tmp_path: Path
) -> None:
    from transformers import T5Config, T5EncoderModel

    directory, _, _, _ = saved
    missing = preview("musicgen", directory).failure()
    assert isinstance(missing, BadConfig) and missing.key == "--text-encoder"
    T5EncoderModel(T5Config(d_model=64, d_ff=8, num_layers=1, num_heads=1, d_kv=8, vocab_size=16)).save_pretrained(
        tmp_path / "narrow"
    )
    narrow = preview("musicgen", directory, processor_file=tmp_path / "narrow").failure()
    assert isinstance(narrow, BadConfig) and narrow.key == "d_model" and "512" in narrow.expected


def _another_run(directory: Path, where: Path, **changes: Any) -> Path:
    """A copy of an audiocraft directory whose files' ``xp.cfg`` have other values at the dotted paths of
    ``changes`` (``optim__lr``: ``optim.lr``), re-exported as YAML text."""
    import shutil

    import yaml

    copy = Path(shutil.copytree(directory, where))
    for name in ("state_dict.bin", "compression_state_dict.bin"):
        saved = torch.load(copy / name, weights_only=False)
        cfg = yaml.safe_load(saved["xp.cfg"])
        for dotted, value in changes.items():
            *parents, last = dotted.split("__")
            section = cfg
            for parent in parents:
                section = section.get(parent, {})
            if last in section:  # where the file has it (the compression model's has no logging)
                section[last] = value
        torch.save({**saved, "xp.cfg": yaml.safe_dump(cfg)}, copy / name)
    return copy


def test_another_run_of_a_sweep_is_shown_from_the_kept_preview(
    saved: tuple[Path, Path, Any, Any], tmp_path: Path
) -> None:
    """Another run with other training settings (the data, the optimiser, the schedule, logging: what
    the family never reads of ``xp.cfg``) is the same model: its preview is shown without importing
    torch, as ``--no-cache`` plans it. The control: a field the family reads (the LM's dropout) is
    planned again."""
    from tests.helpers import wmap_imports

    directory, t5, _, _ = saved
    settings = {
        **{"optim__lr": 0.5, "optim__epochs": 7, "dataset__batch_size": 3, "dataset__segment_duration": 9.0},
        **{"schedule__lr_scheduler": "step", "logging__log_wandb": True, "device": "cuda", "dtype": "float16"},
    }
    other = _another_run(directory, tmp_path / "run-2", **settings)
    read = _another_run(directory, tmp_path / "run-3", transformer_lm__dropout=0.25)
    cache = tmp_path / "cache"

    def previewed(folder: Path, *more: str) -> tuple[int, str, set[str]]:
        return wmap_imports("preview", "musicgen", str(folder), "--text-encoder", str(t5), *more, cache=cache)

    first = previewed(directory)
    assert first[0] == 0 and "torch" in first[2]
    shown = previewed(other)
    assert "torch" not in shown[2] and shown[:2] == previewed(other, "--no-cache")[:2]
    control = previewed(read)
    assert "torch" in control[2] and control[:2] == previewed(read, "--no-cache")[:2]


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        (
            {"conditioners": {"genre": {"model": "lut", "lut": {"n_bins": 4, "dim": 8, "tokenizer": "noop"}}}},
            "conditioners",
        ),
        ({"codebooks_pattern": {"modeling": "parallel", "parallel": {}}}, "modeling"),
        ({"transformer_lm_overrides": {"norm_first": False}}, "norm_first"),
        ({"interleave_stereo_codebooks": {"use": True, "per_timestep": True}}, "per_timestep"),
        ({"interleave_stereo_codebooks": {"use": True, "per_timestep": False}}, "delay.delays"),  # mono's delays
    ],
)
def test_what_transformers_musicgen_cannot_compute_is_refused_naming_the_field(
    tmp_path: Path, sections: dict[str, Any], key: str
) -> None:
    from tests.originals import MUSICGEN_LM, musicgen_directory, t5_directory

    overrides = sections.pop("transformer_lm_overrides", None)
    if overrides:
        sections["transformer_lm"] = {**MUSICGEN_LM["transformer_lm"], **overrides}
    if "conditioners" in sections:
        sections["conditioners"] = {**MUSICGEN_LM["conditioners"], **sections["conditioners"]}
        sections["fuser"] = {**MUSICGEN_LM["fuser"], "sum": ["genre"]}  # a second conditioner, summed in
    musicgen_directory(tmp_path / "musicgen", sections)
    error = preview("musicgen", tmp_path / "musicgen", processor_file=t5_directory(tmp_path / "t5")).failure()
    assert isinstance(error, BadConfig) and key in error.key, error


def test_verify_and_shards_work_as_for_the_other_families(
    saved: tuple[Path, Path, Any, Any], converted: Path, tmp_path: Path
) -> None:
    """``verify`` finds every tensor as apply writes it (the split q/k/v included), and a changed one;
    ``--max-shard-size`` shards the composite as transformers does."""
    import json

    from safetensors.torch import load_file, save_file
    from transformers import MusicgenForConditionalGeneration

    from wmap.verification import verify

    directory, t5, _, _ = saved
    found = verify("musicgen", directory, converted, processor_file=t5).unwrap()
    assert found.ok and found.checked > 100
    sharded = convert("musicgen", directory, tmp_path / "sharded", processor_file=t5, max_shard_size="100KB").unwrap()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert MusicgenForConditionalGeneration.from_pretrained(sharded) is not None
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("config.json", "generation_config.json"):
        (changed / name).write_bytes((converted / name).read_bytes())
    state = load_file(converted / "model.safetensors")
    key = "decoder.model.decoder.layers.0.self_attn.k_proj.weight"
    state[key] = state[key] + 1
    save_file(state, changed / "model.safetensors", metadata={"format": "pt"})
    assert verify("musicgen", directory, changed, processor_file=t5).unwrap().differing == (key,)


def test_audiogen_is_musicgens_lm_with_its_own_sampling(
    saved: tuple[Path, Path, Any, Any], converted: Path, tmp_path: Path
) -> None:
    """AudioGen's LM is audiocraft's LMModel as MusicGen's (transformers has no AudioGen class): the
    same weights in the same places (byte-identical to the musicgen conversion of the same files, whose
    logits are audiocraft's), and AudioGen's sampling: 5 s by default, where MusicGen's is the run's
    segment (audiocraft's ``max_duration``: 10 s here); the control, a run of 3 s segments, generates 3 s
    by default either way."""
    import json

    directory, t5, _, _ = saved
    audiogen = convert("audiogen", directory, tmp_path / "audiogen", processor_file=t5).unwrap()
    assert (audiogen / "model.safetensors").read_bytes() == (converted / "model.safetensors").read_bytes()
    from transformers import MusicgenConfig

    audio = MusicgenConfig.from_pretrained(converted).audio_encoder
    assert not isinstance(audio, dict | None)
    frame_rate = audio.frame_rate
    lengths = [json.loads((d / "generation_config.json").read_text())["max_length"] for d in (audiogen, converted)]
    assert lengths == [round(5 * frame_rate), round(10 * frame_rate)]
    short = _another_run(directory, tmp_path / "short", dataset__segment_duration=3.0)
    for family in ("audiogen", "musicgen"):
        out = convert(family, short, tmp_path / f"short-{family}", processor_file=t5).unwrap()
        assert json.loads((out / "generation_config.json").read_text())["max_length"] == round(3 * frame_rate)


def test_the_way_back_loads_in_audiocraft_with_its_outputs(saved: tuple[Path, Path, Any, Any], tmp_path: Path) -> None:
    """export -> the directory MusicGen.get_pretrained reads: audiocraft's own loaders build the LM and
    the compression model from it strictly, every tensor as audiocraft had it, the same logits; the T5 is
    named in xp.cfg (skipped, with the reason), one audiocraft cannot name is refused; converted again,
    byte-identical weights."""
    from unittest import mock

    from tests.originals import import_audiocraft, t5_directory
    from wmap.way_back import export, preview_reverse

    directory, _, lm, compression = saved
    t5 = t5_directory(tmp_path / "t5-small", as_t5_small=True)
    hf = convert("musicgen", directory, tmp_path / "hf", processor_file=t5).unwrap()
    plan = preview_reverse("musicgen", hf).unwrap().plan
    assert plan.is_clean() and {s.key.split(".", 1)[0] for s in plan.skipped} == {"text_encoder"}
    (tmp_path / "back").mkdir()
    out = export("musicgen", hf, tmp_path / "back" / "state_dict.bin").unwrap()
    assert (out.parent / "compression_state_dict.bin").exists()

    audiocraft = import_audiocraft()
    conditioners = __import__("sys").modules["audiocraft.modules.conditioners"]
    named: list[str] = []
    load = conditioners.T5EncoderModel.from_pretrained  # the real one, before it is patched

    def t5_by_name(name: str, *args: Any, **kwargs: Any) -> Any:
        named.append(name)
        return load(t5)

    with (
        mock.patch.object(conditioners.T5EncoderModel, "from_pretrained", t5_by_name),
        mock.patch.object(conditioners.T5Tokenizer, "from_pretrained", lambda *a, **k: None),
    ):
        back = audiocraft.models.loaders.load_lm_model(out.parent)  # load_state_dict: strict
    back_compression = audiocraft.models.loaders.load_compression_model(out.parent)
    assert named == ["t5-small"]
    assert back.cfg.dataset.segment_duration == MUSICGEN_LM["dataset"]["segment_duration"]  # its max_duration
    for original, returned in ((lm, back), (compression, back_compression)):
        theirs, ours = original.state_dict(), returned.state_dict()
        assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    codes = torch.randint(0, 64, (1, 4, 5))
    condition = (torch.randn(1, 3, 16), torch.ones(1, 3, dtype=torch.long))
    with torch.no_grad():
        assert torch.equal(
            back(codes, [], condition_tensors={"description": condition}),
            lm(codes, [], condition_tensors={"description": condition}),
        )
    again = convert("musicgen", out.parent, tmp_path / "again", processor_file=t5).unwrap()
    assert (again / "model.safetensors").read_bytes() == (hf / "model.safetensors").read_bytes()

    (tmp_path / "never").mkdir()
    unnamed = export("musicgen", saved_converted(saved, tmp_path), tmp_path / "never" / "state_dict.bin").failure()
    assert isinstance(unnamed, Disagrees) and unnamed.key == "text_encoder"  # refused: exit 1, not bad input
    assert not list((tmp_path / "never").iterdir())  # nothing written


def saved_converted(saved: tuple[Path, Path, Any, Any], tmp_path: Path) -> Path:
    """The fixture's conversion, with its thin T5 (no name audiocraft knows)."""
    directory, t5, _, _ = saved
    return convert("musicgen", directory, tmp_path / "thin", processor_file=t5).unwrap()


def test_every_argument_the_lm_config_can_set_is_accounted_for() -> None:
    """transformer_lm's fields are LMModel's, StreamingTransformer's and its layers' keyword arguments
    (what the builder sets from other sections, and the classes it passes, aside): the table knows each."""
    import inspect

    from tests.originals import import_audiocraft
    from wmap.models.musicgen import TRANSFORMER_LM

    import_audiocraft()
    lm = __import__("audiocraft.models.lm", fromlist=["LMModel"])
    transformer = __import__("audiocraft.modules.transformer", fromlist=["StreamingTransformer"])
    from_builder = {"pattern_provider", "condition_provider", "fuser", "cfg_dropout", "cfg_coef", "attribute_dropout"}
    derived = {"d_model", "dim_feedforward", "device", "dtype", "layer_class", "rope"}  # from dim, hidden_scale...
    arguments = {
        name
        for cls in (lm.LMModel, transformer.StreamingTransformer, transformer.StreamingTransformerLayer)
        for name in inspect.signature(cls.__init__).parameters
        if name not in ("self", "args", "kwargs")
    }
    assert arguments - from_builder - derived - TRANSFORMER_LM.names() == set()


@pytest.mark.parametrize("shard", [None, "300KB"])
def test_a_fine_tune_saved_by_transformers_goes_back_to_audiocraft(
    saved: tuple[Path, Path, Any, Any], tmp_path: Path, shard: str | None
) -> None:
    """A directory transformers' own save_pretrained wrote (a fine-tune: a changed weight; default and
    sharded): exported, audiocraft's load_lm_model builds it strictly and its logits are the transformers
    model's for the same codes and conditioning."""

    from transformers import MusicgenForConditionalGeneration

    from tests.originals import t5_directory
    from wmap.way_back import export

    directory, _, _, _ = saved
    t5 = t5_directory(tmp_path / "t5-small", as_t5_small=True)
    converted = convert("musicgen", directory, tmp_path / "hf", processor_file=t5).unwrap()
    model = MusicgenForConditionalGeneration.from_pretrained(converted).eval()
    with torch.no_grad():
        model.decoder.lm_heads[1].weight.add_(0.5)  # the fine-tune
    tuned = tmp_path / "tuned"
    model.save_pretrained(tuned, **({"max_shard_size": shard} if shard else {}))
    (tmp_path / "back").mkdir()
    out = export("musicgen", tuned, tmp_path / "back" / "state_dict.bin").unwrap()

    back = _lm_back(out.parent, t5)
    _logits_alike(back, model, torch.randint(0, 64, (1, 4, 6)))


STEREO_LM: dict[str, Any] = {
    "transformer_lm": {
        **__import__("tests.originals", fromlist=["MUSICGEN_LM"]).MUSICGEN_LM["transformer_lm"],
        "n_q": 8,
    },
    "codebooks_pattern": {
        "modeling": "delay",
        "delay": {"delays": [0, 0, 1, 1, 2, 2, 3, 3], "flatten_first": 0, "empty_initial": 0},
    },
    "interleave_stereo_codebooks": {"use": True, "per_timestep": False},
    "channels": 2,
}
"""What audiocraft's stereo fine-tuning grid sets (musicgen_stereo_finetune_32khz): 8 codebooks, a left
and a right one for each of the mono EnCodec's 4, interleaved, each pair delayed alike."""


def test_a_stereo_musicgen_converts_both_ways_with_audiocrafts_codes_and_logits(tmp_path: Path) -> None:
    """A stereo MusicGen as audiocraft builds and exports it (the mono EnCodec codes each channel, the
    codebooks interleaved): ``audio_channels`` 2 and a two-channel feature extractor; the LM's logits are
    audiocraft's for the same 8 codebooks; a stereo prompt gives audiocraft's interleaved codes; generated
    audio has two channels. Back, audiocraft's loaders build the stereo model again, the same logits.
    (It used to be refused, as delays that are not one step per codebook.)"""

    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    from tests.originals import import_audiocraft, musicgen_directory, t5_directory
    from wmap.way_back import export

    torch.manual_seed(0)
    lm, compression = musicgen_directory(tmp_path / "stereo", STEREO_LM)
    t5 = t5_directory(tmp_path / "t5-small", as_t5_small=True)
    assert preview("musicgen", tmp_path / "stereo", processor_file=t5).unwrap().plan.is_clean()
    hf = convert("musicgen", tmp_path / "stereo", tmp_path / "hf", processor_file=t5).unwrap()
    model = MusicgenForConditionalGeneration.from_pretrained(hf).eval()
    processor = AutoProcessor.from_pretrained(hf)
    assert (model.config.decoder.audio_channels, model.config.decoder.num_codebooks) == (2, 8)
    assert processor.feature_extractor.feature_size == 2

    from omegaconf import OmegaConf

    audiocraft = import_audiocraft()
    cfg = OmegaConf.create({**MUSICGEN_LM, **STEREO_LM})  # as audiocraft's loader keeps it on the LM
    stereo = audiocraft.models.builders.get_wrapped_compression_model(compression, cfg)
    inputs = processor(text=["a calm piano song"], return_tensors="pt")
    codes = torch.randint(0, 64, (1, 8, 9))
    audio = torch.randn(1, 2, 1600) * 0.3
    with torch.no_grad():
        states = model.text_encoder(**inputs).last_hidden_state
        condition = lm.condition_provider.conditioners["description"].output_proj(states)
        conditions = {"description": (condition, inputs["attention_mask"])}
        theirs = lm(codes, [], condition_tensors=conditions)
        ours = model(**inputs, decoder_input_ids=codes.reshape(8, 9)).logits.reshape(1, 8, 9, -1)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        expected, _ = stereo.encode(audio)
        prompt = model._prepare_audio_encoder_kwargs_for_generation(audio, {}, "input_values")  # generate's own
        assert torch.equal(prompt["decoder_input_ids"].reshape(1, 8, -1), expected)
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False, guidance_scale=None)
    assert generated.shape[:2] == (1, 2)

    (tmp_path / "back").mkdir()
    out = export("musicgen", hf, tmp_path / "back" / "state_dict.bin").unwrap()
    back = _lm_back(out.parent, t5)
    wrapped = audiocraft.models.builders.get_wrapped_compression_model(
        audiocraft.models.loaders.load_compression_model(out.parent), back.cfg
    )
    assert wrapped.channels == 2 and wrapped.num_codebooks == 8
    with torch.no_grad():
        assert torch.equal(back(codes, [], condition_tensors=conditions), theirs)


FEWER_CODEBOOKS: dict[str, Any] = {
    "transformer_lm": {**MUSICGEN_LM["transformer_lm"], "n_q": 2},
    "codebooks_pattern": {"modeling": "delay", "delay": {"delays": [0, 1], "flatten_first": 0, "empty_initial": 0}},
    "compression_model_n_q": 2,
}
"""An LM trained on the first 2 of its EnCodec's 4 codebooks (audiocraft's ``compression_model_n_q``,
which its loader applies with ``set_num_codebooks``)."""


def test_an_lm_using_fewer_codebooks_than_its_encodec_holds_converts_both_ways(tmp_path: Path) -> None:
    """``compression_model_n_q`` 2 over a 4-codebook EnCodec: the audio encoder keeps its 4 quantizers and
    its first bandwidth takes 2, so transformers encodes a prompt as audiocraft's wrapped model does; the
    LM's logits are audiocraft's. Back, audiocraft's loaders build the same again (the setting written,
    the EnCodec whole). It used to be refused as "4 codebooks" expected; more codebooks than the EnCodec
    holds is refused naming the field."""

    from omegaconf import OmegaConf
    from transformers import MusicgenForConditionalGeneration

    from tests.originals import import_audiocraft, musicgen_directory, t5_directory
    from wmap.way_back import export

    torch.manual_seed(0)
    lm, compression = musicgen_directory(tmp_path / "fewer", FEWER_CODEBOOKS)
    t5 = t5_directory(tmp_path / "t5-small", as_t5_small=True)
    hf = convert("musicgen", tmp_path / "fewer", tmp_path / "hf", processor_file=t5).unwrap()
    model = MusicgenForConditionalGeneration.from_pretrained(hf).eval()
    first = model.config.audio_encoder.target_bandwidths[0]
    assert (
        model.config.decoder.num_codebooks == 2
        and model.audio_encoder.quantizer.get_num_quantizers_for_bandwidth(first) == 2
    )
    assert len(model.audio_encoder.quantizer.layers) == 4

    audiocraft = import_audiocraft()
    cfg = OmegaConf.create({**MUSICGEN_LM, **FEWER_CODEBOOKS})
    wrapped = audiocraft.models.builders.get_wrapped_compression_model(compression, cfg)
    codes = torch.randint(0, 64, (1, 2, 9))
    theirs, conditions = _logits_alike(lm, model, codes)
    audio = torch.randn(1, 1, 1600) * 0.3
    with torch.no_grad():
        expected, _ = wrapped.encode(audio)
        prompt = model._prepare_audio_encoder_kwargs_for_generation(audio, {}, "input_values")  # generate's own
        assert expected.shape[1] == 2 and torch.equal(prompt["decoder_input_ids"].reshape(1, 2, -1), expected)

    (tmp_path / "back").mkdir()
    out = export("musicgen", hf, tmp_path / "back" / "state_dict.bin").unwrap()
    back = _lm_back(out.parent, t5)
    compression_back = audiocraft.models.loaders.load_compression_model(out.parent)
    assert compression_back.total_codebooks == 4
    assert audiocraft.models.builders.get_wrapped_compression_model(compression_back, back.cfg).num_codebooks == 2
    with torch.no_grad():
        assert torch.equal(back(codes, [], condition_tensors=conditions), theirs)

    musicgen_directory(tmp_path / "too_many", {**FEWER_CODEBOOKS, "compression_model_n_q": 5})
    refused = preview("musicgen", tmp_path / "too_many", processor_file=t5).failure()
    assert isinstance(refused, BadConfig) and refused.key == "compression_model_n_q" and "at most 4" in refused.expected


def test_a_fine_tune_whose_compression_file_names_its_encodec_converts_from_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MusicGen fine-tuned from a released one: audiocraft's ``export_pretrained_compression_model``
    writes ``{"pretrained": "facebook/encodec_32khz"}`` in place of the EnCodec, which its loader fetches as
    a transformers EnCodec. wmap reads that EnCodec from the Hugging Face cache (never downloading): the
    audio encoder is its weights as they are, a prompt's codes are those of audiocraft's own loader on the
    same directory, the LM's logits audiocraft's. Not in the cache: refused naming the field and how to get
    it (it used to be 'no state dict'); a DAC named instead is refused too."""
    import huggingface_hub
    from transformers import MusicgenForConditionalGeneration

    from tests.originals import import_audiocraft, musicgen_directory, t5_directory

    torch.manual_seed(0)
    directory = tmp_path / "fine-tune"
    lm, _ = musicgen_directory(directory)
    audiocraft = import_audiocraft()
    name = "facebook/encodec_32khz"
    audiocraft.utils.export.export_pretrained_compression_model(name, directory / "compression_state_dict.bin")
    t5 = t5_directory(tmp_path / "t5", as_t5_small=True)  # one audiocraft can name: the test goes back
    encodec = _small_encodec(2, 4)  # the LM's 4 codebooks are the last bandwidth's, not the first's

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    missing = preview("musicgen", directory, processor_file=t5).failure()
    assert isinstance(missing, BadConfig) and missing.key == "pretrained" and f"hf download {name}" in missing.expected

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _hub_cached(tmp_path / "hub", name, encodec)
    plan = preview("musicgen", directory, processor_file=t5).unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    named = {a.source: a.target for a in plan.applied if a.source.startswith("compression.")}
    assert named["compression.quantizer.layers.0.codebook.embed"] == "audio_encoder.quantizer.layers.0.codebook.embed"
    hf = convert("musicgen", directory, tmp_path / "hf", processor_file=t5).unwrap()
    model = MusicgenForConditionalGeneration.from_pretrained(hf).eval()
    theirs_state, ours_state = encodec.state_dict(), model.audio_encoder.state_dict()
    assert theirs_state.keys() == ours_state.keys()
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in theirs_state)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    wrapped = audiocraft.models.loaders.load_compression_model(directory)  # audiocraft's own: by the name
    audio = torch.randn(1, 1, 3200) * 0.3
    with torch.no_grad():
        expected, _ = wrapped.encode(audio)
        prompt = model._prepare_audio_encoder_kwargs_for_generation(audio, {}, "input_values")  # generate's own
        assert expected.unique().numel() > 1 and torch.equal(prompt["decoder_input_ids"].reshape(1, 4, -1), expected)
    _logits_alike(lm, model, torch.randint(0, 64, (1, 4, 9)))
    assert snapshot.is_dir()
    from wmap.way_back import export

    (tmp_path / "back").mkdir()  # back, the EnCodec is written whole: audiocraft's loader codes alike
    export("musicgen", hf, tmp_path / "back" / "state_dict.bin").unwrap()
    with torch.no_grad():
        assert torch.equal(
            audiocraft.models.loaders.load_compression_model(tmp_path / "back").encode(audio)[0], expected
        )

    torch.save({"pretrained": "dac_44khz", "exported": True}, directory / "compression_state_dict.bin")
    dac = preview("musicgen", directory, processor_file=t5).failure()
    assert isinstance(dac, BadConfig) and dac.key == "pretrained" and "EnCodec" in dac.expected


def test_without_text_encoder_the_t5_its_config_names_comes_from_the_hub_cache(
    saved: tuple[Path, Path, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """audiocraft loads the T5 by the name in the LM's ``xp.cfg`` (``t5-small`` here), so a user who ran
    the model has it in the Hugging Face cache: without ``--text-encoder`` it is read from there, with its
    tokenizer (``AutoProcessor`` loads the result), and the conversion is the one ``--text-encoder`` gives.
    Not in the cache: one line naming the flag and how to fetch it. Such a preview is not kept (the cache
    is no part of its key): the control, a repeated one with ``--text-encoder``, is."""

    import huggingface_hub
    from safetensors.torch import load_file
    from transformers import AutoProcessor

    from tests.helpers import wmap_imports

    directory, t5, _, _ = saved
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    missing = preview("musicgen", directory).failure()
    assert isinstance(missing, BadConfig) and missing.key == "--text-encoder"
    assert "hf download t5-small" in missing.expected

    _hub_cached(tmp_path / "hub", "t5-small", t5)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = convert("musicgen", directory, tmp_path / "cached").unwrap()
    named = convert("musicgen", directory, tmp_path / "named", processor_file=t5).unwrap()
    first, second = load_file(cached / "model.safetensors"), load_file(named / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert AutoProcessor.from_pretrained(cached).tokenizer("a piano")["input_ids"]

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # the processes below read it
    args = ("preview", "musicgen", str(directory))
    runs = [wmap_imports(*args, cache=tmp_path / "kept") for _ in range(2)]
    assert runs[0][0] == runs[1][0] == 0 and all("torch" in imported for _, _, imported in runs)
    beside = (*args, "--text-encoder", str(t5))
    again = [wmap_imports(*beside, cache=tmp_path / "kept") for _ in range(2)]
    assert "torch" in again[0][2] and "torch" not in again[1][2]


def test_a_training_runs_own_checkpoint_converts_with_the_encodec_and_t5_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MusicGen fine-tune's ``checkpoint.th`` as audiocraft's solver saves it (the best state beside the
    live LM and optimizer, ``xp.cfg`` the omegaconf config), whose config names the released EnCodec it
    trained with (``compression_model_checkpoint: //pretrained/facebook/encodec_32khz``) and its T5:
    converted directly (audiocraft's own ``export_lm`` cannot read it under torch >= 2.6), the LM with its
    best weights (logits within 1e-5), the EnCodec and T5 from the Hugging Face cache. A run on the
    user's own EnCodec names that run's checkpoint by its path: read as a solver's file, its best codes.
    One named by dora's signature (``//sig/...``) is refused naming the field and how to give it."""

    import huggingface_hub
    from transformers import MusicgenForConditionalGeneration

    from tests.helpers import wmap_imports
    from tests.originals import audiocraft_solver_checkpoint, musicgen_run_checkpoint, t5_directory

    torch.manual_seed(0)
    lm = musicgen_run_checkpoint(tmp_path / "checkpoint.th", "//pretrained/facebook/encodec_32khz")
    encodec = _small_encodec(4)
    hub = tmp_path / "hub"
    _hub_cached(hub, "facebook/encodec_32khz", encodec)
    t5 = t5_directory(tmp_path / "t5")
    _hub_cached(hub, "t5-small", t5)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))

    plan = preview("musicgen", tmp_path / "checkpoint.th").unwrap().plan
    assert plan.is_clean(), plan.problems(limit=5)
    hf = convert("musicgen", tmp_path / "checkpoint.th", tmp_path / "hf").unwrap()
    model = MusicgenForConditionalGeneration.from_pretrained(hf).eval()
    assert all(torch.equal(model.audio_encoder.state_dict()[k], v) for k, v in encodec.state_dict().items())
    _logits_alike(lm, model, torch.randint(0, 64, (1, 4, 9)))

    monkeypatch.setenv("HF_HUB_CACHE", str(hub))  # the processes below read it
    args = ("preview", "musicgen", str(tmp_path / "checkpoint.th"), "--text-encoder", str(t5))
    runs = [wmap_imports(*args, cache=tmp_path / "kept") for _ in range(2)]
    assert runs[0][0] == runs[1][0] == 0 and all("torch" in imported for _, _, imported in runs)  # not kept

    (tmp_path / "encodec").mkdir()  # a run on the user's own EnCodec, named by its run's checkpoint.th
    best, _ = audiocraft_solver_checkpoint(tmp_path / "encodec" / "checkpoint.th")
    (tmp_path / "own").mkdir()
    musicgen_run_checkpoint(tmp_path / "own" / "checkpoint.th", str(tmp_path / "encodec" / "checkpoint.th"))
    own = MusicgenForConditionalGeneration.from_pretrained(
        convert("musicgen", tmp_path / "own" / "checkpoint.th", tmp_path / "own-hf").unwrap()
    ).eval()
    audio = torch.randn(1, 1, 1600) * 0.3
    with torch.no_grad():
        expected, _ = best.encode(audio)
        prompt = own._prepare_audio_encoder_kwargs_for_generation(audio, {}, "input_values")  # generate's own
        assert torch.equal(prompt["decoder_input_ids"].reshape(1, 4, -1), expected)

    (tmp_path / "dora").mkdir()
    musicgen_run_checkpoint(tmp_path / "dora" / "checkpoint.th", "//sig/0a1b2c3d")
    refused = preview("musicgen", tmp_path / "dora" / "checkpoint.th").failure()
    assert isinstance(refused, BadConfig) and refused.key == "compression_model_checkpoint"
    assert "compression_state_dict.bin" in refused.expected
