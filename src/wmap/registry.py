"""The registry of model families, by name: what each converts is known without importing it.

Listing the families (``wmap models``) and every usage error therefore import
neither torch nor transformers; a family's module (which builds its rules from
transformers' classes) is imported only when the family is used.
"""

from __future__ import annotations

import importlib
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

    def description(self) -> dict[str, str]:
        """``name``, ``source`` and ``target``, as a family module passes them to its ``ModelSpec``."""
        return {"name": self.name, "source": self.source, "target": self.target}


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
    Family(
        "data2vec_audio_ctc",
        "fairseq data2vec-audio fine-tuned for CTC (a trainer checkpoint)",
        "transformers Data2VecAudioForCTC, with its Wav2Vec2Processor",
        "wmap.models.data2vec_audio",
        "DATA2VEC_AUDIO_CTC",
    ),
    Family(
        "data2vec_audio",
        "fairseq data2vec-audio pre-trained (a trainer checkpoint)",
        "transformers Data2VecAudioModel (headless)",
        "wmap.models.data2vec_audio",
        "DATA2VEC_AUDIO",
    ),
    Family(
        "distilhubert",
        "s3prl DistilHuBERT ({'Distiller', 'Config', ...} checkpoint)",
        "transformers HubertModel",
        "wmap.models.distilhubert",
        "DISTILHUBERT",
    ),
    Family(
        "wav2vec2_mbart",
        "fairseq xm_transformer: wav2vec2 encoder + conv adaptor + transformer decoder",
        "transformers SpeechEncoderDecoderModel(Wav2Vec2Model, MBartForCausalLM)",
        "wmap.models.wav2vec2_mbart",
        "WAV2VEC2_MBART",
    ),
)
"""The families wmap ships."""

_BY_NAME: Final = {family.name: family for family in SHIPPED}


def entry(name: str) -> Family:
    """A shipped family's entry (for its own module)."""
    return _BY_NAME[name]


_ADDED: dict[str, ModelSpec] = {}


def families() -> tuple[Family, ...]:
    """Every family, shipped and added, by name (nothing imported)."""
    added = tuple(Family(s.name, s.source, s.target, "", "") for s in _ADDED.values() if s.name not in _BY_NAME)
    return tuple(sorted((*SHIPPED, *added), key=lambda f: f.name))


def register(spec: ModelSpec) -> ModelSpec:
    """Add a family by its spec; registering the same spec again is harmless, another one under a
    taken name is refused (``ValueError``)."""
    known = _ADDED.get(spec.name)
    if (known is not None and known != spec) or (spec.name in _BY_NAME and get_model(spec.name).unwrap() != spec):
        raise ValueError(f"model {spec.name!r} is already registered as another family")
    _ADDED[spec.name] = spec
    return spec


def get_model(name: str) -> Result[ModelSpec, UnknownModel]:
    """The family called ``name`` (its module imported now), or an :class:`UnknownModel` listing the known ones."""
    if name in _ADDED:
        return Success(_ADDED[name])
    family = _BY_NAME.get(name)
    if family is None:
        return Failure(UnknownModel(name, tuple(f.name for f in families())))
    spec: ModelSpec = getattr(importlib.import_module(family.module), family.attribute)
    return Success(spec)


def registered() -> tuple[ModelSpec, ...]:
    """Every family's spec, by name (imports every family module)."""
    return tuple(get_model(family.name).unwrap() for family in families())
