"""Model resolution: registry aliases, GGUF files, local dirs, PEFT adapters, hub ids."""

from .registry import ALIASES, DEFAULT_MODEL
from .resolve import LOCAL_SOURCES, LoadedModel, ModelSource, SourceKind, find_source, load_model

__all__ = ["ALIASES", "DEFAULT_MODEL", "LOCAL_SOURCES", "LoadedModel", "ModelSource", "SourceKind", "find_source", "load_model"]
