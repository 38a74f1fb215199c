"""CountBench: baseline vs NUMINA counting accuracy, with N seeds per prompt, resumable and shardable.

    python experiments/countbench.py --limit 3 --seeds 2                         # CountWorld (built in), CPU
    python experiments/countbench.py --model Wan-AI/Wan2.1-T2V-1.3B-Diffusers --methods baseline,official
    python experiments/countbench.py ... --shard 0/2   and   ... --shard 1/2   then   ... --merge
    torchrun --nproc_per_node 2 experiments/countbench.py ...      (one shard per rank; rank 0 merges)

Every (prompt, seed, method) is one video: generated (`baseline` = the plain pipeline; a preset name =
NUMINA with it; `oracle` and `random_head` = the controls of `numina.evaluation.controls`, on
`official` with --options: NUMINA from the true instances of the baseline's video, which needs the
exact counter, and NUMINA with a head drawn at random), counted frame by frame with the chosen
counter, optionally CLIP-scored, and its result written atomically to `videos/<job>.json`; a job whose
file exists is done and skipped, so an interrupted run resumes where it stopped. `--shard i/n` takes
every n-th job from the i-th (the job list is fixed by the prompts, seeds and methods, so shards never
overlap); under torchrun each rank takes its shard and rank 0 builds the tables after a barrier (gloo,
so CPUs work too). The tables are built from whatever job files exist: `results.csv` (one row per
prompt, seed, method, frame, noun), `videos.csv`, `summary.csv` (accuracy per method with 95%
prompt-bootstrap intervals; by target count; by number of categories), `paired.csv` (each NUMINA
method against the baseline on the same prompts and seeds), `changes.csv` (where each method moved the
counts against the baseline's), `figures/accuracy_by_target.{png,pdf}`,
`figures/paired_differences.{png,pdf}` (each method minus the baseline, with its interval) and
a W&B run (none when the tables are those the last run logged). While jobs run, NUMINA's phase-1
stores live in `scratch/<host>-<pid>/`; a killed process's is removed when the folder is resumed on
its host.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from numina.arguments import (
    BASELINE,
    add_counter_arguments,
    add_methods_argument,
    add_model_arguments,
    add_prompt_arguments,
    integer,
    json_value,
)


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes i/n, e.g. 0/2; got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: need 0 <= i < n")
    return index, count


def build_parser() -> argparse.ArgumentParser:
    """The options (declared without the model code, so that --help answers at once)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    add_prompt_arguments(parser)
    parser.add_argument(
        "--seeds", type=integer(1), default=5, help="videos per prompt and method (5, as the paper)"
    )
    add_methods_argument(parser, f"{BASELINE},official", controls=True)
    add_counter_arguments(parser)
    parser.add_argument(
        "--options",
        type=json_value,
        default={},
        help="NUMINA options for every preset, e.g. '{\"early_accept\": true}'",
    )
    parser.add_argument(
        "--samples", type=integer(0), default=2, help="prompts whose first-seed videos are kept and logged"
    )
    parser.add_argument(
        "--clip", default=None, help="CLIP model id or folder for CLIP score (off by default)"
    )
    parser.add_argument("--shard", type=_shard, default=None, help="i/n: this process's share of the jobs")
    parser.add_argument("--merge", action="store_true", help="only build the tables from the finished jobs")
    parser.add_argument("--save-videos", action="store_true", help="keep every video (videos/<job>.mp4)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (runs/countbench-<model>)")
    add_model_arguments(parser)
    return parser


if __name__ == "__main__":  # --help and argument errors answer before the imports below
    build_parser().parse_args()


