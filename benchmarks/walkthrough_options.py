"""Cheaper walk-throughs (issue 22): does a shorter or unguided walk-through keep NUMINA's layout and
its counting? Every option against `official`, per prompt, in one process.

    python benchmarks/walkthrough_options.py --model countworld2 --prompts 48 \
        --out benchmarks/results/walkthrough_options_countworld2

Per prompt of the CountWorld 2 benchmark (1-3 kinds; `--frames 1` draws images), at one seed: the
baseline (the plain pipeline: what the walk-through's video draws, counted by the exact counter), then
NUMINA with the preset and with each row of `OPTION_SETS` (`--sets`). Per row and (frame, noun):

- agreement with `official`'s walk-through layout: the same count, and instances matched one to one
  (Hungarian on IoU >= 0.5; `numina.evaluation.planted.match_frame`) with their mean IoU;
- fidelity: the layout's count against the count the baseline video draws in that frame;
- accuracy: the final video's count against the target, paired with `official` per prompt (prompt
  bootstrap, `numina.evaluation.accuracy.paired_comparison`);
- cost: transformer calls (a guided step is two) and wall time, both relative to the baseline.

One JSON per prompt in `jobs/` (an interrupted run resumes; a folder made with other settings is
refused); `rows.csv` (one row per prompt, set, latent frame, noun), `summary.csv` and
`cost_accuracy.png` (calls against the paired accuracy difference).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from numina.arguments import PRESET_NAMES, integer, json_value, real

# Options over the preset, each a NuminaOptions override; `official` (none) is the reference.
OPTION_SETS: dict[str, dict] = {
    "official": {},
    "steps_25": {"walkthrough_steps": 25},
    "steps_10": {"walkthrough_steps": 10},
    "steps_5": {"walkthrough_steps": 5},
    "no_cfg": {"walkthrough_guidance": 1.0},
    "steps_10_no_cfg": {"walkthrough_steps": 10, "walkthrough_guidance": 1.0},
}
REFERENCE = "official"
# What every job's numbers depend on; a folder made with other values is refused.
FIXED_SETTINGS = (
    "model",
    "preset",
    "options",
    "sets",
    "frames",
    "steps",
    "guidance",
    "seed",
    "dtype",
    "device",
)


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", default="countworld2", help="'countworld2' or a CountWorld 2 folder")
    parser.add_argument("--prompts", type=integer(1), default=48, help="the first N benchmark prompts")
    parser.add_argument("--frames", type=integer(1), default=1, help="1 (images) or 4k+1")
    parser.add_argument("--steps", type=integer(1), default=50)
    parser.add_argument("--guidance", type=real(0), default=5.0)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument(
        "--preset", choices=PRESET_NAMES, default="official", help="the options every set starts from"
    )
    parser.add_argument(
        "--options", type=json_value, default={}, help="NUMINA options for every set, e.g. '{\"stride\": 1}'"
    )
    parser.add_argument(
        "--sets",
        default=",".join(OPTION_SETS),
        help=f"comma-separated rows of OPTION_SETS ({REFERENCE} is always run): {', '.join(OPTION_SETS)}",
    )
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default=None, help="cuda when available, else cpu")
    parser.add_argument("--out", type=Path, required=True, help="folder for jobs/, the tables and the figure")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = sorted(set(names) - set(OPTION_SETS))
    if unknown:
        parser.error(f"--sets: {unknown} are not rows of OPTION_SETS: {list(OPTION_SETS)}")
    args.sets = [REFERENCE] + [name for name in dict.fromkeys(names) if name != REFERENCE]
    if args.frames % 4 != 1:
        parser.error(f"--frames must be 1 or 4k+1 (Wan's VAE), got {args.frames}")
    if not isinstance(args.options, dict):
        parser.error(f"--options must be a JSON object, got {args.options!r}")
    return args


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    parse_args()


import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from numina.countworld import world2
from numina.countworld.world import palette_from_prompt
from numina.evaluation.accuracy import count_rows, counts_table, fidelity_summary, paired_comparison
from numina.evaluation.counters import ExactColourCounter
from numina.evaluation.planted import match_frame, wilson_interval
from numina.method.generation import generate_video
from numina.method.presets import NuminaOptions, preset
from numina.method.schedule import options_schedule, transformer_calls
from numina.models import Geometry, load_pipeline, model_defaults
from numina.prompts import parse_prompt
from numina.run_folder import check_resumable, write_config, write_json
from numina.sampling import GenerationSettings
from numina.version import code_version


def layout_agreement(reference, other, noun: str) -> list[dict]:
    """Per latent frame: both layouts' counts and their instances matched at IoU >= 0.5."""
    rows = []
    for frame, (mine, theirs) in enumerate(zip(other[noun], reference[noun], strict=True)):
        match = match_frame(theirs, mine)
        rows.append(
            {
                "frame": frame,
                "noun": noun,
                "count": match.count,
                "official_count": match.target,
                "matched": match.matched,
                "mean_iou": float(match.ious.mean()) if len(match.ious) else None,
            }
        )
    return rows


