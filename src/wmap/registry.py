"""The registry of model families, by name: what each converts is known without importing it.

Listing the families (``wmap models``) and every usage error therefore import
neither torch nor transformers; a family's module (which builds its rules from
transformers' classes) is imported only when the family is used.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Final

import attrs
from returns.result import Failure, Result, Success

from wmap.errors import UnknownModel

if TYPE_CHECKING:
    from wmap.models.base import ModelSpec


@attrs.frozen
class Family:
    """A registered family: its name and description, and where its :class:`ModelSpec` lives."""

    name: str
    source: str
    target: str
    module: str
    attribute: str
    unread: tuple[str, ...] = ()
    """What the family's preview never reads of its checkpoints (dotted paths: a trainer's bookkeeping and
    training settings): left out of a kept preview's key but for their shape
    (:mod:`wmap.pickle_structure`)."""
    displayed: tuple[str, ...] = ()
    """What its preview only shows of its checkpoints (dotted paths to plain values, among the config
    fields it ignores): counted in a kept preview's key by shape, and read again when it is shown."""
    texts: tuple[str, ...] = ()
    """Top-level keys of its checkpoints that hold YAML text (audiocraft's ``xp.cfg``): read as the family
    reads them, so that ``unread`` can name paths inside (``xp.cfg.optim``)."""
    cached_beside: bool = False
    """Where no file is named beside the checkpoint, or the checkpoint is a file (a training run's), the
    family reads parts from the Hugging Face cache (MusicGen's T5 and EnCodec, by the names its config
    gives): such a preview is not kept, as the cache is no part of its key."""

    def description(self) -> dict[str, str]:
        """``name``, ``source`` and ``target``, as a family module passes them to its ``ModelSpec``."""
        return {"name": self.name, "source": self.source, "target": self.target}


FAIRSEQ_SETTINGS = (
    "common",
    "common_eval",
    "distributed_training",
    "dataset",
    "optimization",
    "optimizer",
    "lr_scheduler",
    "checkpoint",
    "bmuf",
    "ema",
    "criterion",
    "generation",
    "eval_lm",
    "interactive",
    "scoring",
    "bpe",
    "tokenizer",
)
"""The sections of a fairseq config that say how a model was trained (or how to run it), not what
it is: the fairseq families read ``model`` and ``task`` only."""

FAIRSEQ_TRAINER = (
    "optimizer_history",
    "extra_state",
    "last_optimizer_state",
    *(f"cfg.{section}" for section in FAIRSEQ_SETTINGS),
    "cfg.task.data",
    *(f"cfg.model.w2v_args.{section}" for section in FAIRSEQ_SETTINGS),
    "cfg.model.w2v_args.task.data",
)
"""What fairseq's trainer saves beside the model and what it is: the optimizer's history and state,
the training loop's (epoch, iterations, metrics), the training settings (also those of the
pre-training a fine-tuned file's encoder records), and the tasks' data directories. Another step of
a run, or another run of a sweep (other settings, the same model, task and data), differs only
there. The model section's own paths are displayed (:data:`FAIRSEQ_PATHS`)."""


FAIRSEQ_PATHS = (
    "cfg.model.w2v_path",
    "cfg.model.data",
    "cfg.model.load_pretrained_encoder_from",
    "cfg.model.load_pretrained_decoder_from",
)
"""Where a fine-tuning run found the pre-trained weights (an xm_transformer's encoder and decoder
too) and its data: the preview shows them among the fields it ignores; another fine-tune of the same
model elsewhere differs there."""

S3PRL_RUNNER = ("Optimizer", "Scheduler", "Step", "Args", "Config.task")
"""What s3prl's pre-training runner saves beside a distiller's weights and its ``Config.distiller``:
the optimizer's and scheduler's state, the step, the command line, the task's settings."""


