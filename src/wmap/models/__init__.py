"""Model families, one module each, registered by name."""

from wmap.models import data2vec_audio as data2vec_audio
from wmap.models import distilhubert as distilhubert
from wmap.models import encodec as encodec
from wmap.models import wav2vec2_mbart as wav2vec2_mbart
from wmap.models.base import ModelSpec, get_model, register, registered

__all__ = ["ModelSpec", "get_model", "register", "registered"]
