"""How well a CountWorld 2 folder counts, at several guidance scales: accuracy by count, the drawn count's
slope and correlation against the target, and a contact sheet of what it drew.

    python experiments/countworld2_counting.py --model countworld2 --guidance 1,2.5,5 --out runs/cw2_count

Single-kind one-frame images by default (the image phase's benchmark: scene i counts i % 8 + 1);
`--frames 17` draws CountWorld 2's benchmark clips of 1-3 kinds instead. The sampler is the folder's
(UniPC, shift 5, as G2 uses) unless `--flow-shift` says otherwise. Writes `counting.csv` (one row per
guidance scale), `counts.csv` (every (video, frame, noun) count) and `contact_g<scale>.png`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from numina.arguments import (
    integer,
    real,
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", default="countworld2", help="'countworld2' or a pipeline folder")
    add("--guidance", default="5", help="comma-separated CFG scales")
    add("--prompts", type=integer(8), default=128, help="images or clips per guidance scale")
    add("--frames", type=integer(1), default=1, help="1 (single-kind images) or 4k+1 (clips of 1-3 kinds)")
    add("--steps", type=integer(1), default=50, help="sampling steps")
    add("--flow-shift", type=real(0, low_open=True), default=None, help="default: the folder's")
    add("--seed", type=integer(0), default=0)
    add("--device", default=None, help="cuda when available, else cpu")
    add("--out", type=Path, required=True, help="folder for the tables and contact sheets")
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import pandas as pd
import torch
from PIL import Image

from numina.cli import check_output
from numina.countworld import world2
from numina.countworld.joint_training import counting_rows, counting_summary, single_kind_scenes
from numina.models import load_pipeline
from numina.models.countworld2 import VIDEO
from numina.run_folder import disk_full_ends_cleanly


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.guidance = [float(value) for value in args.guidance.split(",")]
    except ValueError:
        parser.error(f"--guidance must be comma-separated numbers, got {args.guidance!r}")
    if not all(np.isfinite(args.guidance)) or min(args.guidance) < 1:
        parser.error("every --guidance scale must be a finite number >= 1")
    if args.frames % 4 != 1:
        parser.error("--frames must be 4k+1 (1: images)")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_output(parser, args.out)
    return args


def contact_sheet(videos: np.ndarray) -> Image.Image:
    """The first frame of up to 16 videos (two of each count in the image benchmark), in rows of 8."""
    tiles = (np.clip(videos[:16, 0], 0, 1) * 255).astype(np.uint8)
    rows = [np.concatenate(list(tiles[start : start + 8]), axis=1) for start in range(0, len(tiles), 8)]
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    return Image.fromarray(np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    pipeline = load_pipeline(args.model, torch.float32, args.device, flow_shift=args.flow_shift)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device.startswith("cuda"))
    if args.frames == 1:
        scenes = single_kind_scenes(args.prompts, seed=args.seed)
    else:
        scenes = world2.benchmark_scenes(args.prompts, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    summaries, counts = [], []
    shown: dict[str, np.ndarray] = {}  # the first chunk's videos, for the contact sheet

    def keep_first_chunk(start: int, videos: np.ndarray) -> None:
        if start == 0:
            shown["videos"] = videos

    for guidance in args.guidance:
        rows = counting_rows(
            pipeline, scenes, args.frames, VIDEO["height"], args.steps, guidance, args.seed, autocast,
            on_videos=keep_first_chunk,
        )  # fmt: skip
        counts.append(rows.assign(guidance=guidance))
        summaries.append({"guidance": guidance, **counting_summary(rows)})
        print(pd.DataFrame(summaries[-1:]).round(3).to_string(index=False), flush=True)
        contact_sheet(shown["videos"]).save(args.out / f"contact_g{guidance:g}.png")
    table = pd.DataFrame(summaries)
    table.to_csv(args.out / "counting.csv", index=False)
    pd.concat(counts).to_csv(args.out / "counts.csv", index=False)
    print(table.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    with disk_full_ends_cleanly("countworld2_counting.py"):
        main()