def _fairseq(name: str, source: str, target: str, module: str, attribute: str) -> Family:
    """A fairseq family: its checkpoints hold a trainer's state and training settings, never read
    (:data:`FAIRSEQ_TRAINER`), and paths its preview only shows (:data:`FAIRSEQ_PATHS`)."""
    return Family(name, source, target, module, attribute, unread=FAIRSEQ_TRAINER, displayed=FAIRSEQ_PATHS)


AUDIOCRAFT_SETTINGS = (
    *("device", "dtype", "autocast", "autocast_dtype", "seed", "show", "label", "num_threads"),
    *("continue_from", "execute_only", "execute_inplace", "benchmark_no_load", "mp_start_method"),
    *("efficient_attention_backend", "logging", "tensorboard", "wandb", "slurm", "dora", "solver", "fsdp"),
    *("profiler", "deadlock", "dataset", "checkpoint", "generate", "evaluate", "optim", "schedule"),
    *("metrics", "cache", "tokens", "compression_model_checkpoint", "losses", "balancer", "adversarial"),
    *("mrstft", "mel", "sisnr", "msspec", "msstftd", "msd", "mpd"),
)
"""The sections of an audiocraft ``xp.cfg`` that say how a model was trained or run (its solver's, the
cluster's, the data's, the losses'), not what it is: no audiocraft family's preview reads them (the
model's sections, the rate and channels, stereo and ``compression_model_n_q`` stay counted). Beyond the
preview, ``dataset.segment_duration`` sets the generation length a conversion writes, and a run's own
checkpoint names its EnCodec in ``compression_model_checkpoint`` (such a preview is not kept)."""

AUDIOCRAFT_RUN = tuple(f"xp.cfg.{section}" for section in AUDIOCRAFT_SETTINGS)
"""What another run of a sweep (other settings, the same model) changes in an audiocraft file."""


def _audiocraft(
    name: str, source: str, target: str, attribute: str, module: str = "wmap.models.musicgen", *, lm: bool = True
) -> Family:
    """An audiocraft family: its files keep ``xp.cfg`` as YAML text, whose run settings it never reads;
    an LM's T5 is the one named beside it or, by default, the cached one its ``xp.cfg`` names."""
    return Family(name, source, target, module, attribute, unread=AUDIOCRAFT_RUN, texts=("xp.cfg",), cached_beside=lm)


def _encodec(rate: str, attribute: str) -> Family:
    return Family(
        f"encodec_{rate.replace(' ', '').lower()}",
        f"original EnCodec {rate} state dict (plain or under best_state)",
        f"transformers EncodecModel ({rate})",
        "wmap.models.encodec",
        attribute,
    )