def set_options(args: argparse.Namespace, name: str) -> NuminaOptions:
    """The NUMINA options of a row of OPTION_SETS: the preset, --options, then the row's own."""
    return preset(args.preset, **args.options, **OPTION_SETS[name])


def run_prompt(pipeline, scene, index: int, args: argparse.Namespace) -> dict:
    """Every set's run of one prompt, with the baseline's drawn counts."""
    settings = GenerationSettings(
        args.frames, args.size, args.size, args.steps, args.guidance, seed=args.seed + index
    )
    tokens = parse_prompt(scene.caption, pipeline.tokenizer, targets=scene.targets)
    counter = ExactColourCounter(palette_from_prompt(scene.caption, scene.targets))

    def counted(video: np.ndarray) -> dict[str, list[int]]:
        return {noun: counter.count(video, noun).tolist() for noun in scene.targets}

    started = time.perf_counter()
    video, _ = generate_video(pipeline, tokens, settings, None)
    job = {
        "prompt_id": index,
        "caption": scene.caption,
        "targets": scene.targets,
        "seed": settings.seed,
        "baseline": {
            "seconds": time.perf_counter() - started,
            "calls": transformer_calls(settings),
            "counts": counted(video),
        },
        "sets": {},
    }
    for name in args.sets:  # official first: the others' layouts are compared with its
        options = set_options(args, name)
        started = time.perf_counter()
        video, result = generate_video(pipeline, tokens, settings, options)
        seconds = time.perf_counter() - started
        if name == REFERENCE:
            reference = result.layout
        job["sets"][name] = {
            "seconds": seconds,
            "calls": result.transformer_calls(settings, options),
            "path": result.path,
            "layout_counts": result.counts("walkthrough"),
            "agreement": [
                row for noun in scene.targets for row in layout_agreement(reference, result.layout, noun)
            ],
            "counts": counted(video),
        }
    return job


def job_rows(job: dict, geometry: Geometry) -> list[dict]:
    """One row per (set, latent frame, noun): agreement with official and fidelity to the drawn count
    (the drawn count of the latent frame's first decoded frame, where its maps sit)."""
    rows = []
    for name, run in job["sets"].items():
        for row in run["agreement"]:
            drawn = job["baseline"]["counts"][row["noun"]][geometry.video_frames(row["frame"])[0]]
            rows.append({"prompt_id": job["prompt_id"], "set": name, **row, "drawn": drawn})
    return rows


def counts_of(jobs: list[dict], sets: list[str]) -> pd.DataFrame:
    """The counts table of every final video (baseline and sets) for accuracy and paired comparison."""
    records = []
    for job in jobs:
        runs = {"baseline": job["baseline"]} | {name: job["sets"][name] for name in sets}
        for method, run in runs.items():
            records += count_rows(job["prompt_id"], job["seed"], method, job["targets"], run["counts"])
    return counts_table(records)


