"""Wan pipelines: loading real checkpoints and the built-in CountWorld model, building tiny offline
ones, and their token geometry."""

from numina.models.geometry import Geometry
from numina.models.loading import (
    DEFAULT_MODEL,
    geometry_of,
    identify_variant,
    is_tiny_model,
    load_pipeline,
    load_tokenizer,
    model_defaults,
    resolve_model,
    set_attention_backend,
)
from numina.models.tiny import build_tiny_pipeline
from numina.models.tokenizer import build_tiny_tokenizer
from numina.models.variants import VARIANTS, WanVariant, get_variant

__all__ = [
    "DEFAULT_MODEL",
    "VARIANTS",
    "Geometry",
    "WanVariant",
    "build_tiny_pipeline",
    "build_tiny_tokenizer",
    "get_variant",
    "geometry_of",
    "identify_variant",
    "load_tokenizer",
    "is_tiny_model",
    "load_pipeline",
    "model_defaults",
    "resolve_model",
    "set_attention_backend",
]