SHIPPED: Final = (
    _encodec("24 kHz", "ENCODEC_24KHZ"),
    _encodec("32 kHz", "ENCODEC_32KHZ"),
    _encodec("48 kHz", "ENCODEC_48KHZ"),
    _audiocraft(
        "encodec_audiocraft",
        "audiocraft EnCodec (compression_state_dict.bin: best_state, xp.cfg; MusicGen's, AudioGen's or your own)",
        "transformers EncodecModel, configured from the file's xp.cfg",
        "ENCODEC_AUDIOCRAFT",
        "wmap.models.encodec_audiocraft",
        lm=False,
    ),
    _audiocraft(
        "musicgen",
        "audiocraft MusicGen, a directory (state_dict.bin, compression_state_dict.bin) or a run's checkpoint.th, + T5",
        "transformers MusicgenForConditionalGeneration, with MusicgenProcessor and its generation config",
        "MUSICGEN",
    ),
    _audiocraft(
        "audiogen",
        "audiocraft AudioGen, a directory (state_dict.bin, compression_state_dict.bin) or a run's checkpoint.th, + T5",
        "transformers MusicgenForConditionalGeneration (AudioGen's LM is MusicGen's), with MusicgenProcessor",
        "AUDIOGEN",
    ),
    _fairseq(
        "data2vec_audio_ctc",
        "fairseq data2vec-audio fine-tuned for CTC (a trainer checkpoint)",
        "transformers Data2VecAudioForCTC, with its Wav2Vec2Processor",
        "wmap.models.data2vec_audio",
        "DATA2VEC_AUDIO_CTC",
    ),
    _fairseq(
        "data2vec_audio",
        "fairseq data2vec-audio pre-trained (a trainer checkpoint)",
        "transformers Data2VecAudioModel (headless)",
        "wmap.models.data2vec_audio",
        "DATA2VEC_AUDIO",
    ),
    Family(
        "dac",
        "descript-audio-codec DAC ({'state_dict', 'metadata': {'kwargs'}}, as DAC.save(package=False) writes it)",
        "transformers DacModel (16/24/44 kHz, or as the kwargs say), with its DacFeatureExtractor",
        "wmap.models.dac",
        "DAC",
    ),
    _fairseq(
        "data2vec2_audio",
        "fairseq data2vec 2.0 audio pre-trained (data2vec_multi; a trainer checkpoint, without ALiBi)",
        "transformers Data2VecAudioModel (headless)",
        "wmap.models.data2vec2_audio",
        "DATA2VEC2_AUDIO",
    ),
    _fairseq(
        "data2vec2_audio_ctc",
        "fairseq data2vec 2.0 audio fine-tuned for CTC (a trainer checkpoint, without ALiBi)",
        "transformers Data2VecAudioForCTC, with its Wav2Vec2Processor",
        "wmap.models.data2vec2_audio",
        "DATA2VEC2_AUDIO_CTC",
    ),
    _fairseq(
        "wav2vec2",
        "fairseq wav2vec 2.0 pre-trained (a trainer checkpoint: quantizer, project_q, final_proj)",
        "transformers Wav2Vec2ForPreTraining",
        "wmap.models.wav2vec2",
        "WAV2VEC2",
    ),
    _fairseq(
        "wav2vec2_ctc",
        "fairseq wav2vec 2.0 fine-tuned for CTC (base or large/XLS-R style, MMS adapters or not; a trainer checkpoint)",
        "transformers Wav2Vec2ForCTC, with its Wav2Vec2Processor (and adapter.<corpus>.safetensors for adapters)",
        "wmap.models.wav2vec2",
        "WAV2VEC2_CTC",
    ),
    _fairseq(
        "wav2vec2_conformer",
        "fairseq wav2vec 2.0 Conformer pre-trained (rel_pos or rope; a trainer checkpoint)",
        "transformers Wav2Vec2ConformerForPreTraining",
        "wmap.models.wav2vec2_conformer",
        "WAV2VEC2_CONFORMER",
    ),
    _fairseq(
        "wav2vec2_conformer_ctc",
        "fairseq wav2vec 2.0 Conformer fine-tuned for CTC (rel_pos or rope; a trainer checkpoint)",
        "transformers Wav2Vec2ConformerForCTC, with its Wav2Vec2Processor",
        "wmap.models.wav2vec2_conformer",
        "WAV2VEC2_CONFORMER_CTC",
    ),
    _fairseq(
        "hubert",
        "fairseq HuBERT pre-trained (a trainer checkpoint; label dictionaries in task_state)",
        "transformers HubertModel",
        "wmap.models.hubert",
        "HUBERT",
    ),
    _fairseq(
        "hubert_ctc",
        "fairseq HuBERT fine-tuned for CTC (a trainer checkpoint)",
        "transformers HubertForCTC, with its Wav2Vec2Processor",
        "wmap.models.hubert",
        "HUBERT_CTC",
    ),
    Family(
        "whisper",
        "openai-whisper checkpoint ({'dims', 'model_state_dict'}, as whisper.load_model reads it)",
        "transformers WhisperForConditionalGeneration",
        "wmap.models.whisper",
        "WHISPER",
    ),
    Family(
        "distilhubert",
        "s3prl DistilHuBERT ({'Distiller', 'Config', ...} checkpoint)",
        "transformers HubertModel",
        "wmap.models.distilhubert",
        "DISTILHUBERT",
        unread=S3PRL_RUNNER,
    ),
    Family(
        "wavlm",
        "WavLM ({'cfg', 'model'}, as microsoft/unilm's WavLM.py and s3prl's wavlm_local load it)",
        "transformers WavLMModel, with its Wav2Vec2FeatureExtractor",
        "wmap.models.wavlm",
        "WAVLM",
    ),
    Family(
        "unispeech_sat",
        "UniSpeech-SAT as s3prl keeps it (a WavLM {'cfg', 'model'} without the relative position bias)",
        "transformers UniSpeechSatModel, with its Wav2Vec2FeatureExtractor",
        "wmap.models.wavlm",
        "UNISPEECH_SAT",
    ),
    _fairseq(
        "speech_to_text",
        "fairseq speech-to-text (s2t_transformer, ASR or ST; a trainer checkpoint)",
        "transformers Speech2TextForConditionalGeneration, with its feature extractor (and tokenizer: --tokenizer)",
        "wmap.models.speech_to_text",
        "SPEECH_TO_TEXT",
    ),
    _fairseq(
        "wav2vec2_mbart",
        "fairseq xm_transformer: wav2vec2 encoder + conv adaptor + transformer decoder",
        "transformers SpeechEncoderDecoderModel(Wav2Vec2Model, MBartForCausalLM)",
        "wmap.models.wav2vec2_mbart",
        "WAV2VEC2_MBART",
    ),
)
"""The families wmap ships."""

