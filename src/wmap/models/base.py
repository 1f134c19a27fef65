"""What a model family is made of: data plus small functions, and a registry by name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import attrs
from returns.result import Failure, Result, Success
from transformers import PretrainedConfig

from wmap.config_fields import IgnoredField
from wmap.errors import BadConfig, WmapError
from wmap.io.reading import Checkpoint, read_checkpoint
from wmap.plan import MakeRule
from wmap.transforms import Layout, Transform

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ModelClass: TypeAlias = "type[PreTrainedModel] | str"
"""A transformers model class, or its name in ``transformers`` (imported only when a model is built:
importing a model class imports transformers' whole modelling stack, which a preview with a known
target layout does not need)."""


def class_name(model_class: ModelClass) -> str:
    """The class's name, without importing it."""
    return model_class if isinstance(model_class, str) else model_class.__name__


_Config = TypeVar("_Config", bound=PretrainedConfig)


def config_from_dict(config_class: type[_Config], data: Mapping[str, Any]) -> Result[_Config, str]:
    """``data`` as ``config_class``, if transformers' own validation accepts it and the config reads back
    as ``save_pretrained`` writes it (``dtype: 0.0`` builds, is written as ``"0"``, and fails only when
    read back or nested in a composite config); otherwise what transformers said, on one line."""
    try:
        config = config_class.from_dict(dict(data))
        config_class.from_dict(config.to_dict())
    except Exception as error:  # transformers' and huggingface_hub's validation errors are of many types
        return Failure(" ".join(f"{type(error).__name__}: {error}".split())[:200])
    return Success(config)


def model_type(model_class: ModelClass) -> type[PreTrainedModel]:
    """The class itself (imported from ``transformers`` if named)."""
    if not isinstance(model_class, str):
        return model_class
    import transformers

    found: type[PreTrainedModel] = getattr(transformers, model_class)
    return found


@attrs.frozen
class TranslatedConfig:
    """The target config translated from the checkpoint's own, and the source fields it left behind."""

    config: PretrainedConfig
    ignored: tuple[IgnoredField, ...] = ()


ConfigFromCheckpoint = Callable[[Mapping[str, Any], Layout], Result[TranslatedConfig, BadConfig]]
"""(checkpoint metadata, source layout) -> the transformers config and the fields not carried over."""

Writer = Callable[[Path], None]
"""Writes prepared files into the (staging) output directory."""

Extras = Callable[[PretrainedConfig, Mapping[str, Any], "Path | None"], Result[Writer, BadConfig]]
"""(target config, checkpoint metadata, the user's ``--dict``/``--tokenizer`` file) -> a writer of the
processor files, prepared (and checked) before anything is written."""


def writing(*writers: Writer) -> Writer:
    """One writer running ``writers`` in order (a processor's files, then the generation config)."""

    def write(out_dir: Path) -> None:
        for writer in writers:
            writer(out_dir)

    return write


def no_extras(config: PretrainedConfig, meta: Mapping[str, Any], file: Path | None) -> Result[Writer, BadConfig]:
    """Families without processor files write nothing extra."""
    return Success(writing())


@attrs.frozen
class ExportSource:
    """What an export knows before any tensor is read: the directory's transformers config, the
    reversed rules, the directory's layout, the small files the exporter asked for (by name), and the
    names of the directory's files (``listed``: which ``adapter.<lang>.safetensors`` it holds)."""

    config: PretrainedConfig
    pipeline: Transform
    converted: Layout
    files: Mapping[str, str]
    listed: tuple[str, ...] = ()


