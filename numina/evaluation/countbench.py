"""The CountBench prompt set: 210 counting prompts with their `{noun: count}` targets.

The data lives outside the repository (`prompts.txt` and `noun_counts.jsonl`, one line per prompt, in
the same order); it is read from a folder the user gives, from $NUMINA_COUNTBENCH, or from
`../shared/countbench` beside the repository. Loading checks that the two files align and that every
target noun occurs in its prompt, and says which line is wrong. CountWorld's and CountWorld 2's
benchmark prompts come in the same form. May import numina.prompts and numina.countworld.world.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from numina.countworld.world import MAX_TOTAL, benchmark_scenes
from numina.prompts import validate_targets
from numina.prompts.phrases import PromptWords
from numina.prompts.targets import clean_prompt, find_occurrences

COUNTBENCH_SIZE = 210
PROMPTS_FILE, TARGETS_FILE = "prompts.txt", "noun_counts.jsonl"
_REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CountBenchPrompt:
    """One benchmark prompt: its 0-based line `index`, text and targets."""

    index: int
    prompt: str
    targets: dict[str, int]


def default_countbench_dir() -> Path:
    """$NUMINA_COUNTBENCH, else `../shared/countbench` beside the repository."""
    return Path(os.environ.get("NUMINA_COUNTBENCH", _REPO.parent / "shared" / "countbench"))


def load_countbench(
    folder: str | os.PathLike[str] | None = None, expected: int | None = COUNTBENCH_SIZE
) -> list[CountBenchPrompt]:
    """Read and check the prompt set in `folder` (default: `default_countbench_dir()`).

    `expected` is the number of prompts the folder must hold (None: any number, for custom sets).
    """
    base = Path(folder) if folder is not None else default_countbench_dir()
    missing = [name for name in (PROMPTS_FILE, TARGETS_FILE) if not (base / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CountBench folder {base} lacks {', '.join(missing)}; pass the folder that holds "
            f"{PROMPTS_FILE} and {TARGETS_FILE} (or set NUMINA_COUNTBENCH)."
        )
    prompts = [line.strip() for line in (base / PROMPTS_FILE).read_text(encoding="utf-8").splitlines()]
    rows = [line.strip() for line in (base / TARGETS_FILE).read_text(encoding="utf-8").splitlines()]
    while prompts and not prompts[-1]:
        prompts.pop()
    while rows and not rows[-1]:
        rows.pop()
    if len(prompts) != len(rows):
        raise ValueError(
            f"{base}: {PROMPTS_FILE} has {len(prompts)} lines but {TARGETS_FILE} has {len(rows)}; "
            "they must align line by line."
        )
    if expected is not None and len(prompts) != expected:
        raise ValueError(
            f"{base}: {len(prompts)} prompts, expected {expected} (CountBench); "
            "pass expected=None to load a custom prompt set."
        )
    loaded = []
    for index, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        where = f"{base / TARGETS_FILE} line {index + 1}"
        if not prompt:
            raise ValueError(f"{base / PROMPTS_FILE} line {index + 1} is empty.")
        try:
            targets = validate_targets(json.loads(row))
        except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{where}: not a {{noun: count}} JSON object ({error}).") from None
        words = PromptWords.from_text(clean_prompt(prompt))
        absent = [noun for noun in targets if not find_occurrences(words, noun)]
        if absent:
            raise ValueError(f"{where}: noun(s) {absent} do not occur in the prompt {prompt!r}.")
        loaded.append(CountBenchPrompt(index, prompt, targets))
    return loaded


def countworld_prompts(count: int = 160, seed: int = 0, max_total: int = MAX_TOTAL) -> list[CountBenchPrompt]:
    """CountWorld's benchmark prompts (`benchmark_scenes`: the first kind's count runs through 1-8 in
    turn, one to three kinds, at most `max_total` objects: CountWorld 2's limit is 10), as CountBench
    prompts with their targets."""
    return [
        CountBenchPrompt(index, scene.caption, scene.targets)
        for index, scene in enumerate(benchmark_scenes(count, seed, max_total))
    ]


def select_prompts(
    prompts: Sequence[CountBenchPrompt], indices: Sequence[int] | None = None, limit: int | None = None
) -> list[CountBenchPrompt]:
    """The prompts at `indices` (0-based lines, in the given order), then the first `limit` of them."""
    chosen = list(prompts)
    if indices is not None:
        bad = [i for i in indices if not 0 <= i < len(prompts)]
        if bad:
            raise ValueError(f"prompt indices {bad} out of range 0..{len(prompts) - 1}.")
        chosen = [prompts[i] for i in indices]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}.")
        chosen = chosen[:limit]
    return chosen