ENTRY_POINTS: Final = "wmap.families"
"""The entry-point group a package names its families in: ``NAME = "package.module:SPEC"``."""


@attrs.frozen
class Registry:
    """Families by name: described without importing them, loaded when used. A value: registering
    gives a new registry; registering a spec under its own name again replaces it (a re-run cell)."""

    described: tuple[Family, ...] = SHIPPED
    added: Mapping[str, ModelSpec] = attrs.field(factory=dict)

    def families(self) -> tuple[Family, ...]:
        """Every family, by name (nothing imported)."""
        named = {family.name: family for family in self.described}
        for spec in self.added.values():
            named[spec.name] = Family(spec.name, spec.source, spec.target, "", "")
        return tuple(named[name] for name in sorted(named))

    def register(self, spec: ModelSpec) -> Registry:
        """This registry with ``spec`` added (``ValueError`` if its name is a described family's)."""
        if any(family.name == spec.name for family in self.described):
            raise ValueError(f"model {spec.name!r} is already a family of this registry; choose another name")
        return attrs.evolve(self, added={**self.added, spec.name: spec})

    def get(self, name: str) -> Result[ModelSpec, UnknownModel]:
        """The family called ``name`` (its module imported now), or an :class:`UnknownModel` listing the known ones."""
        if name in self.added:
            return Success(self.added[name])
        family = next((f for f in self.described if f.name == name), None)
        if family is None:
            return Failure(UnknownModel(name, tuple(f.name for f in self.families())))
        loaded = _load_module(family.module)
        if isinstance(loaded, str):
            return Failure(UnknownModel(name, (), f"{family.module}:{family.attribute} cannot be loaded ({loaded})"))
        from wmap.models.base import ModelSpec

        spec = getattr(loaded, family.attribute, None)
        if not isinstance(spec, ModelSpec) or spec.name != name:
            return Failure(
                UnknownModel(name, (), f"{family.module}:{family.attribute} is not a ModelSpec named {name!r}")
            )
        return Success(spec)

    def specs(self) -> tuple[ModelSpec, ...]:
        """Every family's spec that loads, by name (imports every family module); one that does not
        (an installed package's broken entry point) is left out and named by :meth:`broken`."""
        loaded = (self.get(family.name) for family in self.families())
        return tuple(found.unwrap() for found in loaded if not isinstance(found, Failure))

    def broken(self) -> tuple[UnknownModel, ...]:
        """Why each family that does not load fails (imports every family module)."""
        loaded = (self.get(family.name) for family in self.families())
        return tuple(found.failure() for found in loaded if isinstance(found, Failure))

    def with_entry_points(self, group: str = ENTRY_POINTS) -> Registry:
        """This registry and the families installed packages name in the entry-point ``group``
        (read from package metadata; nothing imported until a family is used)."""
        from importlib.metadata import entry_points

        known = {family.name for family in self.described}
        found = [
            Family(point.name, f"from {point.value} (installed)", "", point.module, point.attr)
            for point in entry_points(group=group)
            if point.name not in known and point.attr
        ]
        return attrs.evolve(self, described=(*self.described, *found))