import matplotlib as mpl
import numpy as np
import pandas as pd
import torch
import torch.distributed
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from analysis.figures import STYLE, save_figure
from numina.capture.spec import self_attention_defaults
from numina.cli import (
    check_output,
    generation_settings,
    load_prompt_set,
    method_options,
    pipeline_from_args,
    resolve_counter_arguments,
    resolve_methods,
    resolve_model_arguments,
)
from numina.evaluation import (
    ClipScorer,
    accuracy_by_categories,
    accuracy_by_target,
    accuracy_summary,
    count_changes,
    count_rows,
    counts_table,
    paired_comparison,
    prompt_counter,
)
from numina.evaluation.controls import CONTROLS, control_video
from numina.method.generation import generate_video
from numina.models import geometry_of, load_tokenizer, resolve_model
from numina.prompts import parse_prompt
from numina.run_folder import (
    check_resumable,
    device_type,
    disk_full_ends_cleanly,
    save_video,
    slug,
    write_config,
    write_json,
)
from numina.version import code_version
from numina.wandb_mirror import Tracker, logged_already, record_logged

log = logging.getLogger("countbench")
FIXED_SETTINGS = (
    "model",
    "prompt_set",
    "settings",
    "guidance",
    "flow_shift",
    "negative_prompt",
    "options",
    "method_options",
    "counter",
    "counter_model",
    "palette",
    "clip",
    "dtype",
    "device",
    "attention_backend",
    "self_attention_defaults",
)
# One entry per method: a resume may add a method, and must keep the options of those it had.
PER_METHOD = ("method_options",)
# Where the numbers are computed: a resumed run must keep them; --merge computes nothing.
RUN_SETTINGS = ("dtype", "device", "attention_backend")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_model_arguments(parser, args)
    resolve_methods(parser, args, args.options, controls=True)
    resolve_counter_arguments(args)
    if "oracle" in args.methods and args.counter != "exact":
        parser.error(
            f"--methods oracle builds its layout from the true instances, which only the exact colour "
            f"counter gives: use --counter exact (on a built-in model), not {args.counter}"
        )
    args.torchrun = args.shard is None and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.torchrun:  # one shard per rank; rank 0 merges once every rank is done
        args.shard = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        if args.device.startswith("cuda"):  # more ranks than GPUs: ranks share them in turn
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % max(torch.cuda.device_count(), 1)}"
    args.out = args.out or Path("runs") / f"countbench-{slug(args.model)}"
    check_output(parser, args.out)
    return args


def job_name(prompt_id: int, seed: int, method: str) -> str:
    return f"p{prompt_id:03d}-s{seed}-{method}"


def run_job(pipeline, item, seed: int, method: str, args, scorer, counter_for, folder: Path) -> dict:
    """Generate, count and score one video (NUMINA's phase 1 in memory); the JSON-able result."""
    tokens = parse_prompt(item.prompt, pipeline.tokenizer, targets=item.targets)
    settings = generation_settings(args, seed)
    result = {
        "prompt_id": item.index,
        "seed": seed,
        "method": method,
        "prompt": item.prompt,
        "targets": item.targets,
    }
    counter = counter_for(item.prompt, item.targets)
    options = method_options(method, args.options)
    if method in CONTROLS:
        video, numina = control_video(method, pipeline, tokens, settings, options, counter)
    else:
        video, numina = generate_video(pipeline, tokens, settings, options)
    if numina is not None:  # the layout's counts per latent frame, as found and as corrected
        result.update(numina_path=numina.path, edits=len(numina.edits))
        for name, layout in (("layout_counts", numina.layout), ("corrected_counts", numina.corrected)):
            result[name] = {noun: layout.counts(noun).tolist() for noun in item.targets}
    result["counts"] = {noun: counter.count(video, noun).tolist() for noun in item.targets}
    if scorer is not None:
        result["clip_score"] = scorer.score(video, item.prompt)
    if args.save_videos or (item.index in args.sample_prompts and seed == args.seed):
        save_video(video, folder / f"{job_name(item.index, seed, method)}.mp4", settings.fps)
    return result


