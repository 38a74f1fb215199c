"""Does step caching save NUMINA time on trained weights? Side by side on the trained CountWorld model.

    python benchmarks/numina_caching_trained.py --prompts 24 --steps 50 \
        --out benchmarks/results/numina_caching_countworld_h200.json

On random weights (the full-size benchmark, `numina_overhead.py`) the cache rule almost never
fires: a random transformer's output does not settle between steps. This runs, per CountWorld
benchmark prompt and in one process: the baseline (the pipeline with the same seed), NUMINA
`official`, and `official` with step caching in the walk-through and after modulation, once with
EasyCache's rule and once with diffusers' FirstBlockCache. It records wall time, the steps each
cache skipped, and the exact counter's accuracy of every video, so a speed-up is seen together
with what it does to the counts. Totals over prompts give the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from numina.arguments import integer


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without torch, so that --help and argument errors answer at once)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="countworld")
    parser.add_argument("--prompts", type=integer(1), default=8, help="first N CountWorld prompts")
    parser.add_argument("--steps", type=integer(1), default=50, help="50: caching from step 10")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--out", type=Path, default=None)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import numpy as np
import torch

from numina.countworld.world import benchmark_scenes, palette_from_prompt
from numina.evaluation.accuracy import count_rows, counts_table, video_scores
from numina.evaluation.counters import ExactColourCounter
from numina.method import preset
from numina.method.generation import generate_video
from numina.method.presets import NuminaOptions
from numina.models import load_pipeline, model_defaults
from numina.prompts import parse_prompt
from numina.sampling import GenerationSettings, plain_generation

CACHED = {"cache_walkthrough": True, "cache_guided": True}
# Each run's NUMINA options (None: the baseline, the plain pipeline).
RUNS: dict[str, NuminaOptions | None] = {
    "baseline": None,
    "official": preset("official"),
    "official_easycache": preset("official", **CACHED, cache_method="easycache"),
    "official_first_block": preset("official", **CACHED, cache_method="first_block"),
}


def accuracy(video: np.ndarray, prompt: str, targets: dict[str, int]) -> float:
    """CountBench's score of one video by the exact colour counter."""
    counter = ExactColourCounter(palette_from_prompt(prompt, targets))
    counts = {noun: counter.count(video, noun) for noun in targets}
    table = counts_table(count_rows(0, 0, "run", targets, counts))
    return float(video_scores(table)["accuracy"].iloc[0])


def main() -> None:
    args = build_parser().parse_args()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    defaults = model_defaults(args.model)
    pipeline = load_pipeline(args.model, torch.float32, args.device)
    pipeline.set_progress_bar_config(disable=True)
    settings = GenerationSettings(
        defaults["frames"], defaults["height"], defaults["width"], args.steps, 5.0, seed=args.seed
    )
    scenes = benchmark_scenes()[: args.prompts]
    warm_up = GenerationSettings(settings.num_frames, settings.height, settings.width, steps=2)
    plain_generation(pipeline, scenes[0].caption, warm_up)
    rows = []
    for index, scene in enumerate(scenes):
        tokens = parse_prompt(scene.caption, pipeline.tokenizer, targets=scene.targets)
        videos = {}
        for name, options in RUNS.items():
            started = time.perf_counter()
            video, result = generate_video(pipeline, tokens, settings, options)
            seconds = time.perf_counter() - started
            path, skipped = (result.path, result.cached_steps) if result else ("baseline", {})
            videos[name] = video
            rows.append(
                {
                    "prompt": index,
                    "caption": scene.caption,
                    "run": name,
                    "seconds": seconds,
                    "path": path,
                    "skipped": {run: sorted(int(s) for s in steps) for run, steps in skipped.items()},
                    "accuracy": accuracy(video, scene.caption, scene.targets),
                    "mean_abs_change_vs_official": (
                        float(np.abs(video - videos["official"]).mean()) if "official" in videos else None
                    ),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    base = sum(r["seconds"] for r in rows if r["run"] == "baseline")
    for name in RUNS:
        mine = [r for r in rows if r["run"] == name]
        summary[name] = {
            "seconds": sum(r["seconds"] for r in mine),
            "time_ratio": sum(r["seconds"] for r in mine) / base,
            "accuracy": float(np.mean([r["accuracy"] for r in mine])),
            "skipped_steps_per_video": float(
                np.mean([sum(len(s) for s in r["skipped"].values()) for r in mine])
            ),
        }
    result = {
        "model": args.model,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "prompts": args.prompts,
        "summary": summary,
        "runs": rows,
    }
    print("run | seconds | x baseline | skipped steps per video | accuracy")
    for name, values in summary.items():
        print(
            f"{name} | {values['seconds']:.1f} | {values['time_ratio']:.3f} | "
            f"{values['skipped_steps_per_video']:.1f} | {values['accuracy']:.3f}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