def summarise(jobs: list[dict], rows: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    counts = counts_of(jobs, sets)
    base_seconds = sum(job["baseline"]["seconds"] for job in jobs)
    base_calls = sum(job["baseline"]["calls"] for job in jobs)
    table = []
    for name in sets:
        mine = rows[rows["set"] == name]
        same = int((mine["count"] == mine["official_count"]).sum())
        low, high = wilson_interval(same, len(mine))
        fidelity = fidelity_summary(mine)
        paired = paired_comparison(counts, REFERENCE, name) if name != REFERENCE else None
        accuracy = paired_comparison(counts, "baseline", name)
        table.append(
            {
                "set": name,
                "options": json.dumps(OPTION_SETS[name]),
                "calls_ratio": sum(job["sets"][name]["calls"] for job in jobs) / base_calls,
                "time_ratio": sum(job["sets"][name]["seconds"] for job in jobs) / base_seconds,
                "count_agreement": same / len(mine),
                "count_agreement_low": low,
                "count_agreement_high": high,
                "instances_matched": mine["matched"].sum() / max(1, mine["official_count"].sum()),
                "mean_iou": mine["mean_iou"].mean(),
                "fidelity": fidelity["fidelity"],
                "fidelity_low": fidelity["ci_low"],
                "fidelity_high": fidelity["ci_high"],
                "accuracy": accuracy.other_accuracy,
                "baseline_accuracy": accuracy.baseline_accuracy,
                "vs_baseline": accuracy.difference,
                "vs_baseline_low": accuracy.ci_low,
                "vs_baseline_high": accuracy.ci_high,
                "vs_official": paired.difference if paired else 0.0,
                "vs_official_low": paired.ci_low if paired else 0.0,
                "vs_official_high": paired.ci_high if paired else 0.0,
                "guided": float(np.mean([job["sets"][name]["path"] == "guided" for job in jobs])),
                "prompts": len(jobs),
            }
        )
    return pd.DataFrame(table)


def cost_accuracy_figure(summary: pd.DataFrame) -> Figure:
    """Transformer calls against the accuracy difference to official, with intervals."""
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    error = [
        summary["vs_official"] - summary["vs_official_low"],
        summary["vs_official_high"] - summary["vs_official"],
    ]
    axes.errorbar(summary["calls_ratio"], summary["vs_official"], yerr=error, fmt="o", capsize=3)
    for _, row in summary.iterrows():
        axes.annotate(
            row["set"],
            (row["calls_ratio"], row["vs_official"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes.axhline(0, color="grey", lw=0.8)
    axes.set_xlabel("transformer calls, x baseline")
    axes.set_ylabel("accuracy - official's (paired, 95% CI)")
    return figure


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    defaults = model_defaults(args.model)
    args.size = defaults["height"]
    config = {
        "model": args.model,
        "preset": args.preset,
        "options": args.options,
        "sets": {name: OPTION_SETS[name] for name in args.sets},
        "frames": args.frames,
        "steps": args.steps,
        "guidance": args.guidance,
        "seed": args.seed,
        "dtype": args.dtype,
        "device": args.device,
        "prompts": args.prompts,
        "command": " ".join(sys.argv),
        "code_version": code_version(),
    }
    try:  # bad options are refused before the model loads
        settings = GenerationSettings(args.frames, args.size, args.size, args.steps, args.guidance)
        for name in args.sets:
            options_schedule(settings, set_options(args, name))
    except (KeyError, TypeError, ValueError) as error:
        raise SystemExit(f"walkthrough_options.py: error: {error}") from None
    check_resumable(args.out, config, FIXED_SETTINGS, "walkthrough_options.py")
    jobs_dir = args.out / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    write_config(args.out, config)
    pipeline = load_pipeline(args.model, getattr(torch, args.dtype), args.device)
    pipeline.set_progress_bar_config(disable=True)
    geometry = Geometry.from_pipeline(pipeline, args.frames, args.size, args.size)
    scenes = world2.benchmark_scenes(args.prompts)
    jobs = []
    for index, scene in enumerate(tqdm(scenes, desc="prompts", unit="prompt")):
        path = jobs_dir / f"p{index:03d}.json"
        if not path.exists():
            write_json(path, run_prompt(pipeline, scene, index, args))
        jobs.append(json.loads(path.read_text()))
    rows = pd.DataFrame([row for job in jobs for row in job_rows(job, geometry)])
    rows.to_csv(args.out / "rows.csv", index=False)
    summary = summarise(jobs, rows, args.sets)
    summary.to_csv(args.out / "summary.csv", index=False)
    cost_accuracy_figure(summary).savefig(args.out / "cost_accuracy.png", dpi=150)
    columns = [
        "set",
        "calls_ratio",
        "time_ratio",
        "count_agreement",
        "mean_iou",
        "fidelity",
        "accuracy",
        "vs_official",
        "vs_official_low",
        "vs_official_high",
    ]
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return summary


if __name__ == "__main__":
    main()