def tables(results: list[dict]) -> dict[str, pd.DataFrame]:
    """results.csv rows, per-video scores, summaries, paired comparisons and where each method moved
    the counts (changes.csv) from the job results."""
    rows = [
        row
        for r in results
        for row in count_rows(r["prompt_id"], r["seed"], r["method"], r["targets"], r["counts"])
    ]
    counts = counts_table(rows)
    videos = pd.DataFrame(
        [
            {key: r.get(key) for key in ("prompt_id", "seed", "method", "clip_score", "numina_path")}
            for r in results
        ]
    )
    summary = pd.concat(
        [
            accuracy_summary(counts).assign(breakdown="overall"),
            accuracy_by_target(counts).assign(breakdown="target"),
            accuracy_by_categories(counts).assign(breakdown="n_categories"),
        ],
        ignore_index=True,
    )
    paired, changes = pd.DataFrame(), pd.DataFrame()  # both need the baseline's videos
    if BASELINE in set(counts["method"]):
        methods = sorted(set(counts["method"]) - {BASELINE})
        paired = pd.DataFrame([paired_comparison(counts, BASELINE, m).to_dict() for m in methods])
        changes = count_changes(counts, BASELINE)
    return {"results": counts, "videos": videos, "summary": summary, "paired": paired, "changes": changes}


def accuracy_figure(summary: pd.DataFrame) -> Figure:
    """Accuracy by target count, one line per method, with the prompt-bootstrap interval."""
    part = summary[summary["breakdown"] == "target"]
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(4.5, 3.0), layout="constrained")
        axis = figure.subplots()
        for method, rows in part.groupby("method"):
            rows = rows.sort_values("target")
            axis.plot(rows["target"], rows["accuracy"], marker="o", label=method)
            axis.fill_between(rows["target"], rows["ci_low"], rows["ci_high"], alpha=0.2, lw=0)
        axis.set_xlabel("target count")
        axis.set_ylabel("counting accuracy")
        axis.set_ylim(0, 1)
        axis.legend(frameon=False)
        axis.set_title("CountBench accuracy by target count (95% CI over prompts)")
    return figure


