"""Evaluation: the CountBench prompt set (and, later, counters, CLIP score and paired statistics).

May import numina.prompts and the standard library; nothing here imports analysis or experiments.
"""

from numina.evaluation.countbench import (
    COUNTBENCH_SIZE,
    CountBenchPrompt,
    default_countbench_dir,
    load_countbench,
    select_prompts,
)

__all__ = [
    "COUNTBENCH_SIZE",
    "CountBenchPrompt",
    "default_countbench_dir",
    "load_countbench",
    "select_prompts",
]
