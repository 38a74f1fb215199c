"""Instance extractions on planted attention: how often a layout finds exactly the instances that are there.

    python benchmarks/layout_planted.py --out benchmarks/results/layout_planted
    python benchmarks/layout_planted.py --quick --out /tmp/planted          # ~1 minute on 2 cores
    python benchmarks/layout_planted.py --extractions official,segments --out /tmp/planted

Generates a seeded suite of planted scenes (`numina.evaluation.planted.benchmark_suite`: every grid x
k x difficulty cell, `--cases-per-cell` cases each, scenarios and noun map styles in turn), runs each
named extraction (`--extractions`, from `planted.EXTRACTIONS`; `official` is the method's own layout
with the `official` preset's `LayoutOptions`, `segments` the same path with
`LayoutOptions(extraction="segments")` and 12 captured components, `release` the release's formulas run
with scikit-learn itself) on every case, and writes to `--out`:

    rows.csv                    one row per extraction, case and frame (count, matches, IoU, errors)
    summary_<breakdown>.csv     exact and right-count rates with 95% Wilson intervals, by overall, k,
                                grid, difficulty, scenario, noun_map and difficulty x k
    summary.md                  the same tables in markdown (also printed)
    accuracy_by_k.png/.pdf      exact rate by k, one panel per difficulty, one line per extraction
    examples.png/.pdf           `--examples` cases spread over the suite: layouts over their truth
    same_labels.csv             with several extractions: by difficulty, the fraction of frames whose
                                labels are exactly the first extraction's (`--extractions
                                release,official`: does `official` reproduce the release?)
    config.json                 the arguments, the code version, seconds per extraction, cells left out

60x104 cases cost about 5 s each on 2 CPU cores (the 6240 x 6240 maps), so the default grids leave
that grid out; add it with `--grids 16x16,32x32,30x52,60x104`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from numina.arguments import PLANTED_DIFFICULTIES, PLANTED_EXTRACTIONS, integer

DEFAULT_GRIDS = "16x16,32x32,30x52"
DEFAULT_KS = "0-8"
STRESS_KS = (10, 11, 12)
QUICK = {"grids": "16x16,30x52", "ks": "0,1,2,4,8", "cases_per_cell": 1}


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for tables and figures")
    parser.add_argument("--seed", type=integer(0), default=0, help="suite seed (every case derives its own)")
    parser.add_argument("--grids", default=None, help=f"HxW list (default {DEFAULT_GRIDS})")
    parser.add_argument("--ks", default=None, help=f"instance counts, e.g. 0-8,10 (default {DEFAULT_KS})")
    parser.add_argument("--stress", action="store_true", help=f"add k = {STRESS_KS} where they fit")
    parser.add_argument("--difficulties", default=",".join(PLANTED_DIFFICULTIES), help="difficulty levels")
    parser.add_argument(
        "--cases-per-cell", type=integer(1), default=None, help="cases per grid x k x level (default 4)"
    )
    parser.add_argument("--extractions", default="official", help=f"from {', '.join(PLANTED_EXTRACTIONS)}")
    parser.add_argument("--examples", type=integer(0), default=6, help="cases drawn in examples.png")
    parser.add_argument("--quick", action="store_true", help=f"a small suite: {QUICK}")
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.figures import planted_accuracy_figure, planted_examples_figure, save_figure
from numina.evaluation.planted import (
    DIFFICULTIES,
    EXTRACTIONS,
    accuracy_table,
    benchmark_suite,
    run_benchmark,
)
from numina.version import code_version

BREAKDOWNS = {
    "overall": None,
    "k": "k",
    "grid": "grid",
    "difficulty": "difficulty",
    "scenario": "scenario",
    "noun_map": "noun_map",
    "difficulty_k": ["difficulty", "k"],
}

SUMMARY_VALUES = (
    "cases",
    "exact",
    "exact_low",
    "exact_high",
    "count_right",
    "count_low",
    "count_high",
    "mean_abs_error",
    "errors",
)


def parse_grids(text: str) -> list[tuple[int, int]]:
    """'30x52,60x104' -> [(30, 52), (60, 104)]."""
    grids = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)\s*", item)
        if not match:
            raise ValueError(f"grid {item!r} is not HxW (e.g. 30x52)")
        height, width = int(match[1]), int(match[2])
        if min(height, width) < 4:
            raise ValueError(f"grid {item!r} is smaller than 4x4")
        grids.append((height, width))
    return grids


def parse_ks(text: str) -> list[int]:
    """'0-8,10' -> [0, 1, ..., 8, 10]."""
    ks: list[int] = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", item)
        if not match:
            raise ValueError(f"k {item!r} is not a count or a range like 0-8")
        low, high = int(match[1]), int(match[2] or match[1])
        if low > high:
            raise ValueError(f"k range {item!r} runs backwards")
        ks.extend(k for k in range(low, high + 1) if k not in ks)
    return ks


def parse_names(text: str, known: dict, what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"{what} {unknown or text!r}: choose from {', '.join(known)}")
    return names


def same_labels(rows: pd.DataFrame) -> pd.DataFrame:
    """Per later extraction and difficulty: frames, and the fraction whose labels equal the first's."""
    later = rows.dropna(subset=["same_as_first"]).astype({"same_as_first": bool})
    table = later.groupby(["extraction", "difficulty"])["same_as_first"].agg(["size", "mean"]).reset_index()
    return table.rename(columns={"size": "frames", "mean": "same labels"})