@attrs.frozen
class Exporter:
    """How a family goes back to its original format (``wmap export``): the rules are the forward
    ones reversed (:mod:`wmap.reverse`); this holds what the rules cannot say.

    - ``original``: the original's layout and metadata (EnCodec's fixed layout, openai-whisper's
      ``dims``, fairseq's ``cfg``), so that the reverse plan is checked against the names and
      shapes the original has;
    - ``container``: (state dict, metadata, where the file goes) -> the object the original's loader reads;
    - ``reads``: small files of the transformers directory ``original`` needs (``vocab.json``);
    - ``companions``: metadata -> files written beside the output (fairseq's ``dict.ltr.txt``), and
      ``copied``: files of the directory copied beside it;
    - ``describes``: what the written file is, for messages;
    - ``way_back_only``: config -> rules tried before the reversed ones, for what the transformers
      model can hold and the original has no place for: refused with the reason (fairseq builds no
      ``post_extract_proj`` when the conv and encoder widths are equal), or skipped with it (s3prl's
      distiller has no mask embedding); the plan shows both."""

    original: Callable[[ExportSource], Result[tuple[Layout, dict[str, Any]], BadConfig]]
    container: Callable[[Mapping[str, Any], Mapping[str, Any], Path], dict[str, Any]]
    describes: str
    reads: tuple[str, ...] = ()
    companions: Callable[[Mapping[str, Any]], dict[str, str]] = lambda meta: {}
    copied: Callable[[Mapping[str, Any]], dict[str, str]] = lambda meta: {}
    """Metadata -> files of the directory copied beside the output as they are, by their name there
    (name beside -> name in the directory: speech-to-text's sentencepiece model, its task's ``spm.model``)."""
    way_back_only: Callable[[PretrainedConfig], tuple[Transform, ...]] = lambda config: ()
    beside: Callable[[Mapping[str, Any], Mapping[str, Any], Path], dict[str, Any]] = lambda state, meta, where: {}
    """(state dict, metadata, where the file goes) -> more torch files the original's loader reads beside
    it, by name (audiocraft's MusicGen: ``compression_state_dict.bin`` beside ``state_dict.bin``)."""
    made: Callable[[PretrainedConfig], tuple[MakeRule, ...]] = lambda config: ()
    """What the original holds that the directory cannot give and the way back makes (fairseq's
    ``mask_emb``, used only to mask in training, which a transformers model without masking lacks)."""
    leaves_out: str = ""
    """What of the directory the original's format has no place for (processor files, generation
    settings) and how it comes back; told to the user after an export."""


