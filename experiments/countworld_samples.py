"""A contact sheet of the CountWorld model's videos for counts 1-8: one row per count, with the exact
counter's per-frame counts in the row's label.

    python experiments/countworld_samples.py --out docs/countworld_samples.png
    python experiments/countworld_samples.py --methods baseline,official --seeds 2

Each row is one prompt "<n> <colour> <shape>s <motion> ..." from the world's own templates (the same
seed for every count, so only the number changes), generated with the plain pipeline (`baseline`)
and/or NUMINA (a preset name), shown at the first, middle and last frame. The sheet is a PNG; the
counts also go to a JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from numina.arguments import (
    BASELINE,
    add_methods_argument,
    add_model_arguments,
    integer,
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/countworld_samples.png"))
    add_methods_argument(parser, BASELINE)
    parser.add_argument("--seeds", type=integer(1), default=1, help="videos per count and method (columns)")
    parser.add_argument("--shape", default="circle")
    parser.add_argument("--colour", default="red")
    parser.add_argument("--background", default="grey")
    parser.add_argument("--motion", default="drifting right")
    add_model_arguments(parser)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
from matplotlib.figure import Figure

from analysis.figures import save_figure
from numina.cli import (
    check_output,
    generation_settings,
    method_options,
    pipeline_from_args,
    resolve_methods,
    resolve_model_arguments,
)
from numina.countworld.world import NUMERALS, ObjectKind, Scene, palette_from_prompt
from numina.evaluation.counters import ExactColourCounter
from numina.method.generation import generate_video
from numina.prompts import parse_prompt
from numina.run_folder import disk_full_ends_cleanly, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_arguments(parser, args)
    resolve_methods(parser, args, {})
    check_output(parser, args.out.parent)
    return args


def sample_prompts(shape: str, colour: str, background: str, motion: str) -> list[Scene]:
    """One single-kind scene per count 1-8, identical but for the count."""
    return [
        Scene((ObjectKind(shape, colour, count),), background, motion, template=0)
        for count in range(1, len(NUMERALS) + 1)
    ]


def contact_sheet(rows: list[dict], frames_shown: tuple[int, ...]) -> Figure:
    """Rows of (label, video) pairs; each video is shown at `frames_shown`."""
    columns = max(len(row["videos"]) for row in rows) * len(frames_shown)
    figure = Figure(figsize=(1.3 * columns, 1.4 * len(rows)), constrained_layout=True)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for v, (name, video, counts) in enumerate(row["videos"]):
            for k, frame in enumerate(frames_shown):
                axis = axes[r, v * len(frames_shown) + k]
                axis.imshow(np.clip(video[frame], 0, 1))
                axis.set_xticks([])
                axis.set_yticks([])
                if r == 0:
                    axis.set_title(f"{name} f{frame}", fontsize=7)
                axis.set_xlabel(f"counted {counts[frame]}", fontsize=7)
        axes[r, 0].set_ylabel(f"target {row['target']}", fontsize=8)
    return figure


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pipeline = pipeline_from_args(args, args.model)
    rows = []
    for scene in sample_prompts(args.shape, args.colour, args.background, args.motion):
        counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))
        tokens = parse_prompt(scene.caption, pipeline.tokenizer, targets=scene.targets)
        noun, target = next(iter(scene.targets.items()))
        videos = []
        for method in args.methods:
            for seed in range(args.seed, args.seed + args.seeds):
                settings = generation_settings(args, seed)
                video, _ = generate_video(pipeline, tokens, settings, method_options(method, {}))
                videos.append((f"{method} s{seed}", video, counter.count(video, noun).tolist()))
        rows.append({"prompt": scene.caption, "target": target, "videos": videos})
    last = args.frames - 1
    paths = save_figure(contact_sheet(rows, (0, last // 2, last)), args.out.with_suffix(""))
    summary = [
        {
            "prompt": row["prompt"],
            "target": row["target"],
            "counts": {name: c for name, _, c in row["videos"]},
        }
        for row in rows
    ]
    write_json(args.out.with_suffix(".json"), summary)
    print(json.dumps(summary, indent=1))
    print("wrote", ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    with disk_full_ends_cleanly("countworld_samples.py"):
        main()
