"""An audiocraft LM's three parts read as one checkpoint, each under its prefix (:data:`PARTS`): the LM
and the compression model from the directory ``MusicGen.get_pretrained`` reads or from a training run's
own ``checkpoint.th`` (whose config names the compression model), and the T5 text encoder from the
transformers directory the user names or, by the name the LM's config gives, from the Hugging Face cache.

audiocraft fetches released parts from the Hub by name (a fine-tune's compression file may hold only
``{"pretrained": "facebook/encodec_32khz"}``; its T5 is always fetched): they are read here from the
Hugging Face cache where it put them, never downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from returns.result import Failure, Result, Success

from wmap.config_fields import get
from wmap.errors import BadConfig, WmapError
from wmap.io import Checkpoint, parse_json, read_checkpoint, read_pickled, read_small_text, read_weights
from wmap.models import encodec_audiocraft

LM_FILE, COMPRESSION_FILE = "state_dict.bin", "compression_state_dict.bin"
PARTS = ("lm", "compression", "text_encoder")
"""The prefixes the three parts' keys are read under."""
TEXT_ENCODER = "--text-encoder"
T5_NEEDED = (
    "the transformers T5 directory the LM was conditioned on (audiocraft's files hold only its projection; "
    "by default the one its xp.cfg names, from the Hugging Face cache)"
)


def _prefixed(part: str, checkpoint: Checkpoint) -> dict[str, Any]:
    return {f"{part}.{key}": tensor for key, tensor in checkpoint.tensors.items()}


def read_parts(checkpoint: str, text_encoder: Path | None) -> Result[Checkpoint, WmapError]:
    """The LM and the compression model (a directory's two files, or a training run's checkpoint and the
    EnCodec its config names: :func:`run_compression`), and the text encoder's transformers directory
    (the one named, else :func:`cached_text_encoder`), as one checkpoint whose keys are prefixed by part
    (:data:`PARTS`) and whose metadata holds each part's, and where the text encoder was read from."""
    where = Path(checkpoint)
    lm: Result[Checkpoint, WmapError] = read_checkpoint(where / LM_FILE if where.is_dir() else where)
    return lm.bind(partial(_with_parts, where, text_encoder))


def _with_parts(where: Path, text_encoder: Path | None, lm: Checkpoint) -> Result[Checkpoint, WmapError]:
    found: Result[Path, WmapError] = Success(Path(text_encoder)) if text_encoder else cached_text_encoder(lm.meta)
    return found.bind(partial(_read_parts, where, lm))


def _read_parts(where: Path, lm: Checkpoint, text_encoder: Path) -> Result[Checkpoint, WmapError]:
    compression = read_compression(where / COMPRESSION_FILE) if where.is_dir() else run_compression(lm.meta)
    t5: Result[Checkpoint, WmapError] = read_weights(text_encoder)
    config: Result[str, WmapError] = read_small_text(
        text_encoder / "config.json", TEXT_ENCODER, "a transformers T5 config.json"
    )
    found: Result[tuple[Checkpoint, Checkpoint, str], WmapError] = Result.do(
        (audio, weights, json) for audio in compression for weights in t5 for json in config
    )
    return found.bind(lambda parts: _joined(where, lm, text_encoder, *parts))


PRETRAINED_PREFIX = "//pretrained/"
"""How a training run's ``compression_model_checkpoint`` names a released compression model."""


def run_compression(meta: Mapping[str, Any]) -> Result[Checkpoint, WmapError]:
    """A training run's checkpoint (the LM solver's ``checkpoint.th``) holds no compression model: its
    ``xp.cfg`` names one (``compression_model_checkpoint``), which is read as audiocraft's solver loads it:
    a released EnCodec (``//pretrained/NAME``) from the Hugging Face cache (:func:`cached_encodec`), a
    file by its absolute path (``//pretrained/PATH``: an exported one; ``PATH``: another run's checkpoint,
    a solver's file as :func:`~wmap.io.read_checkpoint` reads it). One named by dora's signature or a
    relative path depends on where the run was made: refused, saying how to give it."""
    cfg = encodec_audiocraft.xp_cfg_of(meta)
    if isinstance(cfg, BadConfig):
        return Failure(cfg)
    named = get(cfg, "compression_model_checkpoint", None)
    if isinstance(named, str):
        name = named.removeprefix(PRETRAINED_PREFIX)
        if Path(name).is_absolute() and Path(name).is_file():
            return read_compression(Path(name))
        if named.startswith(PRETRAINED_PREFIX):
            return cached_encodec("audiocraft xp.cfg", "compression_model_checkpoint", name)
    expected = (
        f"{PRETRAINED_PREFIX}NAME (a released EnCodec) or a file's absolute path; for one named otherwise, a "
        f"directory holding this file as {LM_FILE} and the compression model's as {COMPRESSION_FILE}"
    )
    return Failure(BadConfig("audiocraft xp.cfg", "compression_model_checkpoint", expected, repr(named)))