@attrs.frozen
class ModelSpec:
    """One convertible model family.

    - ``config_from_checkpoint``: the transformers config, from the checkpoint's own config where it
      carries one (fairseq ``cfg``, s3prl ``Config``) and the family's defaults otherwise;
    - ``config_class``: how a ``--config`` JSON file is read instead;
    - ``pipeline``: the rules, chosen from the config and the checkpoint's metadata (whose
      variants the target cannot represent become refusals);
    - ``model_class``: the target model's class, which :meth:`build` makes from a ``config_class`` config;
    - ``extras``: the processor files (tokenizer, feature extractor, generation config) the original
      script wrote, prepared before anything is written;
    - ``takes_file``: what the user's ``--dict``/``--tokenizer`` file is for this family (``None``: it takes none);
    - ``without_processor``: what ``--no-processor`` still writes (configs only).
    """

    name: str
    source: str
    target: str
    config_class: type[PretrainedConfig]
    config_from_checkpoint: ConfigFromCheckpoint
    pipeline: Callable[[PretrainedConfig, Mapping[str, Any]], Transform]
    model_class: ModelClass
    extras: Extras = no_extras
    takes_file: str | None = None
    without_processor: Extras = no_extras
    """What ``--no-processor`` still writes beside the weights (configs only: Whisper's generation
    config, derived without the tokenizer)."""
    export: Exporter | None = None
    """The way back to the original's format (``None``: the family is converted one way only)."""
    made: Callable[[PretrainedConfig], tuple[MakeRule, ...]] = lambda config: ()
    """Targets the original does not hold that the family makes from the config (an identity
    projection where fairseq has no ``post_extract_proj``); the way back drops them while they are
    still what would be made, and refuses a trained one, naming it."""
    headless: ModelClass | None = None
    """The class for a file without the pre-training heads (a conformer without a quantizer), built
    where the config's ``architectures`` names it (the config translation, or ``config.json``, says so)."""
    reads: Callable[[str, Path | None], Result[Checkpoint, WmapError]] | None = None
    """How the family reads a source of several files, as one checkpoint whose keys are prefixed by
    part and whose metadata holds each part's: (the checkpoint path, the user's ``--text-encoder`` /
    ``--dict`` path) -> the checkpoint (audiocraft's MusicGen: a directory of two files, and the text
    encoder's transformers directory). ``None``: the checkpoint is one file, read as any."""
    stand_ins: Mapping[str, type] = attrs.field(factory=dict)
    """Classes the original pickles beyond plain containers, read as inert data (global name ->
    stand-in: fairseq's label dictionary, :data:`wmap.fairseq.STAND_INS`); anything else is refused."""
    reference: Traversable | None = None
    """A JSON file of the original's names and shapes at its default config (``{"layout": {key:
    shape}, "meta": {...}}``), previewed when no checkpoint is given; ``None``: the family has none."""

    def build(self, config: PretrainedConfig) -> PreTrainedModel:
        """The target model for ``config`` (called on the ``meta`` device for layouts)."""
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} builds from a {self.config_class.__name__}, not a {type(config).__name__}")
        return model_type(self.built_class(config))(config=config)

    def built_class(self, config: PretrainedConfig) -> ModelClass:
        """The class :meth:`build` makes for ``config`` (the headless one where its config names it)."""
        if self.headless is not None and is_headless(self.headless, config):
            return self.headless
        return self.model_class

    def read(self, checkpoint: str | os.PathLike[str], file: Path | None = None) -> Result[Checkpoint, WmapError]:
        """The family's source: :attr:`reads` (several files; ``file``: the user's ``--text-encoder``)
        or one checkpoint file, read with the family's :attr:`stand_ins`."""
        if self.reads is not None:
            return self.reads(os.fspath(checkpoint), file)
        found: Result[Checkpoint, WmapError] = read_checkpoint(checkpoint, stand_ins=self.stand_ins)
        return found

    def reference_layout(self) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
        """The names and shapes of the original at its default config (and its metadata), from
        :attr:`reference`."""
        if self.reference is None:
            return Failure(
                BadConfig(self.name, "checkpoint", "a checkpoint file (the family has no reference layout)", "none")
            )
        return read_reference(self.reference)


def is_headless(headless: ModelClass | None, config: PretrainedConfig) -> bool:
    """Whether ``config`` is for a family's ``headless`` class (its ``architectures`` names it)."""
    names = getattr(config, "architectures", None) or [None]
    return headless is not None and names[0] == class_name(headless)


def read_reference(reference: Traversable) -> Result[tuple[Layout, dict[str, Any]], BadConfig]:
    """A reference layout file: ``{"layout": {key: shape}, "meta": {...}}``."""
    try:
        data = json.loads(reference.read_text())
        layout = {str(key): tuple(int(n) for n in shape) for key, shape in data["layout"].items()}
        return Success((layout, dict(data.get("meta", {}))))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        return Failure(BadConfig(str(reference), "layout", "a reference layout JSON file", repr(error)[:80]))


def bundled_reference(name: str) -> Traversable:
    """The reference layout shipped with wmap for family ``name`` (``wmap/models/reference/NAME.json``)."""
    return resources.files("wmap.models").joinpath("reference", f"{name}.json")


def shipped(name: str) -> dict[str, Any]:
    """A shipped family's ``name``, ``source``, ``target`` (from the registry) and bundled ``reference``,
    as its module passes them to its :class:`ModelSpec`."""
    from wmap.registry import entry

    return {**entry(name).description(), "reference": bundled_reference(name)}
