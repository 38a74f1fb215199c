"""Evaluation: the CountBench prompts, counters (exact, OWLv2, GroundingDINO), counting accuracy, CLIP score.

May import numpy, pandas, scipy, torch, transformers, numina.prompts and the standard library;
nothing here imports analysis or experiments. `numina.evaluation.planted` (the planted-attention
benchmark of the layout) also imports numina.capture and numina.method, so it is not exported here:
import it by its own name.
"""

from numina.evaluation.accuracy import (
    PairedComparison,
    accuracy_by_categories,
    accuracy_by_target,
    accuracy_summary,
    count_changes,
    count_rows,
    counts_table,
    fidelity_summary,
    frame_scores,
    paired_comparison,
    video_scores,
)
from numina.evaluation.clip_score import DEFAULT_CLIP_MODEL, ClipScorer
from numina.evaluation.countbench import (
    COUNTBENCH_SIZE,
    CountBenchPrompt,
    default_countbench_dir,
    load_countbench,
    select_prompts,
)
from numina.evaluation.counters import Counter, ExactColourCounter, palette_for
from numina.evaluation.detectors import (
    GroundingDinoCounter,
    Owlv2Counter,
    load_detector,
    prompt_counter,
)

__all__ = [
    "COUNTBENCH_SIZE",
    "DEFAULT_CLIP_MODEL",
    "ClipScorer",
    "CountBenchPrompt",
    "Counter",
    "ExactColourCounter",
    "GroundingDinoCounter",
    "Owlv2Counter",
    "PairedComparison",
    "accuracy_by_categories",
    "accuracy_by_target",
    "accuracy_summary",
    "count_changes",
    "count_rows",
    "counts_table",
    "default_countbench_dir",
    "fidelity_summary",
    "frame_scores",
    "load_detector",
    "load_countbench",
    "paired_comparison",
    "palette_for",
    "prompt_counter",
    "select_prompts",
    "video_scores",
]
