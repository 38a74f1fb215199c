"""CountWorld: a procedural world of counted coloured shapes and the small Wan model trained on it.

`world` makes the scenes, captions, benchmark prompt sets and rendered clips with exact instance masks.
"""

from numina.countworld.world import (
    BACKGROUNDS,
    CAPTION_TEMPLATES,
    COLOURS,
    MAX_COUNT,
    MAX_KINDS,
    MAX_TOTAL,
    MOTIONS,
    NUMERALS,
    SHAPES,
    ObjectKind,
    RenderedBatch,
    Scene,
    benchmark_scenes,
    check_counts,
    palette_from_prompt,
    plural,
    render_scenes,
    sample_scene,
    vocabulary,
    write_prompt_folder,
)

__all__ = [
    "BACKGROUNDS",
    "CAPTION_TEMPLATES",
    "COLOURS",
    "MAX_COUNT",
    "MAX_KINDS",
    "MAX_TOTAL",
    "MOTIONS",
    "NUMERALS",
    "SHAPES",
    "ObjectKind",
    "RenderedBatch",
    "Scene",
    "benchmark_scenes",
    "check_counts",
    "palette_from_prompt",
    "plural",
    "render_scenes",
    "sample_scene",
    "vocabulary",
    "write_prompt_folder",
]