def paired_figure(paired: pd.DataFrame) -> Figure:
    """Each method's accuracy minus the baseline's on the same prompts, with its paired interval."""
    rows = paired.sort_values("difference")
    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(4.5, 0.6 + 0.35 * len(rows)), layout="constrained")
        axis = figure.subplots()
        positions = np.arange(len(rows))
        errors = [rows["difference"] - rows["ci_low"], rows["ci_high"] - rows["difference"]]
        axis.errorbar(rows["difference"], positions, xerr=errors, fmt="o", capsize=3)
        axis.axvline(0, color="grey", lw=0.8)
        axis.set_yticks(positions, rows["other"])
        axis.set_xlabel("accuracy minus the baseline's (paired over prompts)")
        confidence, prompts = rows["confidence"].iloc[0], rows["n_prompts"].max()
        axis.set_title(f"Against the baseline, {confidence:.0%} CI over {prompts} prompts")
    return figure


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prompts = load_prompt_set(args)
        model = resolve_model(args.model)
        geometry_of(model, args.frames, args.height, args.width)
        tokenizer = load_tokenizer(model)
        for item in prompts:
            parse_prompt(item.prompt, tokenizer, targets=item.targets)
    except (ValueError, OSError) as error:
        raise SystemExit(f"countbench.py: error: {error}") from None
    args.sample_prompts = {item.index for item in prompts[: args.samples]}
    out = args.out
    config = _config(args, model, argv)
    fixed = [key for key in FIXED_SETTINGS if not (args.merge and key in RUN_SETTINGS)]
    check_resumable(out, config, fixed, "countbench.py", per_entry=PER_METHOD)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs = [
        (item, args.seed + k, method)
        for item in prompts
        for k in range(args.seeds)
        for method in args.methods
    ]
    mine = jobs if args.shard is None else jobs[args.shard[0] :: args.shard[1]]
    todo = [
        job
        for job in mine
        if not (out / "videos" / f"{job_name(job[0].index, job[1], job[2])}.json").exists()
    ]
    if not args.merge:
        write_config(out, config, per_entry=PER_METHOD)
        log.info(
            "%s: %d jobs here, %d done before, %d to run", out, len(mine), len(mine) - len(todo), len(todo)
        )
    if todo and not args.merge:
        pipeline = pipeline_from_args(args, model)
        scorer = ClipScorer(args.clip, device=args.device) if args.clip else None
        counter_for = prompt_counter(args.counter, args.counter_model, args.device, args.palette)
        for item, seed, method in tqdm(todo, desc="videos", unit="video"):
            result = run_job(pipeline, item, seed, method, args, scorer, counter_for, out / "videos")
            write_json(out / "videos" / f"{job_name(item.index, seed, method)}.json", result)
    if args.torchrun:
        torch.distributed.init_process_group("gloo")  # CPU collectives: only a barrier is needed
        torch.distributed.barrier()
        rank = torch.distributed.get_rank()
        torch.distributed.destroy_process_group()
        if rank != 0:
            return out
    elif args.shard is not None and not args.merge:
        return out  # another process (or --merge) builds the tables once every shard is done
    wanted = {job_name(item.index, seed, method) for item, seed, method in jobs}
    results = [json.loads(p.read_text()) for p in sorted((out / "videos").glob("*.json")) if p.stem in wanted]
    missing = len(wanted) - len(results)
    if missing:
        log.warning(
            "%d of %d jobs have no result yet; the tables cover the finished ones", missing, len(wanted)
        )
    built = tables(results)
    for name, table in built.items():
        table.to_csv(out / f"{name}.csv", index=False)
    figure = accuracy_figure(built["summary"])
    save_figure(figure, out / "figures" / "accuracy_by_target")
    differences = None if built["paired"].empty else paired_figure(built["paired"])
    if differences is not None:
        save_figure(differences, out / "figures" / "paired_differences")
    overall = built["summary"][built["summary"]["breakdown"] == "overall"]
    samples = [video for video in sorted((out / "videos").glob("*.mp4")) if video.stem in wanted]
    logged = "".join(built[name].to_csv() for name in ("summary", "paired", "changes", "videos"))
    logged += "\n".join(video.name for video in samples)
    if logged_already(out, logged, args.wandb):
        log.info("the tables are those the last W&B run logged: no new W&B run")
    else:
        with Tracker(out, name=out.name, config=config, mode=args.wandb, job_type="countbench") as tracker:
            for name in ("summary", "paired", "changes", "videos"):
                tracker.log_table(name, built[name])
            tracker.log_image("figures/accuracy_by_target", figure)
            if differences is not None:
                tracker.log_image("figures/paired_differences", differences)
            for video in samples:
                tracker.log_video(f"samples/{video.stem}", video, fps=16)
            tracker.log_scalars(
                {f"accuracy/{m}": a for m, a in zip(overall["method"], overall["accuracy"], strict=True)}
            )
        record_logged(out, logged, args.wandb)
    log.info("accuracy: %s", dict(zip(overall["method"], np.round(overall["accuracy"], 4), strict=True)))
    return out


def _config(args: argparse.Namespace, model: str, argv: list[str] | None) -> dict:
    return {
        "model": args.model,
        "model_source": model,
        "prompt_set": args.prompt_set,
        "methods": args.methods,
        "options": args.options,
        # every option of each method as this code defines its preset (a preset's defaults can change)
        "method_options": {
            method: None if options is None else options.to_dict()
            for method in args.methods
            for options in [method_options(method, args.options)]
        },
        "seeds": args.seeds,
        "first_seed": args.seed,
        "counter": args.counter,
        "counter_model": args.counter_model,
        "palette": args.palette,
        "clip": args.clip,
        "settings": {"frames": args.frames, "height": args.height, "width": args.width, "steps": args.steps},
        "guidance": args.guidance,
        "flow_shift": args.flow_shift,
        "negative_prompt": args.negative_prompt,
        "dtype": args.dtype,
        "device": device_type(args.device),
        "attention_backend": args.attention_backend,
        # what the walk-throughs' capture computes with on this device
        "self_attention_defaults": self_attention_defaults(args.device),
        "code_version": code_version(),
        "command": ["experiments/countbench.py", *(sys.argv[1:] if argv is None else argv)],
    }


if __name__ == "__main__":
    with disk_full_ends_cleanly("countbench.py"):
        main()
