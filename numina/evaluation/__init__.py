"""Evaluation: the CountBench prompt set, counters (and, later, CLIP score and paired statistics).

May import numpy, scipy, numina.prompts and the standard library; nothing here imports analysis or
experiments.
"""

from numina.evaluation.countbench import (
    COUNTBENCH_SIZE,
    CountBenchPrompt,
    default_countbench_dir,
    load_countbench,
    select_prompts,
)
from numina.evaluation.counters import Counter, ExactColourCounter

__all__ = [
    "COUNTBENCH_SIZE",
    "CountBenchPrompt",
    "Counter",
    "ExactColourCounter",
    "default_countbench_dir",
    "load_countbench",
    "select_prompts",
]
