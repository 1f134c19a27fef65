"""Model families, one module each: tables of rules and of config fields (see :mod:`wmap.registry`)."""

from wmap.models.base import ModelSpec
from wmap.registry import get_model, registered

__all__ = ["ModelSpec", "get_model", "registered"]