SHIPPED_REGISTRY: Final = Registry()
"""The families wmap ships, and nothing else."""


def default_registry() -> Registry:
    """The shipped families and those installed packages name under :data:`ENTRY_POINTS`."""
    return SHIPPED_REGISTRY.with_entry_points()


def entry(name: str) -> Family:
    """A shipped family's entry (for its own module)."""
    return next(family for family in SHIPPED if family.name == name)


def families() -> tuple[Family, ...]:
    """Every family of the default registry, by name (nothing imported)."""
    return default_registry().families()


def get_model(name: str) -> Result[ModelSpec, UnknownModel]:
    """The family called ``name`` in the default registry."""
    return default_registry().get(name)


def registered() -> tuple[ModelSpec, ...]:
    """Every family's spec in the default registry (imports every family module)."""
    return default_registry().specs()


_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def resolve(model: str | ModelSpec, registry: Registry | None = None) -> Result[ModelSpec, UnknownModel]:
    """A family from what a caller names: a :class:`ModelSpec` as it is; ``"package.module:NAME"`` or
    ``"path/to/file.py:NAME"``, the spec that module or file defines (the caller's own code, run as
    Python runs an import); else a name in ``registry`` (the default registry: shipped and installed
    families). An import that fails is reported as that module's error, not wmap's."""
    from wmap.models.base import ModelSpec

    if isinstance(model, ModelSpec):
        return Success(model)
    module, colon, attribute = model.rpartition(":")
    if not colon:
        return (registry or default_registry()).get(model)
    loaded = _load_module(module)
    if isinstance(loaded, str):
        return Failure(UnknownModel(model, (), loaded))
    spec = getattr(loaded, attribute, None)
    if spec is None:
        return Failure(UnknownModel(model, (), f"{module} defines no {attribute!r}"))
    if not isinstance(spec, ModelSpec):
        return Failure(UnknownModel(model, (), f"is a {type(spec).__name__}, not a ModelSpec"))
    return Success(spec)


def _load_module(module: str) -> ModuleType | str:
    """The module ``module`` names (a dotted name, or a ``.py`` file's path), or why it cannot be had."""
    try:
        if module.endswith(".py"):
            if not os.path.isfile(module):
                return f"no such file {module!r}"
            name = "wmap_user_family_" + re.sub(r"\W", "_", os.path.basename(module)[:-3])
            found = importlib.util.spec_from_file_location(name, module)
            if found is None or found.loader is None:
                return f"{module!r} cannot be loaded as a Python file"
            loaded = importlib.util.module_from_spec(found)
            found.loader.exec_module(loaded)
            return loaded
        if not _MODULE.fullmatch(module):
            return f"{module!r} is neither a module name (package.module) nor a .py file; expected MODULE:SPEC"
        return importlib.import_module(module)
    except Exception as error:  # the user's module raised while importing: its error, shown as such
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        return f"importing {module} failed (an error in that module, not in wmap): {detail}"