def hub_cached(name: str) -> Path | None:
    """The folder of ``name``'s snapshot in the Hugging Face cache (where its ``config.json`` is), or
    ``None``: not there, or not a name the Hub could hold. Nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except ValueError:
        return None
    return Path(found).parent if isinstance(found, str) else None


def cached_text_encoder(meta: Mapping[str, Any]) -> Result[Path, BadConfig]:
    """The T5 the LM's ``xp.cfg`` names (``conditioners.description.t5.name``), from the Hugging Face
    cache, where audiocraft's conditioner downloaded it (it loads the T5 by that name)."""
    cfg = encodec_audiocraft.xp_cfg_of(meta)
    if isinstance(cfg, BadConfig):
        return Failure(cfg)
    name = get(get(get(get(cfg, "conditioners", None), "description", None), "t5", None), "name", None)
    folder = hub_cached(name) if isinstance(name, str) else None
    if folder is None:
        expected = f"{T5_NEEDED}; or {name} in the Hugging Face cache (hf download {name})"
        return Failure(BadConfig("audiocraft LM", TEXT_ENCODER, expected, "none"))
    return Success(folder)


PRETRAINED = "pretrained"
NOT_ENCODECS = ("dac_44khz", "dac_24khz", "debug_compression_model")
"""Compression models audiocraft names that are no EnCodec (transformers' MusicGen's audio encoder is one)."""


def read_compression(path: Path) -> Result[Checkpoint, WmapError]:
    """The compression model: the weights in ``compression_state_dict.bin``, or the transformers EnCodec
    the file names in their place (:func:`named_encodec`)."""
    found: Result[Checkpoint, WmapError] = read_checkpoint(path)
    return found.lash(partial(_named_instead, path))


def _named_instead(path: Path, unread: WmapError) -> Result[Checkpoint, WmapError]:
    found: Result[object, WmapError] = read_pickled(path)
    return found.bind(partial(named_encodec, path, unread))


def named_encodec(path: Path, unread: WmapError, container: object) -> Result[Checkpoint, WmapError]:
    """audiocraft's ``export_pretrained_compression_model`` writes a name in place of the weights
    (``{"pretrained": "facebook/encodec_32khz"}``: a fine-tune of a released MusicGen), which its loader
    fetches from the Hub as a transformers EnCodec (:func:`cached_encodec`). A file that names nothing
    fails with ``unread``."""
    name = container.get(PRETRAINED) if isinstance(container, Mapping) else None
    return cached_encodec(str(path), PRETRAINED, name) if isinstance(name, str) else Failure(unread)


def cached_encodec(where: str, key: str, name: str) -> Result[Checkpoint, WmapError]:
    """The transformers EnCodec ``name``, which audiocraft fetches from the Hub, read from the Hugging Face
    cache where it put it (nothing is downloaded): its weights as they are and its ``config.json``.
    ``where`` and ``key``: what named it, for the error where it is not there or names no EnCodec."""
    if name in NOT_ENCODECS:
        expected = "an EnCodec (transformers' MusicGen encodes audio with one)"
        return Failure(BadConfig(where, key, expected, repr(name)))
    folder = hub_cached(name)
    if folder is None:
        expected = f"a model in the Hugging Face cache (audiocraft's loader downloads it there: hf download {name})"
        return Failure(BadConfig(where, key, expected, f"{name!r}, which is not there"))
    weights: Result[Checkpoint, WmapError] = read_weights(folder)
    text: Result[str, WmapError] = read_small_text(folder / "config.json", where, "the named EnCodec's config.json")
    found: Result[tuple[Checkpoint, str], WmapError] = Result.do(
        (tensors, json) for tensors in weights for json in text
    )
    return found.bind(lambda parts: _named_checkpoint(name, folder, *parts))


def _config_json(text: str, where: str) -> Result[Any, BadConfig]:
    """A part's ``config.json`` text parsed (``where``: whose it is, for the error)."""
    try:
        return Success(parse_json(text))
    except ValueError as error:
        return Failure(BadConfig(f"{where} config.json", "config", "JSON", type(error).__name__))


def _named_checkpoint(name: str, folder: Path, weights: Checkpoint, text: str) -> Result[Checkpoint, WmapError]:
    return _config_json(text, name).map(
        lambda config: Checkpoint(str(folder), weights.tensors, {PRETRAINED: name, "config": config})
    )


def _joined(
    where: Path, lm: Checkpoint, text_encoder: Path, compression: Checkpoint, t5: Checkpoint, config: str
) -> Result[Checkpoint, WmapError]:
    return _config_json(config, TEXT_ENCODER).map(partial(_one_checkpoint, where, lm, text_encoder, compression, t5))


def _one_checkpoint(
    where: Path, lm: Checkpoint, text_encoder: Path, compression: Checkpoint, t5: Checkpoint, text_config: Any
) -> Checkpoint:
    """The three parts as one checkpoint, each part's keys under its prefix (:data:`PARTS`)."""
    tensors = {**_prefixed("lm", lm), **_prefixed("compression", compression), **_prefixed("text_encoder", t5)}
    meta = {
        "lm": dict(lm.meta),
        "compression": dict(compression.meta),
        "text_encoder": text_config,
        TEXT_ENCODER_FROM: str(text_encoder),
    }
    return Checkpoint(str(where / LM_FILE if where.is_dir() else where), tensors, meta)


TEXT_ENCODER_FROM = "text_encoder_from"
"""Where the text encoder was read from (named, or the Hugging Face cache): its tokenizer is written too."""
