"""The NUMINA method: identify, layout, correct, modulate, and the generation loop.

Modules: identify (head choice, nouns' cross maps), layout (instances per frame and noun), meanshift
(scikit-learn's MeanShift without its overhead), correct (removals and additions), tracking
(temporally consistent correction), modulate (the guided run's cross-attention bias), cache (step
caching), schedule (the walk-through's own steps and guidance), phase1 (what a run captures and the
head choice and layout from it), generation (the loop), presets (options and named presets).
"""

from numina.method.correct import Edit, correct_layout
from numina.method.generation import NuminaResult, run_numina
from numina.method.identify import HeadChoice, Phase1Data, choose_head, noun_cross_maps
from numina.method.layout import Layout, LayoutOptions, build_layout
from numina.method.modulate import CrossAttentionModulation, ModulationPlan, delta
from numina.method.phase1 import identify_and_layout, method_spec
from numina.method.presets import PRESETS, NuminaOptions, preset

__all__ = [
    "PRESETS",
    "CrossAttentionModulation",
    "Edit",
    "HeadChoice",
    "Layout",
    "LayoutOptions",
    "ModulationPlan",
    "NuminaOptions",
    "NuminaResult",
    "Phase1Data",
    "build_layout",
    "choose_head",
    "correct_layout",
    "delta",
    "identify_and_layout",
    "method_spec",
    "noun_cross_maps",
    "preset",
    "run_numina",
]
