"""Measures of one attention map, shared by the capture layer, the method and the analysis package."""

from numina.metrics.concentration import STATS, concentration_stats
from numina.metrics.lowrank import top_components
from numina.metrics.separability import TERMS, separability

__all__ = ["STATS", "TERMS", "concentration_stats", "separability", "top_components"]