def plain_markdown(table: pd.DataFrame) -> str:
    """Any table as markdown, numbers to 3 places."""
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines)


def markdown(table: pd.DataFrame) -> str:
    """A summary table as markdown: rates with their intervals in one cell."""
    keys = [c for c in table.columns if c not in SUMMARY_VALUES]
    header = [*keys, "cases", "exact [95% CI]", "right count [95% CI]", "mean abs error", "errors"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in table.itertuples(index=False):
        row = row._asdict()
        lines.append(
            "| "
            + " | ".join(
                [str(row[k]) for k in keys]
                + [
                    str(row["cases"]),
                    f"{row['exact']:.2f} [{row['exact_low']:.2f}, {row['exact_high']:.2f}]",
                    f"{row['count_right']:.2f} [{row['count_low']:.2f}, {row['count_high']:.2f}]",
                    f"{row['mean_abs_error']:.2f}",
                    str(row["errors"]),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.quick and (args.grids or args.ks or args.cases_per_cell is not None):
            raise ValueError("--quick sets --grids, --ks and --cases-per-cell itself; drop one or the other")
        settings = QUICK if args.quick else {}
        args.grids = parse_grids(args.grids or settings.get("grids", DEFAULT_GRIDS))
        args.ks = parse_ks(args.ks or settings.get("ks", DEFAULT_KS))
        if args.stress:
            args.ks += [k for k in STRESS_KS if k not in args.ks]
        if args.cases_per_cell is None:
            args.cases_per_cell = settings.get("cases_per_cell", 4)
        args.difficulties = parse_names(args.difficulties, DIFFICULTIES, "difficulty")
        args.extractions = parse_names(args.extractions, EXTRACTIONS, "extraction")
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} exists and is not a folder")
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs, notes = benchmark_suite(args.grids, args.ks, args.difficulties, args.cases_per_cell, args.seed)
    if not specs:
        print("No case fits the chosen grids and counts:\n" + "\n".join(notes), file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for note in notes:
        print(note)
    version = code_version()  # of the code that runs, before anything can change it
    keep = (
        np.unique(np.linspace(0, len(specs) - 1, args.examples).round().astype(int)) if args.examples else []
    )
    start = time.perf_counter()
    run = run_benchmark(
        specs,
        {name: EXTRACTIONS[name] for name in args.extractions},
        keep=keep,
        progress=lambda cases: tqdm(cases, desc="planted cases", unit="case"),
    )
    total = time.perf_counter() - start
    run.rows.to_csv(args.out / "rows.csv", index=False)
    sections = []
    for name, by in BREAKDOWNS.items():
        table = accuracy_table(run.rows, by)
        table.to_csv(args.out / f"summary_{name}.csv", index=False)
        title = "overall" if by is None else "by " + " x ".join([by] if isinstance(by, str) else by)
        sections.append(f"### {title}\n\n{markdown(table)}\n")
    if "same_as_first" in run.rows:
        same = same_labels(run.rows)
        same.to_csv(args.out / "same_labels.csv", index=False)
        sections.append(f"### frames with the labels of {args.extractions[0]}\n\n{plain_markdown(same)}\n")
    text = "\n".join(sections)
    (args.out / "summary.md").write_text(text)
    print(text)
    save_figure(
        planted_accuracy_figure(accuracy_table(run.rows, ["difficulty", "k"])), args.out / "accuracy_by_k"
    )
    if run.examples:
        save_figure(planted_examples_figure(run.examples), args.out / "examples")
    config = {
        "argv": sys.argv[1:] if argv is None else argv,
        "seed": args.seed,
        "grids": [f"{h}x{w}" for h, w in args.grids],
        "ks": args.ks,
        "difficulties": args.difficulties,
        "cases_per_cell": args.cases_per_cell,
        "extractions": args.extractions,
        "cases": len(specs),
        "cells_left_out": notes,
        "seconds_total": total,
        "seconds_per_extraction": run.seconds,
        "code_version": version,
    }
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{len(specs)} cases in {total:.1f} s; extraction seconds {run.seconds}; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
